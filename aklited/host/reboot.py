"""Whether the device rebooted since a deployment: a marker file on a tmpfs.

The marker is written right after a deployment; ``/run`` is emptied at every boot, so its
absence means the device rebooted since. Both calls touch the filesystem: off the loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from dbus_fast.aio import MessageBus

from aklited.errors import HostFileError
from aklited.host.logind import inhibit_shutdown

log = structlog.get_logger(__name__)


def _mark(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as e:
        raise HostFileError(f"{path}: cannot mark the reboot as needed: {e.strerror or e}") from e


class RebootMarker:
    """The engine's reboot port: ``<reboot_sentinel_dir>/need_reboot``, and logind's shutdown
    inhibitor when a bus to logind is given."""

    def __init__(self, path: Path, *, logind: MessageBus | None = None) -> None:
        self.path = path
        self._logind = logind

    @asynccontextmanager
    async def inhibit(self, why: str) -> AsyncIterator[None]:
        fd: int | None = None
        if self._logind is not None:
            try:
                fd = await inhibit_shutdown(self._logind, why)
            except Exception as e:  # no logind: the update goes on, unprotected, and says so
                log.warning("cannot hold shutdowns off", reason=why, error=str(e))
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the inhibitor

    async def mark_needed(self) -> None:
        await asyncio.to_thread(_mark, self.path)

    async def needed(self) -> bool:
        # exists() answers False for any error: a marker that cannot be read is no marker.
        return await asyncio.to_thread(self.path.exists)
