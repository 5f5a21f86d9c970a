"""Reading a bundle off its drive ahead of the install, while the drive would sit idle.

From the moment a bundle is found until the install copies from it, the daemon checks the
TUF metadata, stops aktualizr-lite and sizes the update: a quarter of a second and more in
which a USB drive reads nothing, though it could have delivered 40 MB at USB 3 speed. The
read-ahead reads the bundle's bulk into the page cache meanwhile, in the order the install
reads it (the app blobs, then the OSTree objects), so the install's copy finds that part
there. It only warms the cache: nothing it reads is interpreted, trusted or kept, and the
install still reads and verifies everything it uses. It gives way to the install: the
caller stops it once the install copies, its thread runs at the lowest CPU priority, it has
one small read in flight at a time (the kernel's own read-ahead is off for its files), and
it ends by itself on a drive that reads faster than an install could use.

The drive is hostile, so the read-ahead is bounded and harmless: it lists only the few
directories it knows (through :class:`~aklited.drivefs.BundleFiles`, no link followed,
no listing over its limit), reads only regular files, and stops at a budget of a quarter of
the memory available when it starts (each file counted at least one page): more would
evict what it read before the install gets to it. Any refusal or read error ends it
quietly; the install meets the same entry and says what is wrong with it. Asked to stop,
it stops before its next read of at most :data:`CHUNK` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from aklited.drivefs import BundleDirectory, BundleFiles, DriveEntryError

log = structlog.get_logger(__name__)

# One read in flight at a time, and a small one (the kernel reads no further ahead on these
# files): the install's own reads of the drive queue behind it.
CHUNK = 256 << 10
PAGE = 4096
# The directories whose files are the bundle's bulk, in the order an install reads them:
# the app blobs are staged before the rootfs is pulled.
BLOBS = "apps/blobs/sha256"
OBJECTS = "ostree_repo/objects"
# After the install, how long the thread may take to notice it is asked to stop: one read
# of CHUNK bytes, unless the drive hangs (then the unmount detaches it lazily).
STOP_WAIT_S = 5.0
READ_ALL = "read everything"
STOPPED = "stopped"
BUDGET_SPENT = "its memory budget is spent"
FAST = "the drive reads faster than an install uses it"
# A drive whose reads deliver more than this needs no reading ahead: ostree's checksumming
# and dockerd's unpacking consume bytes more slowly (ostree about 330 MB/s on a core of an
# x86 server, less on a device's), and a bundle already in the page cache reads faster still.
FAST_PROBE = 16 << 20
FAST_BYTES_S = 400e6


@dataclass
class ReadAheadTally:
    """What one read-ahead did."""

    budget: int
    files: int = 0
    bytes: int = 0
    charged: int = 0  # bytes counted against the budget (at least a page per file)
    reading_s: float = 0.0  # time spent in the reads themselves
    ended: str = READ_ALL  # or why it ended sooner
    seconds: float = 0.0


def memory_budget() -> int:
    """A quarter of MemAvailable (0 when the kernel does not say)."""
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 4
    except (OSError, ValueError):
        pass
    return 0


class ReadAhead:
    """A read-ahead under way: :meth:`stop` ends it between two reads."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.reason = ""

    def stop(self, reason: str) -> None:
        """End the read-ahead (the first reason given is the one logged)."""
        if not self.asked.is_set():
            self.reason = reason
            self.asked.set()


@asynccontextmanager
async def reading_ahead(bundle: Path, *, budget: int | None = None) -> AsyncIterator[ReadAhead]:
    """Read ``bundle``'s bulk into the page cache while the body runs, until it ends or
    stops the read-ahead it is given.

    Args:
        budget: bytes at most (default: :func:`memory_budget`).
    """
    ahead = ReadAhead()
    loop = asyncio.get_running_loop()
    reading: asyncio.Future[ReadAheadTally] = loop.create_future()

    def run() -> None:
        tally: ReadAheadTally | None = None
        error: BaseException | None = None
        try:
            _yield_the_cpu()
            tally = read_ahead(bundle, budget, ahead.asked)
        except BaseException as e:  # handed over to the loop, which logs it
            error = e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(_settle, reading, tally, error)

    # Its own thread, not the loop's pool: the thread runs at the lowest CPU priority.
    threading.Thread(target=run, name="aklited-read-ahead", daemon=True).start()
    try:
        yield ahead
    finally:
        ahead.stop("the drive is done with")
        done, _ = await asyncio.wait([reading], timeout=STOP_WAIT_S)
        if not done:
            log.warning("read-ahead still waits on the drive", bundle=str(bundle))
        elif (error := reading.exception()) is not None:
            log.warning("read-ahead failed", bundle=str(bundle), error=repr(error))
        else:
            tally = reading.result()
            ended = f"{tally.ended}: {ahead.reason}" if tally.ended == STOPPED else tally.ended
            log.info(
                "read-ahead",
                bundle=str(bundle),
                files=tally.files,
                mib=round(tally.bytes / (1 << 20), 1),
                budget_mib=tally.budget >> 20,
                seconds=round(tally.seconds, 3),
                ended=ended,
            )


