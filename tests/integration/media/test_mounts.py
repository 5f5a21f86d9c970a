"""mount_drive on real drives: the kernel for ext4, FUSE for FAT and exFAT (which this
kernel lacks). Each mount is checked from outside the code under test (mountinfo read
here, a write that must fail with EROFS) and must be gone once its block ends, however
it ends."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from aklited.daemon import mounts
from aklited.daemon.media import Drive, MediaWatcher
from aklited.daemon.mounts import (
    DriveInUseError,
    UnsafeMountError,
    clear_media_root,
    mount_drive,
)
from aklited_sim.udev import LoopDrives
from tests.integration.media.kit import (
    added_image,
    exec_error,
    fuse_helper,
    kernel_has,
    make_image,
    mount_options,
    mounts_below,
    run,
)

pytestmark = pytest.mark.root

SAFE = {"ro", "nosuid", "nodev", "noexec"}


async def attach(watcher: MediaWatcher, loops: LoopDrives, image: Path) -> Drive:
    return await added_image(watcher.events(), loops.attach(image), image)


def tree_with_a_program(root: Path) -> Path:
    root.mkdir()
    (root / "hello.txt").write_text("hello from the drive\n")
    program = root / "run-me"
    program.write_text("#!/bin/sh\necho ran\n")
    program.chmod(0o755)
    return root


@pytest.mark.parametrize("fs", ["ext4", "vfat", "exfat"])
async def test_a_drive_is_mounted_read_only_nosuid_nodev_noexec(
    watcher: MediaWatcher, loops: LoopDrives, media_root: Path, tmp_path: Path, fs: str
) -> None:
    fuse_helper(fs)
    tree = tree_with_a_program(tmp_path / "tree") if fs != "exfat" else None
    if fs == "ext4" and tree is not None:
        (tree / "to-hello").symlink_to("hello.txt")
    drive = await attach(
        watcher, loops, make_image(fs, tmp_path / "stick.img", label="STICK", tree=tree)
    )

    async with mount_drive(drive, media_root) as mounted:
        point = mounted.mountpoint
        assert point == media_root / Path(drive.devnode).name
        options = mount_options(point)
        assert options is not None and options >= SAFE, options
        # Followed by nobody, ostree included: it may copy while the bundle is walked.
        assert "nosymfollow" in options, options
        with pytest.raises(OSError) as refused:
            (point / "new-file").write_text("x")
        assert refused.value.errno == errno.EROFS
        if tree is not None:
            assert (point / "hello.txt").read_text() == "hello from the drive\n"
            assert exec_error(point / "run-me") == errno.EACCES  # noexec
        if fs == "ext4":
            with pytest.raises(OSError) as not_followed:
                (point / "to-hello").read_text()
            assert not_followed.value.errno == errno.ELOOP

    assert mount_options(point) is None
    assert not point.exists()
    assert mounts_below(media_root) == []


async def test_the_mount_is_gone_when_the_block_raises(
    watcher: MediaWatcher, loops: LoopDrives, media_root: Path, tmp_path: Path
) -> None:
    drive = await attach(watcher, loops, make_image("ext4", tmp_path / "s.img", label="S"))

    with pytest.raises(RuntimeError, match="the body failed"):
        async with mount_drive(drive, media_root) as mounted:
            assert mount_options(mounted.mountpoint) is not None
            raise RuntimeError("the body failed")

    assert mount_options(mounted.mountpoint) is None
    assert not mounted.mountpoint.exists()


async def test_the_mount_is_gone_when_the_task_is_cancelled(
    watcher: MediaWatcher, loops: LoopDrives, media_root: Path, tmp_path: Path
) -> None:
    fuse_helper("vfat")
    drive = await attach(watcher, loops, make_image("vfat", tmp_path / "s.img", label="S"))
    inside = asyncio.Event()
    points: list[Path] = []

    async def use_forever() -> None:
        async with mount_drive(drive, media_root) as mounted:
            points.append(mounted.mountpoint)
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(use_forever())
    await asyncio.wait_for(inside.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert mount_options(points[0]) is None
    assert not points[0].exists()


async def test_a_mount_lacking_a_protection_is_refused_and_undone(
    watcher: MediaWatcher,
    loops: LoopDrives,
    media_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drive = await attach(watcher, loops, make_image("ext4", tmp_path / "s.img", label="S"))
    # As a helper that drops an option would: the check must catch what it did.
    monkeypatch.setattr(mounts, "MOUNT_OPTIONS", "ro,nosuid,nodev")

    with pytest.raises(UnsafeMountError, match="lacks noexec"):
        async with mount_drive(drive, media_root):
            pytest.fail("a mount without noexec was handed out")

    assert mounts_below(media_root) == []
    assert not (media_root / Path(drive.devnode).name).exists()


async def test_exfat_fuse_without_the_rebind_is_refused(
    watcher: MediaWatcher,
    loops: LoopDrives,
    media_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """exfat-fuse drops noexec silently; the check, not the helper, is what catches it."""
    fuse_helper("exfat")
    if kernel_has("exfat"):
        pytest.skip("this kernel mounts exfat itself")
    drive = await attach(watcher, loops, make_image("exfat", tmp_path / "s.img", label="S"))
    plan = mounts.mount_plan

    def without_rebind(*args: Any, **kwargs: Any) -> mounts.MountPlan:
        return dataclasses.replace(plan(*args, **kwargs), rebind=False)

    monkeypatch.setattr(mounts, "mount_plan", without_rebind)

    with pytest.raises(UnsafeMountError, match="lacks noexec"):
        async with mount_drive(drive, media_root):
            pytest.fail("an exfat mount without noexec was handed out")

    assert mounts_below(media_root) == []


async def test_a_busy_drive_is_detached_lazily(
    watcher: MediaWatcher, loops: LoopDrives, media_root: Path, tmp_path: Path
) -> None:
    tree = tree_with_a_program(tmp_path / "tree")
    drive = await attach(
        watcher, loops, make_image("ext4", tmp_path / "s.img", label="S", tree=tree)
    )

    async with mount_drive(drive, media_root) as mounted:
        holder = os.open(mounted.mountpoint / "hello.txt", os.O_RDONLY)
    try:
        assert mount_options(mounted.mountpoint) is None
        assert not mounted.mountpoint.exists()
        assert os.pread(holder, 5, 0) == b"hello"  # the open file still reads
    finally:
        os.close(holder)


async def test_a_drive_mounted_elsewhere_is_left_alone(
    watcher: MediaWatcher, loops: LoopDrives, media_root: Path, tmp_path: Path
) -> None:
    drive = await attach(watcher, loops, make_image("ext4", tmp_path / "s.img", label="S"))
    elsewhere = tmp_path / "system-mount"
    elsewhere.mkdir()
    run("mount", "-o", "ro", drive.devnode, elsewhere)
    try:
        with pytest.raises(DriveInUseError, match=f"already mounted at {elsewhere}"):
            async with mount_drive(drive, media_root):
                pytest.fail("a drive in use was mounted again")
        assert mount_options(elsewhere) is not None
        assert mounts_below(media_root) == []
        assert not (media_root / Path(drive.devnode).name).exists()
    finally:
        run("umount", elsewhere)


async def test_mounts_left_by_a_previous_run_are_cleared(
    loops: LoopDrives, media_root: Path, tmp_path: Path
) -> None:
    device = loops.attach(make_image("ext4", tmp_path / "s.img", label="S"))
    stale = media_root / "loop-stale"
    stale.mkdir(parents=True)
    run("mount", "-o", "ro", device, stale)

    cleared = await clear_media_root(media_root)

    assert cleared == [stale]
    assert mount_options(stale) is None
    assert not stale.exists()
