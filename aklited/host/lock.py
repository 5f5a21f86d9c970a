"""The update lock shared with aktualizr-lite's tools: ``flock`` on ``/var/lock/aklite.lock``.

aktualizr-lite's daemon and ``aklite-offline`` take the same exclusive, non-blocking lock,
so only one of them changes the device at a time. The lock dies with the process holding
it, so a crash never leaves it wedged.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aklited.errors import LockHeldError

DEFAULT_LOCK_PATH = Path("/var/lock/aklite.lock")


def _take(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise LockHeldError(f"{path}: cannot open the update lock: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise LockHeldError(
                f"{path}: another aklite tool holds the update lock "
                "(is aktualizr-lite running? stop it first)"
            ) from e
        raise LockHeldError(f"{path}: cannot take the update lock: {e.strerror}") from e
    return fd


def _give_back(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class UpdateLock:
    """The engine's lock port: ``async with lock.hold():`` raises LockHeldError when taken."""

    def __init__(self, path: Path = DEFAULT_LOCK_PATH) -> None:
        self.path = path

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        # mkdir, open and flock touch the filesystem: off the loop. LOCK_NB never waits.
        taking = asyncio.ensure_future(asyncio.to_thread(_take, self.path))
        try:
            fd = await asyncio.shield(taking)
        except asyncio.CancelledError:
            # The thread goes on and may take the lock: give it back, or nobody (not even
            # aktualizr-lite) could take it until this process ends.
            taken = await asyncio.gather(taking, return_exceptions=True)
            if isinstance(taken[0], int):
                await asyncio.to_thread(_give_back, taken[0])
            raise
        try:
            yield
        finally:
            await asyncio.to_thread(_give_back, fd)