def _settle(
    future: asyncio.Future[ReadAheadTally],
    tally: ReadAheadTally | None,
    error: BaseException | None,
) -> None:
    if future.done():  # cancelled: the block it served was cancelled while waiting for it
        return
    if error is not None:
        future.set_exception(error)
    elif tally is not None:
        future.set_result(tally)


def _yield_the_cpu() -> None:
    """The calling thread runs only when the install leaves a core idle (Linux nices
    threads one by one); its reads get the matching lower priority where the drive's
    I/O scheduler has priorities."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def read_ahead(
    bundle: Path,
    budget: int | None,
    stop: threading.Event,
    *,
    fast_bytes_s: float = FAST_BYTES_S,
) -> ReadAheadTally:
    """Read the bundle's blobs, then its objects, until done, over ``budget`` (default:
    :func:`memory_budget`), stopped, or found to read faster than ``fast_bytes_s`` once
    :data:`FAST_PROBE` bytes are read. Blocks: run it in a worker thread."""
    started = time.monotonic()
    tally = ReadAheadTally(memory_budget() if budget is None else budget)
    try:
        _read_bulk(bundle, tally, stop, fast_bytes_s)
    finally:
        tally.seconds = time.monotonic() - started
    return tally


def _read_bulk(
    bundle: Path, tally: ReadAheadTally, stop: threading.Event, fast_bytes_s: float
) -> None:
    try:
        with Path(os.devnull).open("wb") as sink, BundleFiles(bundle, follow_links=False) as files:
            for directory, names in _bulk(files):
                with directory:
                    for name in names:
                        if tally.charged >= tally.budget:
                            tally.ended = BUDGET_SPENT
                            return
                        if stop.is_set() or not _read_entry(
                            directory, name, sink.fileno(), tally, stop
                        ):
                            tally.ended = STOPPED
                            return
                        # The drive's speed for these reads alone (not the listings).
                        if (
                            tally.bytes >= FAST_PROBE
                            and tally.bytes > fast_bytes_s * tally.reading_s
                        ):
                            tally.ended = FAST
                            return
    except DriveEntryError as e:
        tally.ended = f"refused: {e}"
    except OSError as e:
        tally.ended = f"drive error: {e.strerror or e}"


def _bulk(files: BundleFiles) -> Iterator[tuple[BundleDirectory, list[str]]]:
    """Each directory of the bundle's bulk that exists, with its entries' names."""
    fanouts: list[str] = []
    if files.exists(OBJECTS):
        fanouts = [f"{OBJECTS}/{name}" for name in files.list_dir(OBJECTS)]
    for relative in (BLOBS, *fanouts):
        if files.exists(relative):
            names = files.list_dir(relative)
            yield files.directory(relative), names


def _read_entry(
    directory: BundleDirectory,
    name: str,
    sink: int,
    tally: ReadAheadTally,
    stop: threading.Event,
) -> bool:
    """Read one entry into the page cache if it is a regular file (else skip it); False
    when asked to stop before its end."""
    info = directory.lstat(name)
    # A file larger than what is left of the budget is read only that far.
    end = min(info.st_size, tally.budget - tally.charged)
    tally.charged += max(end, PAGE)
    if not stat.S_ISREG(info.st_mode) or end <= 0:
        return True
    with directory.open(name, info=info) as f:
        tally.files += 1
        with contextlib.suppress(OSError):  # the kernel's read-ahead only costs latency
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        offset = 0
        while offset < end:
            if stop.is_set():
                return False
            before = time.monotonic()
            sent = _discard(f.fileno(), sink, offset, min(CHUNK, end - offset))
            tally.reading_s += time.monotonic() - before
            if sent == 0:  # shorter than it said: nothing more to read
                return True
            offset += sent
            tally.bytes += sent
    return True


def _discard(fd: int, sink: int, offset: int, count: int) -> int:
    """Read ``count`` bytes at ``offset`` into the page cache, copying none of them out."""
    try:
        return os.sendfile(sink, fd, offset, count)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    return len(os.pread(fd, count, offset))  # a filesystem that cannot splice
