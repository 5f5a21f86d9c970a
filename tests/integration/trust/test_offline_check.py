"""``aklite-offline check``: outcomes beyond tampering, all read-only."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
from pathlib import Path

import pytest

from aklited.cli.offline_check import check
from aklited.engine.journal import Journal
from aklited_sim.loopfs import loop_ext4
from tests.helpers.tuf_repo import keyring, target_spec, write_foundries_bundle

from .conftest import Device, make_device


async def test_older_target_is_a_refused_downgrade(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_foundries_bundle(tmp_path / "b", device.ring, [target_spec(40)], version=2)
    before = device.state()
    assert await check(device.config, bundle) == 102
    err = capsys.readouterr().err
    assert "version 40 is older than the current version 41" in err and "--force" in err
    assert device.state() == before


async def test_bundle_with_current_target_is_0(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_foundries_bundle(tmp_path / "b", device.ring, [target_spec(41)], version=2)
    assert await check(device.config, bundle) == 0
    assert "already runs" in capsys.readouterr().out


async def test_bundle_older_than_device_metadata_uses_stored_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = await asyncio.to_thread(make_device, tmp_path, ring=keyring())
    newer = write_foundries_bundle(tmp_path / "newer", dev.ring, [target_spec(43)], version=3)

    def seed() -> None:
        store = Journal.open(dev.db_path)
        for role in ("timestamp", "snapshot", "targets"):
            store.tuf_save(role, 3, (newer / "tuf" / f"{role}.json").read_bytes())
        for version, raw in enumerate(dev.ring.roots, start=1):
            store.tuf_save("root", version, raw)
        store.close()

    await asyncio.to_thread(seed)
    older = write_foundries_bundle(tmp_path / "older", dev.ring, [target_spec(43)], version=2)
    before = dev.state()
    assert await check(dev.config, older) == 16
    out = capsys.readouterr().out
    assert "older than the device's" in out and "lmp-43" in out
    assert dev.state() == before


async def test_missing_bundle_directory_is_14(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await check(device.config, tmp_path / "nowhere") == 14
    assert "nowhere" in capsys.readouterr().err


async def test_an_unreadable_bundle_directory_is_4_not_a_traceback(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ENAMETOOLONG stands in for the EIO of a failing drive: the path cannot be looked up.
    assert await check(device.config, tmp_path / ("x" * 300)) == 4
    err = capsys.readouterr().err
    assert err.startswith("aklite-offline: error: ") and "cannot be read" in err


async def test_symlink_inside_bundle_is_fine(device: Device, tmp_path: Path) -> None:
    bundle = write_foundries_bundle(tmp_path / "b", device.ring, [target_spec(42)], version=2)
    real = bundle / "tuf" / "real-targets.json"
    (bundle / "tuf" / "targets.json").rename(real)
    (bundle / "tuf" / "targets.json").symlink_to(real.name)
    assert await check(device.config, bundle) == 16


@pytest.mark.root
async def test_drive_failing_under_the_metadata_is_4(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with loop_ext4(tmp_path / "usb.img", size_mib=32, mountpoint=tmp_path / "usb") as drive:
        bundle = write_foundries_bundle(
            drive.mountpoint / "b", device.ring, [target_spec(42)], version=2
        )
        before = device.state()
        # the drive dies: every read on it fails with EIO from now on
        shut_down_filesystem(drive.mountpoint)
        assert await check(device.config, bundle) == 4
    err = capsys.readouterr().err
    # one line naming the unreadable file and the I/O error
    assert ".json: cannot be read: Input/output error" in err
    assert device.state() == before


def shut_down_filesystem(mountpoint: Path) -> None:
    # ext4's "going down" ioctl, without flushing the log: as if the drive were pulled.
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, 0x8004587D, struct.pack("I", 2))
    finally:
        os.close(fd)
