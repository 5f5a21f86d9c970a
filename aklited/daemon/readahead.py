"""Reading a bundle off its drive ahead of the install, while the drive would sit idle.

From the moment a bundle is found until the install starts, the daemon checks the bundle's
TUF metadata, twice (once to decide, once in the install): a quarter of a second and more,
mostly CPU, in which a USB drive serves a few small reads though it could have delivered
40 MB at USB 3 speed. The read-ahead reads the bundle's bulk into the page cache meanwhile,
in the order the install reads it (the app blobs, then the OSTree objects), so the
install's copy finds that part there. It only warms the cache: nothing it reads is
interpreted, trusted or kept, and the install still reads and verifies everything it uses.

It gives way to the install. The caller stops it once the install starts: sizing an update
with apps walks the whole OSTree tree, thousands of small reads on a real rootfs, and each
would wait behind a read-ahead chunk. It has one small read in flight at a time (the
kernel's own read-ahead is off for its files), so a read of the check waits behind one
chunk at most. It ends by itself on a drive that reads faster than an install could use.
While it runs, the interpreter hands the GIL over sooner (:data:`SWITCH_INTERVAL_S`): the
check is Python on the CPU, and at the default 5 ms the read-ahead would wait for the GIL
after every read, leaving the drive idle most of the time.

The drive is hostile, so the read-ahead is bounded and harmless: it lists only the few
directories it knows (through :class:`~aklited.drivefs.BundleFiles`, no link followed, no
listing over its limit; a fan-out directory it cannot use is skipped), reads only regular
files, and stops at a budget of a quarter of the memory available when it starts (each
file counted in whole pages): more would evict what it read before the install gets to it.
A read error ends it quietly; what matters to the install, the install meets and reports
itself. Asked to stop, it stops before its next read of at most :data:`CHUNK` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from aklited.drivefs import (
    BundleDirectory,
    BundleFiles,
    DriveIOError,
    MissingEntryError,
    UnsafeEntryError,
)

log = structlog.get_logger(__name__)

CHUNK = 256 << 10
PAGE = 4096
# The directories whose files are the bundle's bulk, in the order an install reads them:
# the app blobs are staged before the rootfs is pulled.
BLOBS = "apps/blobs/sha256"
OBJECTS = "ostree_repo/objects"
_FANOUT = re.compile(r"[0-9a-f]{2}")  # what ostree looks in; a .DS_Store is not one
# Instead of the interpreter's 5 ms, while the read-ahead runs: measured at 180 MB/s beside
# a busy main thread, 256 KiB reads came at 25 MB/s with 5 ms and at 180-220 MB/s with 0.5 ms.
SWITCH_INTERVAL_S = 0.0005
# Once the block it serves ends, how long the thread may take to notice: one read of CHUNK
# bytes, unless the drive hangs (then the unmount detaches it lazily).
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
    charged: int = 0  # bytes counted against the budget: whole pages, at least one a file
    reading_s: float = 0.0  # time spent in the reads themselves
    skipped: int = 0  # directories and entries it could not use
    ended: str = READ_ALL  # or why it ended sooner
    seconds: float = 0.0

    @property
    def mb_s(self) -> float:
        """How fast the drive delivered, over the reads alone."""
        return self.bytes / self.reading_s / 1e6 if self.reading_s > 0 else 0.0


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
    """A read-ahead under way: :meth:`stop` ends it before its next read."""

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
    stops the read-ahead it is given. Never fails the body: a read-ahead that cannot start
    or fails is logged and that is all.

    Args:
        budget: bytes at most (default: :func:`memory_budget`).
    """
    ahead = ReadAhead()
    loop = asyncio.get_running_loop()
    switch_interval = sys.getswitchinterval()
    reading: asyncio.Future[ReadAheadTally] = loop.create_future()

    def run() -> None:
        tally: ReadAheadTally | None = None
        error: BaseException | None = None
        try:
            tally = read_ahead(bundle, budget, ahead.asked)
        except BaseException as e:  # handed over to the loop, which logs it
            error = e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (daemon stopped)
            loop.call_soon_threadsafe(_settle, reading, tally, error)

    # Its own thread, not one of the loop's pool: it may hold it for the whole check.
    try:
        threading.Thread(target=run, name="aklited-read-ahead", daemon=True).start()
    except RuntimeError as e:  # no thread to be had: the install does without
        log.warning("read-ahead cannot start", bundle=str(bundle), error=str(e))
        yield ahead
        return
    # The daemon handles one drive at a time: no other read-ahead changes it meanwhile.
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    try:
        yield ahead
    finally:
        ahead.stop("the drive is done with")
        sys.setswitchinterval(switch_interval)
        done, _ = await asyncio.wait([reading], timeout=STOP_WAIT_S)
        if done:
            _log_outcome(bundle, ahead, reading)
        else:
            log.warning("read-ahead still waits on the drive", bundle=str(bundle))
            reading.add_done_callback(lambda late: _log_outcome(bundle, ahead, late))


