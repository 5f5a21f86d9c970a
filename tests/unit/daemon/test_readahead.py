"""The read-ahead's choice of files and its bounds, on a bundle in a plain directory (the
page cache it fills is checked on a real drive in tests/integration/media)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import structlog

from aklited.daemon.readahead import (
    BLOBS,
    CHUNK,
    FAST,
    FAST_PROBE,
    OBJECTS,
    READ_ALL,
    STOPPED,
    ReadAhead,
    read_ahead,
    reading_ahead,
)

MIB = 1 << 20


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
    assert tally.files == 5
    assert tally.bytes == 2 * MIB + 100 + 3 * MIB + 5 + 300 + 500


def test_a_bundle_without_apps_or_rootfs_reads_what_it_has(tmp_path: Path) -> None:
    write(tmp_path / "rootfs-only" / OBJECTS / "00" / "11.file", 700)
    tally = read_ahead(tmp_path / "rootfs-only", None, threading.Event())
    assert (tally.files, tally.bytes, tally.ended) == (1, 700, READ_ALL)
    (tmp_path / "empty").mkdir()
    tally = read_ahead(tmp_path / "empty", None, threading.Event())
    assert (tally.files, tally.bytes, tally.ended) == (0, 0, READ_ALL)


def test_it_skips_what_is_not_a_regular_file(bundle: Path, tmp_path: Path) -> None:
    fanout = bundle / OBJECTS / "ab"
    os.mkfifo(fanout / "a-fifo.filez")  # opened, it would block the reader for ever
    (fanout / "a-dir.filez").mkdir()
    outside = write(tmp_path / "host-secret", MIB)
    (fanout / "out.filez").symlink_to(outside)
    (fanout / "in.filez").symlink_to("cdef.filez")
    tally = read_ahead(bundle, None, threading.Event())
    assert tally.ended == READ_ALL
    assert tally.files == 5
    assert tally.bytes == 2 * MIB + 100 + 3 * MIB + 5 + 300 + 500


def test_a_link_in_place_of_a_directory_ends_it(bundle: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "ff.filez", MIB)
    (bundle / OBJECTS / "fe").rename(bundle / "moved")
    (bundle / OBJECTS / "fe").symlink_to(elsewhere)
    tally = read_ahead(bundle, None, threading.Event())
    assert tally.ended.startswith("refused: ")
    assert "objects/fe" in tally.ended
    assert tally.bytes == 2 * MIB + 100 + 3 * MIB + 5 + 300  # nothing from elsewhere


def test_it_stops_at_its_budget_even_inside_a_file(bundle: Path) -> None:
    tally = read_ahead(bundle, 3 * MIB, threading.Event())
    assert tally.ended == "its memory budget is spent"
    # The blobs (2 MiB, and a page charged for the small one), the small object of ab/
    # (a page), then its 3 MiB object only up to the budget.
    assert tally.bytes == 2 * MIB + 100 + 300 + (MIB - 2 * 4096)
    assert tally.charged == 3 * MIB


def test_each_file_costs_at_least_a_page(tmp_path: Path) -> None:
    for index in range(10):
        write(tmp_path / "tiny" / OBJECTS / "00" / f"{index:02}.file", 0 if index % 2 else 10)
    tally = read_ahead(tmp_path / "tiny", 4 * 4096, threading.Event())
    assert tally.ended == "its memory budget is spent"
    assert tally.charged == 4 * 4096
    assert tally.files == 2  # empty files are charged but not opened


def test_it_reads_nothing_once_asked_to_stop(bundle: Path) -> None:
    stop = threading.Event()
    stop.set()
    tally = read_ahead(bundle, None, stop)
    assert (tally.files, tally.bytes) == (0, 0)
    assert tally.ended == STOPPED


async def test_it_runs_while_the_body_runs_and_says_what_it_did(bundle: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with reading_ahead(bundle, budget=64 * MIB):
            pass
    [entry] = [e for e in logs if e["event"] == "read-ahead"]
    assert entry["bundle"] == str(bundle)
    assert entry["budget_mib"] == 64
    # Stopped at the block's end or done first: either way it ended, and said so.
    assert entry["ended"] in (READ_ALL, f"{STOPPED}: the drive is done with")


def test_the_first_reason_to_stop_is_the_one_kept() -> None:
    ahead = ReadAhead()
    assert not ahead.asked.is_set()
    ahead.stop("the install began pulling")
    ahead.stop("the drive is done with")
    assert ahead.asked.is_set()
    assert ahead.reason == "the install began pulling"


class StopAfter(threading.Event):
    """A stop asked for at the ``calls``-th look at it (the reader looks before each file
    and before each chunk it reads)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls <= 0


def test_a_stop_ends_it_between_two_chunks_of_a_file(tmp_path: Path) -> None:
    write(tmp_path / "one" / OBJECTS / "00" / "big.filez", 3 * MIB)
    # Looks: before the file, before its first chunk, before its second (stop).
    tally = read_ahead(tmp_path / "one", None, StopAfter(3))
    assert tally.ended == STOPPED
    assert tally.bytes == CHUNK


def test_a_drive_faster_than_any_install_is_not_read_ahead(tmp_path: Path) -> None:
    for index in range(6):
        write(tmp_path / "fast" / OBJECTS / f"{index:02}" / "big.filez", 4 * MIB)
    # Any speed is too fast: it stops after the first file that completes the probe.
    tally = read_ahead(tmp_path / "fast", None, threading.Event(), fast_bytes_s=0.0)
    assert tally.ended == FAST
    assert tally.bytes == FAST_PROBE
    # No speed is: it reads everything.
    tally = read_ahead(tmp_path / "fast", None, threading.Event(), fast_bytes_s=float("inf"))
    assert (tally.ended, tally.bytes) == (READ_ALL, 24 * MIB)
