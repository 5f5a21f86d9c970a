"""Writing back what a copy has written while it copies on.

ostree writes the objects of a pull into the page cache and syncs the file system once, at
the end of its transaction. On a device with memory to spare, the kernel starts writing
them out only then (or after ``dirty_expire_centisecs``): the whole update is written after
the last byte was read off the drive, while the drive sits idle. A thread that asks the
kernel every so often to write back what is dirty on the file system overlaps the two: the
same bytes are written, only earlier, and the copy's own sync finds little left.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# How often the thread asks: what a copy writes meanwhile is what its own sync has left,
# and each ask is one journal commit of the file system.
WRITEBACK_EVERY_S = 0.25

Sync = Callable[[int], None]


@functools.cache
def _libc_syncfs() -> Sync | None:
    """syncfs(2) from the C library (the os module has no binding), or None without one."""
    import ctypes  # noqa: PLC0415 - only once a copy runs: the idle daemon goes without

    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs  # the C library aklited runs on
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int

    def sync(fd: int) -> None:
        if syncfs(fd) != 0:  # ctypes lets go of the GIL for the call
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return sync


def _write_back(directory: Path, sync: Sync, every_s: float, stop: threading.Event) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        log.warning("cannot write back beside the copy", directory=str(directory), error=str(e))
        return
    try:
        while not stop.wait(every_s):
            sync(fd)
    except OSError as e:  # the copy's own sync still writes everything at its end
        log.warning("writing back beside the copy stopped", error=str(e))
    finally:
        os.close(fd)


@asynccontextmanager
async def writing_back(
    directory: Path, *, every_s: float = WRITEBACK_EVERY_S, sync: Sync | None = None
) -> AsyncIterator[None]:
    """Within it, a thread writes back what is dirty on ``directory``'s file system every
    ``every_s`` seconds (``sync``: syncfs(2) by default). Nothing it cannot do stops the
    work inside: without it that work only ends with more to write."""
    sync = sync or await asyncio.to_thread(_libc_syncfs)
    if sync is None:
        log.info("no syncfs here: a copy is written back when it syncs")
        yield
        return
    stop = threading.Event()
    # The thread opens and closes its descriptor itself: nothing of it is left to a
    # cancellation here.
    thread = threading.Thread(
        target=_write_back,
        args=(directory, sync, every_s, stop),
        name="aklited-writeback",
        daemon=True,
    )
    try:
        thread.start()
    except RuntimeError as e:  # no thread to be had
        log.warning("cannot write back beside the copy", error=str(e))
        yield
        return
    try:
        yield
    finally:
        stop.set()
        # A cancellation here leaves the thread to end by itself, at once or after the
        # sync under way.
        await asyncio.to_thread(thread.join)
