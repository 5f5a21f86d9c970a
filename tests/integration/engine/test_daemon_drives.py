"""Plug in a drive and the device updates itself: a real systemd-udevd, a loop device as the
USB drive (aklited's shipped udev rule, extended to loop devices), the daemon as a process.

udevd runs for this module only: the daemon tests elsewhere attach loop drives of their
own, which a daemon watching udev would otherwise take for drives plugged in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dbus import LogindMock, SystemdMock
from tests.helpers.udevd import Udevd, udev_rules, udevd_fixture
from tests.integration.engine.harness import Device, Factory, usb_drive
from tests.integration.engine.test_daemon import (
    aklitectl,
    aklited,
    daemon_config,
    logind,
    wait_for_reboot_request,
)
from tests.integration.media.kit import LoopDrives, make_image, rules_text

pytestmark = [pytest.mark.root, pytest.mark.docker]

__all__ = ["logind"]

udevd = pytest.fixture(scope="module")(udevd_fixture)


@pytest.fixture(scope="module")
def media_rules(udevd: Udevd) -> Iterator[Path]:
    with udev_rules(f"70-aklited-test-{os.getpid()}.rules", rules_text()) as path:
        yield path


@pytest.fixture
def loops(media_rules: Path) -> Iterator[LoopDrives]:
    drives = LoopDrives()
    try:
        yield drives
    finally:
        drives.close()


async def test_a_drive_plugged_in_is_installed_and_the_device_reboots(
    e2e: tuple[Device, Factory, SystemdMock],
    logind: LogindMock,
    loops: LoopDrives,
    tmp_path: Path,
) -> None:
    device, factory, _ = e2e
    daemon_config(device)
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    # The factory writes the drive; then it is "unplugged" until the test plugs it in.
    with usb_drive(tmp_path) as drive:
        await factory.write_bundle(drive.mountpoint / "offline-update", [v2])
    image = tmp_path / "usb.img"

    async with aklited(device, tmp_path, "drives"):
        plugged = await asyncio.to_thread(loops.attach, image)
        await wait_for_reboot_request(logind)

        _, status = await aklitectl(device, "status")
        assert status["State"] == "awaiting-reboot"
        assert status["PendingTarget"]["name"] == v2.name
        assert status["LastResult"][0] == 100
        [media] = [m for m in status["Media"] if m["device"] == plugged]
        assert media["safe_to_remove"] is True and media["state"] == "unmounted"
        assert v2.name in media["found"]
        await asyncio.to_thread(loops.detach, plugged)

    await device.reboot()
    async with aklited(device, tmp_path, "after-reboot"):
        _, status = await aklitectl(device, "status")
    assert (status["State"], status["CurrentTarget"]["name"]) == ("idle", v2.name)


async def test_a_drive_without_a_bundle_is_noted_and_left_safe_to_remove(
    e2e: tuple[Device, Factory, SystemdMock],
    logind: LogindMock,
    loops: LoopDrives,
    tmp_path: Path,
) -> None:
    device, _, _ = e2e
    empty = tmp_path / "empty"
    await asyncio.to_thread(empty.mkdir)
    await asyncio.to_thread((empty / "holiday.jpg").write_bytes, b"\xff\xd8")
    image = await asyncio.to_thread(
        make_image, "ext4", tmp_path / "photos.img", label="PHOTOS", tree=empty
    )
    async with aklited(device, tmp_path, "no-bundle"):
        plugged = await asyncio.to_thread(loops.attach, image)
        async with asyncio.timeout(120):
            while True:
                _, status = await aklitectl(device, "status")
                found = [m for m in status["Media"] if m["device"] == plugged]
                if found and found[0]["safe_to_remove"]:
                    break
                await asyncio.sleep(0.1)
    assert found[0]["found"] == "no update bundle"
    assert status["State"] == "idle" and status["PendingTarget"] == {}
    assert status["LastResult"] == [0, "the drive holds no update bundle"]
    assert not any(call.startswith("Reboot") for call in logind.calls())
