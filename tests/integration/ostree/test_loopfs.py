"""The loop-mounted ext4 image used as a test drive cleans up after itself, also on failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aklited_sim.loopfs import loop_ext4
from tests.integration.ostree.support import requirements

pytestmark = requirements


def _attached(image: Path) -> str:
    return subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=True
    ).stdout


def _mounted(mountpoint: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(mountpoint)], check=False).returncode == 0


def test_loop_ext4_mounts_and_detaches(tmp_path: Path) -> None:
    image, mnt = tmp_path / "drive.img", tmp_path / "mnt"
    with loop_ext4(image, size_mib=16, mountpoint=mnt, label="STICK") as fs:
        assert _mounted(mnt)
        assert fs.device in _attached(image)
        (mnt / "file").write_text("hello")
        fs.remount(options="ro,nosuid,nodev,noexec")
        with pytest.raises(OSError, match="Read-only"):
            (mnt / "other").write_text("x")
    assert not _mounted(mnt)
    assert _attached(image) == ""
    # Sparse: the apparent size, not the allocated one.
    assert image.stat().st_size == 16 * 1024 * 1024
    assert image.stat().st_blocks * 512 < 16 * 1024 * 1024


def test_loop_ext4_cleans_up_after_a_failure(tmp_path: Path) -> None:
    image, mnt = tmp_path / "drive.img", tmp_path / "mnt"
    with pytest.raises(RuntimeError, match="boom"), loop_ext4(image, size_mib=16, mountpoint=mnt):
        raise RuntimeError("boom")
    assert not _mounted(mnt)
    assert _attached(image) == ""


def test_loop_ext4_detaches_when_mount_fails(tmp_path: Path) -> None:
    image = tmp_path / "drive.img"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    # The mount point is a file: setting up fails after the device was attached.
    with (
        pytest.raises(FileExistsError),
        loop_ext4(image, size_mib=16, mountpoint=not_a_dir),
    ):
        pass
    assert _attached(image) == ""
