"""Space estimate arithmetic, ``ostree ls`` parsing and pull progress parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from aklited.rootfs import space as ostree_space
from aklited.rootfs.cli import PullProgress
from aklited.rootfs.space import SpaceEstimate, parse_tree_listing, reserved_bytes

D1, D2, M = "1" * 64, "2" * 64, "f" * 64
F1, F2, K, L = "3" * 64, "4" * 64, "5" * 64, "6" * 64

LISTING = f"""\
d00755 0 0      0 {D1} {M} /
d00755 0 0      0 {D2} {M} /usr/lib/modules/6.1
-00644 0 0 8388608 {K} /usr/lib/modules/6.1/vmlinuz
-00644 0 0   5000 {F1} /usr/share/a file with spaces
-00644 0 0   5000 {F1} /usr/share/same content
-00755 0 0  10000 {F2} /usr/bin/tool
l00777 0 0      0 {L} /usr/bin/link -> tool
"""


def test_parse_tree_listing() -> None:
    listing = parse_tree_listing(LISTING)
    # Equal content is one object, stored once.
    assert listing.files == {K: 8388608, F1: 5000, F2: 10000, L: 0}
    assert listing.metadata == {(D1, "dirtree"), (D2, "dirtree"), (M, "dirmeta")}
    assert listing.directories == 2
    assert listing.boot_bytes == 8388608


def test_parse_tree_listing_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        parse_tree_listing("error: something\n")


def _repo(tmp_path: Path, config: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "objects").mkdir(parents=True)
    (repo / "config").write_text(config)
    return repo


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[core]\nrepo_version=1\nmode=bare\n", 3_000),  # ostree's default: 3 %
        ("[core]\nmin-free-space-percent=10\n", 10_000),
        ("[core]\nmin-free-space-percent=0\n", 0),
        ("[core]\nmin-free-space-size=5MB\n", 5 * 1024 * 1024),
        # A size wins over a percentage.
        ("[core]\nmin-free-space-percent=50\nmin-free-space-size=1KB\n", 1024),
        ("not an ini file", 3_000),
    ],
)
def test_reserved_bytes(tmp_path: Path, config: str, expected: int) -> None:
    assert reserved_bytes(_repo(tmp_path, config), total_bytes=100_000) == expected


def test_estimate_counts_only_missing_objects(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "[core]\nmode=bare\nmin-free-space-percent=0\n")
    present = repo / "objects" / F1[:2] / f"{F1[2:]}.file"
    present.parent.mkdir()
    present.write_bytes(b"x")
    listing = parse_tree_listing(LISTING)
    estimate = ostree_space.estimate(repo, listing)
    # commit + K, F2, L + two dirtrees and one dirmeta (F1 is present)
    assert estimate.missing_objects == 1 + 3 + 3
    assert estimate.missing_bytes == 8388608 + 10000
    block = ostree_space.BLOCK
    used = block + 8388608 + 3 * block + 0 + 3 * block + 2 * block + 8388608
    assert estimate.required_bytes == used + int(used * 0.05) + ostree_space.MARGIN_FIXED
    assert estimate.reserved_bytes == 0
    assert estimate.free_bytes > 0


def test_estimate_fits() -> None:
    def est(free: int, required: int, reserved: int) -> SpaceEstimate:
        return SpaceEstimate(
            missing_objects=1,
            missing_bytes=1,
            required_bytes=required,
            free_bytes=free,
            reserved_bytes=reserved,
        )

    assert est(free=100, required=60, reserved=40).fits
    assert not est(free=100, required=61, reserved=40).fits
    assert not est(free=50, required=60, reserved=0).fits


def test_progress_counts_down_writes_and_ends_at_total() -> None:
    calls: list[tuple[int, int, str]] = []
    progress = PullProgress(lambda d, t, m: calls.append((d, t, m)), total=1200)
    progress.report(0, "start")
    progress.on_line("Writing objects: 1095")
    progress.on_line("Scanning metadata: 12")  # no count of its own: not reported
    progress.on_line("Writing objects: 617")
    progress.on_line("Writing objects: 900")  # never goes backwards
    progress.on_line("11 metadata, 1192 content objects imported; 217.9 MB content written")
    assert [(d, t) for d, t, _ in calls] == [
        (0, 1200),
        (105, 1200),
        (583, 1200),
        (583, 1200),
        (1200, 1200),
    ]
    assert progress.imported == 1203
    assert calls[-1][2].endswith("content written")


def test_progress_receiving_objects_scaled_to_total() -> None:
    calls: list[tuple[int, int, str]] = []
    progress = PullProgress(lambda d, t, m: calls.append((d, t, m)), total=100)
    progress.on_line("Receiving objects: 50% (500/1000) 20.1 MB/s 100.0 MB")
    assert calls == [(50, 100, "Receiving objects: 50% (500/1000) 20.1 MB/s 100.0 MB")]


def test_progress_callback_failure_does_not_propagate() -> None:
    def broken(done: int, total: int, message: str) -> None:
        raise RuntimeError("display gone")

    progress = PullProgress(broken, total=10)
    progress.on_line("1 metadata, 2 content objects imported; 3 bytes content written")
    assert progress.imported == 3
