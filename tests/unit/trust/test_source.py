"""Bounded reads from untrusted media."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aklited.errors import TrustError
from aklited.trust.source import DirectorySource, SizeLimits, read_bounded


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "b" / "tuf").mkdir(parents=True)
    return tmp_path / "b"


def refused(path: Path, boundary: Path, *, limit: int = 100) -> TrustError:
    with pytest.raises(TrustError) as err:
        read_bounded(path, limit=limit, boundary=boundary)
    return err.value


def test_reads_up_to_the_limit(bundle: Path) -> None:
    path = bundle / "tuf" / "timestamp.json"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, limit=100, boundary=bundle) == b"x" * 100
    path.write_bytes(b"x" * 101)
    error = refused(path, bundle)
    assert error.code == 11 and "tuf/timestamp.json" in error.message and "limit" in error.message


def test_absent_and_dangling_are_none(bundle: Path) -> None:
    assert read_bounded(bundle / "tuf" / "nope.json", limit=10, boundary=bundle) is None
    (bundle / "tuf" / "dangling.json").symlink_to("gone.json")
    assert read_bounded(bundle / "tuf" / "dangling.json", limit=10, boundary=bundle) is None


def test_symlink_loop_is_refused(bundle: Path) -> None:
    (bundle / "tuf" / "loop.json").symlink_to("loop.json")
    error = refused(bundle / "tuf" / "loop.json", bundle)
    assert error.code == 11 and "loop" in error.message


def test_symlinked_directory_leading_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "targets.json").write_text("{}")
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "tuf").symlink_to(outside)
    error = refused(bundle / "tuf" / "targets.json", bundle)
    assert error.code == 11 and "outside" in error.message


def test_special_files_are_refused(bundle: Path) -> None:
    fifo = bundle / "tuf" / "snapshot.json"
    os.mkfifo(fifo)
    assert "is a FIFO, not a regular file" in refused(fifo, bundle).message
    device = bundle / "tuf" / "null.json"
    device.symlink_to("/dev/null")
    assert "outside" in refused(device, bundle).message


def test_directory_source_names_and_limits(bundle: Path) -> None:
    tuf = bundle / "tuf"
    for name in ("1.root.json", "2.root.json", "10.root.json", "x.root.json", "timestamp.json"):
        (tuf / name).write_text("{}")
    source = DirectorySource(tuf, limits=SizeLimits(timestamp=1))
    assert source.root_versions() == [1, 2, 10]
    assert source.fetch_root(2) == b"{}"
    assert source.fetch_root(3) is None
    with pytest.raises(TrustError) as err:
        source.fetch_timestamp()
    assert "tuf/timestamp.json" in err.value.message
    assert source.fetch_snapshot(1) is None
