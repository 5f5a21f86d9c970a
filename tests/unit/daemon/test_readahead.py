"""The read-ahead's choice of files, its bounds and its life beside the block it serves, on
a bundle in a plain directory (the page cache it fills is checked on a real drive in
tests/integration/media)."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from aklited.daemon import drives, readahead
from aklited.daemon.drives import DriveHandler
from aklited.daemon.readahead import (
    BLOBS,
    BUDGET_SPENT,
    CHUNK,
    FAST,
    FAST_PROBE,
    OBJECTS,
    READ_ALL,
    STOPPED,
    SWITCH_INTERVAL_S,
    ReadAhead,
    ReadAheadTally,
    read_ahead,
    reading_ahead,
)
from tests.fakes import Rig, make_target
from tests.unit.daemon.test_jobs import Recorder, jobs_on

MIB = 1 << 20
PAGE = 4096
# What the bundle fixture's blobs and objects hold.
ALL = 2 * MIB + 100 + 3 * MIB + 5 + 300 + 500


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """Two blobs, three objects in two fan-out directories, and files it must not read."""
    root = tmp_path / "bundle"
    write(root / BLOBS / ("a" * 64), 2 * MIB)
    write(root / BLOBS / ("b" * 64), 100)
    write(root / OBJECTS / "ab" / "cdef.filez", 3 * MIB + 5)
    write(root / OBJECTS / "ab" / "0123.dirtree", 300)
    write(root / OBJECTS / "fe" / "4567.commit", 500)
    write(root / "tuf" / "root.json", 1000)  # read by the check itself
    write(root / "ostree_repo" / "config", 50)
    return root


def test_it_reads_the_blobs_and_objects_and_nothing_else(bundle: Path) -> None:
    tally = read_ahead(bundle, None, threading.Event())
    assert tally.ended == READ_ALL
    assert (tally.files, tally.bytes, tally.skipped) == (5, ALL, 0)


def test_a_bundle_without_apps_or_rootfs_reads_what_it_has(tmp_path: Path) -> None:
    write(tmp_path / "rootfs-only" / OBJECTS / "00" / "11.file", 700)
    tally = read_ahead(tmp_path / "rootfs-only", None, threading.Event())
    assert (tally.files, tally.bytes, tally.ended) == (1, 700, READ_ALL)
    (tmp_path / "empty").mkdir()
    tally = read_ahead(tmp_path / "empty", None, threading.Event())
    assert (tally.files, tally.bytes, tally.ended) == (0, 0, READ_ALL)


def test_it_skips_what_is_not_a_regular_file(bundle: Path, tmp_path: Path) -> None:
    fanout = bundle / OBJECTS / "ab"
    os.mkfifo(fanout / "a-fifo.filez")  # a read of it would wait for a writer for ever
    (fanout / "a-dir.filez").mkdir()
    outside = write(tmp_path / "host-secret", MIB)
    (fanout / "out.filez").symlink_to(outside)
    (fanout / "in.filez").symlink_to("cdef.filez")
    tally = read_ahead(bundle, None, threading.Event())
    assert tally.ended == READ_ALL
    assert (tally.files, tally.bytes) == (5, ALL)


def test_what_is_not_a_fanout_directory_is_skipped(bundle: Path, tmp_path: Path) -> None:
    objects = bundle / OBJECTS
    write(objects / ".DS_Store", MIB)  # sorts first; macOS leaves it on FAT drives
    write(objects / "._ab", 4096)
    write(objects / "zz" / "not-ostree's.filez", MIB)
    write(objects / "cd", MIB)  # a file where a fan-out directory should be
    elsewhere = write(tmp_path / "elsewhere" / "ff.filez", MIB).parent
    (objects / "fe").rename(bundle / "moved")
    (objects / "fe").symlink_to(elsewhere)
    tally = read_ahead(bundle, None, threading.Event())
    assert tally.ended == READ_ALL
    assert tally.bytes == ALL - 500  # nothing from any of them, all of the rest
    assert tally.skipped == 2  # cd and fe; the others are no fan-out names at all


def test_an_objects_directory_of_the_wrong_kind_leaves_the_blobs_read(bundle: Path) -> None:
    (bundle / "ostree_repo" / "objects").rename(bundle / "moved")
    write(bundle / OBJECTS, 4096)
    tally = read_ahead(bundle, None, threading.Event())
    assert (tally.ended, tally.bytes) == (READ_ALL, 2 * MIB + 100)


def test_it_stops_at_its_budget_even_inside_a_file(bundle: Path) -> None:
    tally = read_ahead(bundle, 3 * MIB, threading.Event())
    assert tally.ended == BUDGET_SPENT
    # The blobs (2 MiB, and a page charged for the small one), the small object of ab/
    # (a page), then its 3 MiB object only up to the budget.
    assert tally.bytes == 2 * MIB + 100 + 300 + (MIB - 2 * PAGE)
    assert tally.charged == 3 * MIB


def test_each_file_costs_its_pages_and_at_least_one(tmp_path: Path) -> None:
    for index in range(10):
        write(tmp_path / "tiny" / OBJECTS / "00" / f"{index:02}.file", 0 if index % 2 else 10)
    tally = read_ahead(tmp_path / "tiny", 4 * PAGE, threading.Event())
    assert tally.ended == BUDGET_SPENT
    assert tally.charged == 4 * PAGE
    assert tally.files == 2  # empty files are charged but not opened
    for index in range(10):
        write(tmp_path / "odd" / OBJECTS / "00" / f"{index:02}.file", PAGE + 1)
    tally = read_ahead(tmp_path / "odd", 10 * PAGE, threading.Event())
    assert (tally.ended, tally.files, tally.charged) == (BUDGET_SPENT, 5, 10 * PAGE)


def test_it_reads_nothing_once_asked_to_stop(bundle: Path) -> None:
    stop = threading.Event()
    stop.set()
    tally = read_ahead(bundle, None, stop)
    assert (tally.files, tally.bytes, tally.ended) == (0, 0, STOPPED)


def test_a_stop_is_heard_between_directories_that_hold_nothing(tmp_path: Path) -> None:
    for index in range(256):
        (tmp_path / "empty" / OBJECTS / f"{index:02x}").mkdir(parents=True)
    stop = threading.Event()
    stop.set()
    assert read_ahead(tmp_path / "empty", None, stop).ended == STOPPED


def test_a_stop_ends_it_between_two_chunks_of_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "one" / OBJECTS / "00" / "big.filez", 3 * MIB)
    stop = threading.Event()
    discard = readahead._discard

    def discard_then_stop(fd: int, sink: int | None, offset: int, count: int) -> int:
        stop.set()  # asked while the first chunk is read
        return discard(fd, sink, offset, count)

    monkeypatch.setattr(readahead, "_discard", discard_then_stop)
    tally = read_ahead(tmp_path / "one", None, stop)
    assert (tally.ended, tally.bytes) == (STOPPED, CHUNK)


def test_a_drive_faster_than_any_install_is_not_read_ahead(tmp_path: Path) -> None:
    for index in range(6):
        write(tmp_path / "fast" / OBJECTS / f"{index:02}" / "big.filez", 4 * MIB)
    # Any speed is too fast: it stops once the probe is read.
    tally = read_ahead(tmp_path / "fast", None, threading.Event(), fast_bytes_s=0.0)
    assert (tally.ended, tally.bytes) == (FAST, FAST_PROBE)
    # No speed is: it reads everything.
    tally = read_ahead(tmp_path / "fast", None, threading.Event(), fast_bytes_s=float("inf"))
    assert (tally.ended, tally.bytes) == (READ_ALL, 24 * MIB)


def test_the_speed_is_judged_inside_one_large_blob(tmp_path: Path) -> None:
    write(tmp_path / "layer" / BLOBS / ("c" * 64), FAST_PROBE + 8 * MIB)
    tally = read_ahead(tmp_path / "layer", None, threading.Event(), fast_bytes_s=0.0)
    assert (tally.ended, tally.bytes) == (FAST, FAST_PROBE)


def failing_sendfile(code: int) -> Callable[[int, int, int, int], int]:
    def sendfile(_out: int, _in: int, _offset: int, _count: int) -> int:
        raise OSError(code, os.strerror(code))

    return sendfile


def test_a_filesystem_that_cannot_splice_is_read_plainly(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sendfile", failing_sendfile(errno.EINVAL))
    tally = read_ahead(bundle, None, threading.Event())
    assert (tally.ended, tally.files, tally.bytes) == (READ_ALL, 5, ALL)


def test_a_read_error_ends_it_and_says_so(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sendfile", failing_sendfile(errno.EIO))
    tally = read_ahead(bundle, None, threading.Event())
    assert tally.ended == f"drive error: {os.strerror(errno.EIO)}"
    assert tally.bytes == 0


def test_the_first_reason_to_stop_is_the_one_kept() -> None:
    ahead = ReadAhead()
    assert not ahead.asked.is_set()
    ahead.stop("the install began pulling")
    ahead.stop("the drive is done with")
    assert ahead.asked.is_set()
    assert ahead.reason == "the install began pulling"


# ---- beside the block it serves: read_ahead stood in for, to decide when it ends ----------


def until_stopped(_bundle: Path, _budget: int | None, stop: threading.Event) -> ReadAheadTally:
    assert stop.wait(30), "never asked to stop"
    return ReadAheadTally(0, ended=STOPPED)


def entries(logs: list[dict[str, object]], event: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_the_end_of_the_block_stops_it_and_it_says_why(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readahead, "read_ahead", until_stopped)
    with structlog.testing.capture_logs() as logs:
        async with reading_ahead(bundle, budget=64 * MIB):
            pass
    [entry] = entries(logs, "read-ahead")
    assert entry["bundle"] == str(bundle)
    assert entry["ended"] == f"{STOPPED}: the drive is done with"


async def test_a_cancelled_block_still_stops_it(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readahead, "read_ahead", until_stopped)
    entered = asyncio.Event()

    async def block() -> None:
        async with reading_ahead(bundle):
            entered.set()
            await asyncio.Event().wait()

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(block())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [entry] = entries(logs, "read-ahead")
    assert entry["ended"] == f"{STOPPED}: the drive is done with"


async def test_a_failure_in_its_thread_is_logged_not_raised(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object) -> ReadAheadTally:
        raise ValueError("boom")

    monkeypatch.setattr(readahead, "read_ahead", boom)
    with structlog.testing.capture_logs() as logs:
        async with reading_ahead(bundle):
            pass
    [entry] = entries(logs, "read-ahead failed")
    assert "boom" in str(entry["error"])


async def test_a_hung_drive_does_not_hold_the_block_and_its_end_is_logged_later(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    logged = asyncio.Event()
    log_outcome = readahead._log_outcome

    def hung(*_args: object) -> ReadAheadTally:
        assert release.wait(30)
        return ReadAheadTally(0, files=3)

    def log_and_tell(*args: Any) -> None:
        log_outcome(*args)
        logged.set()

    monkeypatch.setattr(readahead, "read_ahead", hung)
    monkeypatch.setattr(readahead, "_log_outcome", log_and_tell)
    monkeypatch.setattr(readahead, "STOP_WAIT_S", 0.01)
    with structlog.testing.capture_logs() as logs:
        async with reading_ahead(bundle):
            pass
        assert [entry["event"] for entry in logs] == ["read-ahead still waits on the drive"]
        release.set()
        await logged.wait()
    [entry] = entries(logs, "read-ahead")
    assert entry["files"] == 3


async def test_no_thread_to_be_had_leaves_the_block_to_run(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(_self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    ran = False
    with structlog.testing.capture_logs() as logs:
        async with reading_ahead(bundle):
            ran = True
    assert ran
    assert [entry["event"] for entry in logs] == ["read-ahead cannot start"]


@pytest.mark.parametrize("apps", [("web",), ()], ids=["apps", "rootfs-only"])
async def test_the_install_starting_stops_it(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apps: tuple[str, ...]
) -> None:
    jobs = await jobs_on(rig, Recorder())
    bundle = rig.bundle(make_target(2, apps=apps))

    async def found(_mountpoint: Path) -> Path:
        return bundle

    monkeypatch.setattr(drives, "find_bundle", found)
    monkeypatch.setattr(readahead, "read_ahead", until_stopped)
    handler = DriveHandler(jobs, tmp_path, publish=lambda _: None, say=lambda _: None)
    with structlog.testing.capture_logs() as logs:
        await handler._use(tmp_path)
    [entry] = entries(logs, "read-ahead")
    # Before the update is sized: with apps that walks the whole tree on the drive.
    assert entry["ended"] == f"{STOPPED}: the install reached started"


async def test_the_gil_changes_hands_sooner_while_it_runs(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readahead, "read_ahead", until_stopped)
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL_S
    async with reading_ahead(bundle):
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == before
