"""Which udev devices are drives, and how a stream of udev events becomes one "added"
and one "removed" per drive."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from aklited.daemon.media import (
    Drive,
    DriveAdded,
    DriveRemoved,
    DriveTable,
    drive_from_properties,
    tagged_for_aklited,
)


def props(**changes: str | None) -> dict[str, str]:
    """udev's properties of a tagged FAT partition on a USB stick, with ``changes``
    (None removes a key)."""
    base = {
        "ACTION": "add",
        "SUBSYSTEM": "block",
        "DEVPATH": "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host0/block/sdb/sdb1",
        "DEVNAME": "/dev/sdb1",
        "DEVTYPE": "partition",
        "DISKSEQ": "9",
        "ID_BUS": "usb",
        "ID_FS_TYPE": "vfat",
        "ID_FS_USAGE": "filesystem",
        "ID_FS_LABEL": "UPDATE",
        "ID_FS_UUID": "1234-ABCD",
        "AKLITED_MEDIA": "1",
    }
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


STICK = Drive(
    devnode="/dev/sdb1",
    sysname="sdb1",
    fs_type="vfat",
    label="UPDATE",
    uuid="1234-ABCD",
    kind="partition",
    diskseq="9",
)


def test_a_tagged_partition_with_a_filesystem_is_a_drive() -> None:
    assert drive_from_properties(props()) == STICK


def test_a_whole_disk_is_a_drive_too() -> None:
    drive = drive_from_properties(
        props(DEVNAME="/dev/sdc", DEVTYPE="disk", DEVPATH="/devices/virtual/block/sdc")
    )
    assert drive is not None and (drive.kind, drive.sysname) == ("disk", "sdc")


@pytest.mark.parametrize(
    "changes",
    [
        {"AKLITED_MEDIA": None},  # the rule did not choose it
        {"AKLITED_MEDIA": "0"},
        {"ID_FS_USAGE": None, "ID_PART_TABLE_TYPE": "dos"},  # a partition table
        {"ID_FS_USAGE": "raid"},  # a RAID member
        {"ID_FS_USAGE": "crypto", "ID_FS_TYPE": "crypto_LUKS"},
        {"ID_FS_TYPE": None},
        {"ID_FS_TYPE": ""},
        {"SUBSYSTEM": "usb"},
        {"DEVTYPE": "usb_device"},
        {"DEVNAME": None},
        {"DEVNAME": "sdb1"},  # not a device node
    ],
)
def test_what_is_not_a_drive(changes: dict[str, str | None]) -> None:
    assert drive_from_properties(props(**changes)) is None


def test_the_selection_is_the_callers() -> None:
    def removable(p: Mapping[str, str]) -> bool:
        return p.get("ID_BUS") == "usb"

    untagged = props(AKLITED_MEDIA=None)
    assert tagged_for_aklited(untagged) is False
    assert drive_from_properties(untagged, removable) is not None
    # A filesystem is required whatever the selection says.
    assert drive_from_properties(props(ID_FS_USAGE=None), lambda p: True) is None


def test_repeated_changes_announce_a_drive_once() -> None:
    table = DriveTable()

    assert table.apply("change", props(ACTION="change")) == [DriveAdded(STICK)]
    assert table.apply("change", props(ACTION="change")) == []
    assert table.apply("add", props()) == []
    assert dict(table.drives) == {"/dev/sdb1": STICK}


def test_removal_and_a_lost_filesystem_both_remove() -> None:
    table = DriveTable()
    table.apply("add", props())

    assert table.apply("remove", props(ACTION="remove")) == [DriveRemoved("/dev/sdb1")]
    assert table.apply("remove", props(ACTION="remove")) == []  # already gone

    table.apply("add", props())
    # A loop device detached, a card pulled from its reader: "change" without a filesystem.
    gone = props(ACTION="change", ID_FS_TYPE=None, ID_FS_USAGE=None)
    assert table.apply("change", gone) == [DriveRemoved("/dev/sdb1")]
    assert dict(table.drives) == {}


def test_another_medium_in_the_same_place_is_another_drive() -> None:
    table = DriveTable()
    table.apply("add", props())

    swapped = props(ACTION="change", ID_FS_UUID="5678-EF01", DISKSEQ="10")
    events = table.apply("change", swapped)

    assert events[0] == DriveRemoved("/dev/sdb1")
    assert isinstance(events[1], DriveAdded) and events[1].drive.uuid == "5678-EF01"


def test_events_that_do_not_change_the_medium_are_ignored() -> None:
    table = DriveTable()

    assert table.apply("bind", props()) == []
    assert table.apply("move", props()) == []
    assert table.apply("add", props(DEVNAME=None)) == []
    assert table.apply("remove", props(DEVNAME="/dev/sdz")) == []  # never seen


def test_an_enumeration_replaces_the_table() -> None:
    table = DriveTable()
    table.apply("add", props())
    other = drive_from_properties(
        props(DEVNAME="/dev/sdc1", DEVPATH="/devices/x/sdc/sdc1", ID_FS_LABEL="OTHER")
    )
    assert other is not None

    assert table.replace_all([other]) == [DriveRemoved("/dev/sdb1"), DriveAdded(other)]
    assert table.replace_all([other]) == []
    assert dict(table.drives) == {"/dev/sdc1": other}
