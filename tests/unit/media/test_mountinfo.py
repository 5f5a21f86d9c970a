"""The pure parts of safe mounting: mountinfo, the flag check, names and mount plans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aklited.daemon.media import Drive
from aklited.daemon.mounts import (
    MountEntry,
    UnsupportedFilesystemError,
    find_mount,
    missing_flags,
    mount_plan,
    mounts_of,
    parse_filesystems,
    parse_mountinfo,
    safe_dir_name,
)
from aklited.errors import MediaError

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 22 7:0 / /run/aklited/media/sdb1 ro,nosuid,nodev,noexec,relatime shared:20 - ext4 /dev/sdb1 ro
43 22 0:39 / /run/aklited/media/sdc ro,nosuid,nodev,noexec - fuse.fusefat fusefat ro
44 22 7:2 / /run/aklited/media/sdd ro,nosuid,nodev,relatime - fuseblk /dev/sdd ro,allow_other
45 22 7:3 /sub /mnt/my\\040stick\\134x rw master:3 propagate_from:1 - vfat /dev/sde1 rw,fmask=0022
not a mountinfo line
46 42 7:4 / /run/aklited/media/sdb1 rw,relatime - ext4 /dev/sdf rw
"""


def test_mountinfo_fields_are_parsed_and_unescaped() -> None:
    entries = parse_mountinfo(MOUNTINFO)

    assert [e.mount_id for e in entries] == [22, 42, 43, 44, 45, 46]  # the bad line skipped
    stick = entries[1]
    assert stick == MountEntry(
        mount_id=42,
        parent_id=22,
        major=7,
        minor=0,
        root="/",
        mount_point="/run/aklited/media/sdb1",
        options=frozenset({"ro", "nosuid", "nodev", "noexec", "relatime"}),
        fs_type="ext4",
        source="/dev/sdb1",
        super_options=frozenset({"ro"}),
    )
    escaped = entries[4]  # several optional fields before the separator
    assert (escaped.root, escaped.mount_point) == ("/sub", "/mnt/my stick\\x")
    assert (escaped.fs_type, escaped.source) == ("vfat", "/dev/sde1")
    assert entries[2].fs_type == "fuse.fusefat" and entries[2].source == "fusefat"


def test_the_mount_on_top_is_the_one_found() -> None:
    entries = parse_mountinfo(MOUNTINFO)

    top = find_mount(entries, Path("/run/aklited/media/sdb1"))
    assert top is not None and top.mount_id == 46
    fat = find_mount(entries, "/run/aklited/media/sdc")
    assert fat is not None and fat.mount_id == 43
    assert find_mount(entries, "/run/aklited/media") is None
    assert find_mount(entries, "/mnt/my stick\\x") is not None


def test_missing_flags_come_from_the_per_mount_options() -> None:
    entries = {e.mount_id: e for e in parse_mountinfo(MOUNTINFO)}

    assert missing_flags(entries[42]) == frozenset()
    assert missing_flags(entries[43]) == frozenset()
    assert missing_flags(entries[44]) == {"noexec"}  # exfat-fuse before the rebind
    assert missing_flags(entries[46]) == {"ro", "nosuid", "nodev", "noexec"}


def test_the_mounts_of_a_device_are_found_by_its_number() -> None:
    entries = parse_mountinfo(MOUNTINFO)

    assert [e.mount_id for e in mounts_of(entries, os.makedev(7, 0))] == [42]
    assert [e.mount_id for e in mounts_of(entries, os.makedev(254, 0))] == [22]
    assert mounts_of(entries, os.makedev(8, 17)) == []


def test_kernel_filesystems_are_those_with_a_device() -> None:
    text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\txfs\nnodev\tfuse\n\tfuseblk\n\tvfat\n"

    assert parse_filesystems(text) == {"ext4", "xfs", "vfat"}


@pytest.mark.parametrize(
    ("sysname", "name"),
    [
        ("sdb1", "sdb1"),
        ("mmcblk1p2", "mmcblk1p2"),
        ("loop0", "loop0"),
        ("cciss!c0d0p1", "cciss_c0d0p1"),
        ("../../etc", "_.._etc"),
        ("a/b c\nd", "a_b_c_d"),
        ("x" * 200, "x" * 64),
    ],
)
def test_directory_names_stay_inside_the_media_root(sysname: str, name: str) -> None:
    assert safe_dir_name(sysname) == name
    assert "/" not in name and name not in (".", "..")


@pytest.mark.parametrize("sysname", ["", ".", "..", "..."])
def test_a_name_with_nothing_usable_is_refused(sysname: str) -> None:
    with pytest.raises(MediaError):
        safe_dir_name(sysname)


def drive(fs_type: str) -> Drive:
    return Drive(
        devnode="/dev/sdb1",
        sysname="sdb1",
        fs_type=fs_type,
        label="../../etc",
        uuid="1234-ABCD",
        kind="partition",
    )


def every_helper(name: str) -> str | None:
    return f"/usr/bin/{name}"


def no_helper(name: str) -> str | None:
    return None


MP = Path("/run/aklited/media/sdb1")


def test_the_kernel_mounts_what_it_has_a_driver_for() -> None:
    plan = mount_plan(
        drive("vfat"), MP, kernel_filesystems=frozenset({"ext4", "vfat"}), which=every_helper
    )

    assert plan.argv == (
        "mount", "-t", "vfat", "-o", "ro,nosuid,nodev,noexec", "/dev/sdb1", str(MP),
    )  # fmt: skip
    assert (plan.fs_type, plan.helper, plan.rebind) == ("vfat", "kernel", False)


def test_fat_without_a_kernel_driver_goes_through_fusefat() -> None:
    plan = mount_plan(drive("vfat"), MP, kernel_filesystems=frozenset({"ext4"}), which=every_helper)

    assert plan.argv == ("fusefat", "-o", "ro,nosuid,nodev,noexec", "/dev/sdb1", str(MP))
    assert (plan.fs_type, plan.rebind) == ("fuse.fusefat", False)


def test_exfat_fuse_is_rebound_for_the_noexec_it_drops() -> None:
    plan = mount_plan(
        drive("exfat"), MP, kernel_filesystems=frozenset({"ext4"}), which=every_helper
    )

    assert plan.argv[0] == "mount.exfat-fuse"
    assert (plan.fs_type, plan.rebind) == ("fuseblk", True)


@pytest.mark.parametrize("fs_type", ["vfat", "exfat", "ntfs", "hfsplus", "fuseblk"])
def test_no_driver_and_no_helper_is_unsupported(fs_type: str) -> None:
    with pytest.raises(UnsupportedFilesystemError, match=fs_type):
        mount_plan(drive(fs_type), MP, kernel_filesystems=frozenset({"ext4"}), which=no_helper)
