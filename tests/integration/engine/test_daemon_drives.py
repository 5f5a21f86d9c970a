"""Plug in a drive and the device updates itself: a real systemd-udevd, a loop device as the
USB drive (aklited's shipped udev rule, extended to loop devices), the daemon as a process.

udevd runs for this module only: the daemon tests elsewhere attach loop drives of their
own, which a daemon watching udev would otherwise take for drives plugged in.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aklited.daemon.readahead import READ_ALL, STOPPED
from aklited_sim.bus import LogindMock, SystemdMock
from aklited_sim.daemon import running_aklited
from aklited_sim.factory import Factory
from aklited_sim.udev import LoopDrives
from tests.helpers.drive import (
    blkio_group,
    drop_caches,
    freezer_group,
    join,
    leave,
    pull_out,
    set_freezer,
    slow_reads,
    wait_for_copying,
)
from tests.helpers.udevd import loop_drive_fixtures
from tests.integration.engine.harness import Device, usb_drive
from tests.integration.engine.test_daemon import (
    aklitectl,
    aklited,
    daemon_config,
    logind,
    wait_for_reboot_request,
)
from tests.integration.media.kit import make_image

pytestmark = [pytest.mark.root, pytest.mark.docker]

__all__ = ["logind"]

# Module-scoped: the daemon tests elsewhere attach loop drives of their own.
udevd, media_rules, loops = loop_drive_fixtures("module")


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
    # The drive read the bundle ahead of the install: all of it (a few MiB here), unless
    # the install started first.
    log = (tmp_path / "aklited-drives.log").read_text()
    [read_ahead] = [line for line in log.splitlines() if " read-ahead " in line]
    assert "/offline-update " in read_ahead, read_ahead
    assert (
        f"ended='{READ_ALL}'" in read_ahead
        or f"ended='{STOPPED}: the install reached started'" in read_ahead
    ), read_ahead

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
        plugged, status = await plug_in(device, loops, image)
    found = [media_of(status, plugged)]
    assert found[0]["found"] == "no update bundle"
    assert status["State"] == "idle" and status["PendingTarget"] == {}
    assert status["LastResult"] == [0, "the drive holds no update bundle"]
    assert not logind.reboot_requested()


async def status_when(device: Device, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The daemon's status once ``done`` holds (aklitectl is the witness; 120 s safety net)."""
    async with asyncio.timeout(120):
        while True:
            _, status = await aklitectl(device, "status")
            if done(status):
                return status
            await asyncio.sleep(0.1)


def drive_taken(plugged: str) -> Callable[[dict[str, Any]], bool]:
    def taken(status: dict[str, Any]) -> bool:
        return any(m["device"] == plugged and m["state"] != "waiting" for m in status["Media"])

    return taken


def drive_done(plugged: str) -> Callable[[dict[str, Any]], bool]:
    def done(status: dict[str, Any]) -> bool:
        return any(m["device"] == plugged and m["safe_to_remove"] for m in status["Media"])

    return done


async def plug_in(device: Device, loops: LoopDrives, image: Path) -> tuple[str, dict[str, Any]]:
    """Attach ``image`` as a drive; its device and the status once the daemon is done with it."""
    plugged = await asyncio.to_thread(loops.attach, image)
    return plugged, await status_when(device, drive_done(plugged))


def media_of(status: dict[str, Any], plugged: str) -> dict[str, Any]:
    return next(m for m in status["Media"] if m["device"] == plugged)


async def test_an_apps_only_drive_restarts_dockerd_and_finishes_without_a_reboot(
    e2e: tuple[Device, Factory, SystemdMock],
    logind: LogindMock,
    loops: LoopDrives,
    tmp_path: Path,
) -> None:
    device, factory, systemd = e2e
    daemon_config(device)
    systemd.add_unit("docker.service", active=True)
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    v3 = await factory.release(3, apps={"app1": factory.app("app1", version=3)}, same_rootfs_as=2)
    with usb_drive(tmp_path / "first") as first:
        await device.update_to(await factory.write_bundle(first.mountpoint / "v2", [v2]))
    with usb_drive(tmp_path / "second") as second:
        await factory.write_bundle(second.mountpoint / "v3", [v3])

    async with aklited(device, tmp_path, "apps-only"):
        plugged = await asyncio.to_thread(loops.attach, tmp_path / "second/usb.img")
        status = await status_when(
            device, lambda s: s["CurrentTarget"].get("name") == v3.name and drive_done(plugged)(s)
        )
    assert status["State"] == "idle" and status["LastResult"][0] == 0
    assert any(c.startswith('RestartUnit "docker.service"') for c in systemd.calls())
    assert not logind.reboot_requested()
    assert device.running_projects() == {"app1": ["running"]}


async def test_a_tampered_bundle_is_refused_and_the_device_stays_on_its_target(
    e2e: tuple[Device, Factory, SystemdMock],
    logind: LogindMock,
    loops: LoopDrives,
    tmp_path: Path,
) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2)
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "offline-update", [v2])
        targets = bundle / "tuf/targets.json"
        document = json.loads(targets.read_bytes())
        document["signed"]["version"] += 1  # no longer what the targets key signed
        targets.write_text(json.dumps(document))

    async with aklited(device, tmp_path, "tampered"):
        plugged, status = await plug_in(device, loops, tmp_path / "usb.img")
    code, message = status["LastResult"]
    assert code == 11 and "targets.json" in message, status["LastResult"]
    assert media_of(status, plugged)["found"].startswith("refused [11]")
    assert status["State"] == "idle" and status["PendingTarget"] == {}
    assert status["CurrentTarget"]["name"] == "initial-target"
    assert not logind.reboot_requested()


