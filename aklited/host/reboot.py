"""Whether the device rebooted since a deployment: a marker file on a tmpfs.

The marker is written right after a deployment; ``/run`` is emptied at every boot, so its
absence means the device rebooted since. Both calls touch the filesystem: off the loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aklited.errors import HostFileError


def _mark(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as e:
        raise HostFileError(f"{path}: cannot mark the reboot as needed: {e.strerror or e}") from e


class RebootMarker:
    """The engine's reboot port over ``<reboot_sentinel_dir>/need_reboot``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def mark_needed(self) -> None:
        await asyncio.to_thread(_mark, self.path)

    async def needed(self) -> bool:
        # exists() answers False for any error: a marker that cannot be read is no marker.
        return await asyncio.to_thread(self.path.exists)