def _settle(
    future: asyncio.Future[ReadAheadTally],
    tally: ReadAheadTally | None,
    error: BaseException | None,
) -> None:
    if error is not None:
        future.set_exception(error)
    elif tally is not None:
        future.set_result(tally)


def _log_outcome(bundle: Path, ahead: ReadAhead, reading: asyncio.Future[ReadAheadTally]) -> None:
    if (error := reading.exception()) is not None:
        log.warning("read-ahead failed", bundle=str(bundle), error=repr(error))
        return
    tally = reading.result()
    log.info(
        "read-ahead",
        bundle=str(bundle),
        files=tally.files,
        mib=round(tally.bytes / (1 << 20), 1),
        mb_s=round(tally.mb_s),
        budget_mib=tally.budget >> 20,
        skipped=tally.skipped,
        seconds=round(tally.seconds, 3),
        ended=f"{STOPPED}: {ahead.reason}" if tally.ended == STOPPED else tally.ended,
    )


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
        tally.ended = _read_bulk(bundle, tally, _Limits(stop, fast_bytes_s))
    finally:
        tally.seconds = time.monotonic() - started
    return tally


@dataclass(frozen=True)
class _Limits:
    stop: threading.Event
    fast_bytes_s: float

    def reached(self, tally: ReadAheadTally, *, budget: bool = True) -> str | None:
        """Why the read-ahead must end now, if it must."""
        if self.stop.is_set():
            return STOPPED
        if budget and tally.charged >= tally.budget:
            return BUDGET_SPENT
        # The drive's speed over the reads alone, not the listings.
        if tally.bytes >= FAST_PROBE and tally.bytes > self.fast_bytes_s * tally.reading_s:
            return FAST
        return None


def _read_bulk(bundle: Path, tally: ReadAheadTally, limits: _Limits) -> str:
    """Why it ended."""
    sink = _open_sink()
    try:
        with BundleFiles(bundle, follow_links=False) as files:
            for relative in _bulk_directories(files):
                if ended := limits.reached(tally):
                    return ended
                try:
                    names = files.list_dir(relative)
                    directory = files.directory(relative)
                except (MissingEntryError, UnsafeEntryError):
                    tally.skipped += 1
                    continue
                with directory:
                    for name in names:
                        if ended := limits.reached(tally):
                            return ended
                        if ended := _read_entry(directory, name, sink, tally, limits):
                            return ended
    except DriveIOError as e:
        return f"drive error: {e}"
    except OSError as e:
        return f"drive error: {e.strerror or e}"
    finally:
        if sink is not None:
            os.close(sink)
    return READ_ALL


def _bulk_directories(files: BundleFiles) -> Iterator[str]:
    """The blobs' directory, then each OSTree fan-out directory (listed only once the blobs
    are read)."""
    yield BLOBS
    try:
        names = files.list_dir(OBJECTS)
    except (MissingEntryError, UnsafeEntryError):
        return
    yield from (f"{OBJECTS}/{name}" for name in names if _FANOUT.fullmatch(name))


def _read_entry(
    directory: BundleDirectory,
    name: str,
    sink: int | None,
    tally: ReadAheadTally,
    limits: _Limits,
) -> str | None:
    """Read one entry into the page cache if it is a regular file (else skip it); why the
    read-ahead must end, if it must."""
    try:
        info = directory.lstat(name)
    except (MissingEntryError, UnsafeEntryError):
        tally.skipped += 1
        return None
    # A file larger than what is left of the budget is read only that far.
    end = min(info.st_size, tally.budget - tally.charged)
    tally.charged += max(1, -(-end // PAGE)) * PAGE
    if not stat.S_ISREG(info.st_mode) or end <= 0:
        return None
    try:
        f = directory.open(name, info=info)
    except UnsafeEntryError:  # changed under it
        tally.skipped += 1
        return None
    with f:
        tally.files += 1
        # The kernel's own read-ahead would put more in flight than one chunk.
        with contextlib.suppress(OSError):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        offset = 0
        while offset < end:
            if ended := limits.reached(tally, budget=False):
                return ended
            before = time.monotonic()
            sent = _discard(f.fileno(), sink, offset, min(CHUNK, end - offset))
            tally.reading_s += time.monotonic() - before
            if sent == 0:  # shorter than it said: nothing more to read
                return None
            offset += sent
            tally.bytes += sent
    return None


def _open_sink() -> int | None:
    """/dev/null to send what is read into (None: read into the process instead)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISCHR(os.fstat(fd).st_mode):  # not the device: it would store it all
        os.close(fd)
        return None
    return fd


def _discard(fd: int, sink: int | None, offset: int, count: int) -> int:
    """Read ``count`` bytes at ``offset`` into the page cache; through ``sink``, none of
    them is copied into the process."""
    if sink is not None:
        try:
            return os.sendfile(sink, fd, offset, count)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
    return len(os.pread(fd, count, offset))  # a filesystem that cannot splice