async def test_a_drive_with_the_running_target_is_noted_as_already_installed(
    e2e: tuple[Device, Factory, SystemdMock],
    logind: LogindMock,
    loops: LoopDrives,
    tmp_path: Path,
) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2)
    with usb_drive(tmp_path / "first") as first:
        await device.update_to(await factory.write_bundle(first.mountpoint / "v2", [v2]))
    with usb_drive(tmp_path / "second") as second:
        await factory.write_bundle(second.mountpoint / "v2", [v2])

    async with aklited(device, tmp_path, "same"):
        plugged, status = await plug_in(device, loops, tmp_path / "second/usb.img")
    assert media_of(status, plugged)["found"] == f"{v2.name} (already installed)"
    assert status["LastResult"] == [0, f"{v2.name} is already installed"]
    assert status["State"] == "idle" and status["CurrentTarget"]["name"] == v2.name
    assert not logind.reboot_requested()


async def test_a_second_drive_waits_its_turn_and_never_starts_a_second_install(
    e2e: tuple[Device, Factory, SystemdMock],
    logind: LogindMock,
    loops: LoopDrives,
    tmp_path: Path,
) -> None:
    device, factory, _ = e2e
    (device.config_dir / "50-daemon.toml").write_text("[aklited]\nauto_reboot = false\n")
    v2, v3 = await factory.release(2), await factory.release(3)
    with usb_drive(tmp_path / "a") as a:
        await factory.write_bundle(a.mountpoint / "offline-update", [v2])
    with usb_drive(tmp_path / "b") as b:
        await factory.write_bundle(b.mountpoint / "offline-update", [v3])

    async with aklited(device, tmp_path, "two-drives"):
        first = await asyncio.to_thread(loops.attach, tmp_path / "a/usb.img")
        # udevd handles two devices in parallel and may announce them in either order: the
        # second drive goes in once the daemon has taken the first.
        await status_when(device, drive_taken(first))
        second = await asyncio.to_thread(loops.attach, tmp_path / "b/usb.img")
        status = await status_when(device, lambda s: drive_done(first)(s) and drive_done(second)(s))
    # The first drive's install is pending (no auto reboot here); the second one is told
    # so instead of starting an install of its own.
    assert media_of(status, first)["found"] == f"{v2.name} [100]"
    assert media_of(status, second)["found"].startswith(f"{v3.name} [30]: ")
    assert "pending" in media_of(status, second)["found"]
    assert status["PendingTarget"]["name"] == v2.name
    installs = [i["target_name"] for i in device.installs() if i["target_name"] != "initial-target"]
    assert installs == [v2.name]


def mountpoint_of(devnode: str) -> Path:
    """Where ``devnode`` is mounted now (the daemon mounts drives in this namespace here)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        source = fields[fields.index("-") + 2]
        if source == devnode:
            return Path(fields[4])
    raise AssertionError(f"{devnode} is not mounted")


async def test_a_drive_pulled_mid_install_fails_it_and_the_daemon_keeps_serving(
    e2e: tuple[Device, Factory, SystemdMock],
    logind: LogindMock,
    loops: LoopDrives,
    tmp_path: Path,
) -> None:
    device, factory, systemd = e2e
    (device.config_dir / "50-daemon.toml").write_text("[aklited]\nauto_reboot = false\n")
    # enough incompressible content that the pull takes a while
    payload = {f"usr/share/data/blob-{i:04d}": os.urandom(64 * 1024) for i in range(1200)}
    v2 = await factory.release_with_files(2, files=payload)
    for name in ("bad", "good"):
        with usb_drive(tmp_path / name, size_mib=384) as drive:
            await factory.write_bundle(drive.mountpoint / "offline-update", [v2])
    repo = device.sim.sysroot / "ostree" / "repo"

    async with running_aklited(device.config_dir, device.env(), tmp_path, "pulled") as daemon:
        pid = daemon.process.pid
        drop_caches()
        with blkio_group() as slow, freezer_group() as freezer:
            # The daemon, and every process it starts from now on (ostree), in both groups;
            # frozen until the drive's reads are slowed down, so the copy surely takes a while.
            join(slow, pid)
            join(freezer, pid)
            set_freezer(freezer, "FROZEN")
            plugged = await asyncio.to_thread(loops.attach, tmp_path / "bad/usb.img")
            slow_reads(slow, plugged)
            set_freezer(freezer, "THAWED")
            await asyncio.to_thread(wait_for_copying, repo, daemon.running)
            set_freezer(freezer, "FROZEN")
            pull_out(mountpoint_of(plugged))
            set_freezer(freezer, "THAWED")
            status = await status_when(device, drive_done(plugged))
            leave(slow, pid)
            leave(freezer, pid)
        assert status["LastResult"][0] == 50, status["LastResult"]
        assert media_of(status, plugged)["found"].startswith(f"{v2.name} [50]: ")
        assert media_of(status, plugged)["state"] == "unmounted"
        assert status["State"] == "idle" and status["PendingTarget"] == {}
        assert status["CurrentTarget"]["name"] == "initial-target"
        jobs = systemd.jobs()
        assert jobs[-1] == "StartUnit"  # aktualizr-lite runs again
        await asyncio.to_thread(loops.detach, plugged)

        # The daemon keeps serving: the next drive installs.
        good, status = await plug_in(device, loops, tmp_path / "good/usb.img")
        assert media_of(status, good)["found"] == f"{v2.name} [100]"
        assert status["State"] == "awaiting-reboot"
    states = device.journal_states()
    assert "pulling-failed" in states
