"""Hostile entries on a real drive, mounted as the device mounts drives (ro, nosuid, nodev,
noexec): a device node made on the drive cannot even be opened there (``nodev``), and that
must still read as a hostile entry (70 / 11), not as a failing drive. A failing drive is 4
under the TUF metadata and 50 under the content."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aklited_sim.loopfs import loop_ext4
from tests.helpers.drive import pull_out
from tests.integration.engine.harness import usb_drive
from tests.integration.hostile.kit import (
    COPY_FAILED,
    QUICK_S,
    TUF_SECURITY_ERROR,
    TUF_UPDATE_FAILED,
    VERIFICATION_FAILED,
    Ran,
    assert_refused,
    copy_bundle,
    offending_name,
    plant,
)
from tests.integration.hostile.worlds import Case, RootfsWorld

pytestmark = [pytest.mark.root, pytest.mark.ostree]


def assert_failed_cleanly(ran: Ran, code: int) -> None:
    assert ran.returncode == code, str(ran)
    assert "Traceback" not in ran.stderr, str(ran)
    assert ran.stderr.rstrip("\n").splitlines()[-1].startswith("aklite-offline: "), str(ran)


@pytest.mark.parametrize(
    "options",
    # As mounted by hand (the walk before ostree) and by the daemon (ostree beside it).
    ["ro,nosuid,nodev,noexec", "ro,nosuid,nodev,noexec,nosymfollow"],
    ids=["walk-first", "beside"],
)
@pytest.mark.parametrize(
    ("what", "kind"),
    [("dirtree", "chardev"), ("filez", "fifo"), ("tuf/timestamp.json", "chardev")],
)
def test_hostile_entry_on_a_nodev_drive(  # noqa: PLR0917
    rootfs_case: Case,
    rootfs_world: RootfsWorld,
    tmp_path: Path,
    what: str,
    kind: str,
    options: str,
) -> None:
    relative = rootfs_world.objects.get(what, what)
    code = TUF_SECURITY_ERROR if relative.startswith("tuf/") else VERIFICATION_FAILED
    with usb_drive(tmp_path / "usb", size_mib=64) as drive:
        rootfs_case.bundle = copy_bundle(rootfs_world.bundle, drive.mountpoint / "update")
        plant(rootfs_case.path(relative), kind, outside=tmp_path / "outside")
        drive.remount(options=options)
        ran = rootfs_case.install()
    assert_refused(ran, code, names=offending_name(relative))
    assert ran.elapsed_s < QUICK_S, str(ran)
    rootfs_case.assert_unchanged(code, full=False)


def test_drive_failing_under_the_metadata_is_4(
    rootfs_case: Case, rootfs_world: RootfsWorld, tmp_path: Path
) -> None:
    with usb_drive(tmp_path / "usb", size_mib=64) as drive:
        rootfs_case.bundle = copy_bundle(rootfs_world.bundle, drive.mountpoint / "update")
        drive.remount(options="ro,nosuid,nodev,noexec")
        pull_out(drive.mountpoint)
        ran = rootfs_case.install()
    assert_failed_cleanly(ran, TUF_UPDATE_FAILED)
    rootfs_case.assert_unchanged(TUF_UPDATE_FAILED, transaction=False, full=False)


def test_drive_failing_under_the_ostree_objects_is_50(
    rootfs_case: Case, rootfs_world: RootfsWorld, tmp_path: Path
) -> None:
    # The objects live on a filesystem of their own, mounted inside the bundle (no link to
    # follow): the metadata stays readable while every object read fails.
    with usb_drive(tmp_path / "usb", size_mib=64) as drive:
        bundle = copy_bundle(rootfs_world.bundle, drive.mountpoint / "update")
        rootfs_case.bundle = bundle
        objects = bundle / "ostree_repo" / "objects"
        with loop_ext4(tmp_path / "objects.img", size_mib=32, mountpoint=objects) as part:
            source = rootfs_world.bundle / "ostree_repo" / "objects"
            subprocess.run(["cp", "-a", f"{source}/.", str(objects)], check=True, timeout=60)
            part.remount(options="ro,nosuid,nodev,noexec")
            drive.remount(options="ro,nosuid,nodev,noexec")
            pull_out(objects)
            ran = rootfs_case.install()
    assert_failed_cleanly(ran, COPY_FAILED)
    rootfs_case.assert_unchanged(COPY_FAILED, full=False)
