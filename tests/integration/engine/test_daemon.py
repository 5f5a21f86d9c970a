"""aklited as a process on a private system bus: D-Bus status and control, the reboot through
logind, and the update finished at the next start before READY=1.

Real: the daemon, the bus, the sysroot, dockerd, signed bundles, the sd_notify datagrams.
Stood in for: PID 1 and logind (python-dbusmock).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus
from dbus_fast.introspection import Node

from aklited.daemon.service import BUS_NAME, INTERFACE, OBJECT_PATH
from aklited_sim.bus import LogindMock, SystemdMock, logind_mock
from aklited_sim.daemon import SAFETY_S, Notifications, running_aklited
from aklited_sim.daemon import aklitectl as sim_aklitectl
from aklited_sim.factory import Factory
from tests.integration.engine.harness import REPO_ROOT, Device, usb_drive

pytestmark = [pytest.mark.root, pytest.mark.docker]

INTROSPECTION_XML = REPO_ROOT / "packaging/dbus/io.foundries.aklited.Updater1.xml"


@pytest.fixture
def logind(system_bus: str, tmp_path: Path) -> Iterator[LogindMock]:
    with logind_mock(system_bus, tmp_path / "dbus") as mock:
        yield mock


@asynccontextmanager
async def aklited(device: Device, tmp_path: Path, name: str) -> AsyncIterator[Notifications]:
    """A running daemon for ``device``, ready (READY=1) on entry, stopped with SIGTERM on exit."""
    async with running_aklited(device.config_dir, device.env(), tmp_path, f"aklited-{name}") as d:
        yield d.notifications


async def aklitectl(device: Device, *args: str) -> tuple[int, Any]:
    return await sim_aklitectl(device.env(), *args)


def daemon_config(device: Device) -> None:
    (device.config_dir / "50-daemon.toml").write_text("[aklited]\nreboot_delay_s = 0\n")


async def wait_for_reboot_request(logind: LogindMock) -> None:
    # The request follows Completed; the mock's log is its only witness, so this waits for
    # the line to appear (the timeout is a safety net, not a phase).
    async with asyncio.timeout(SAFETY_S):
        while not logind.reboot_requested():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def released(logind: LogindMock) -> None:
    # logind notices a closed inhibitor descriptor on its own time: wait for it.
    async with asyncio.timeout(SAFETY_S):
        while await asyncio.to_thread(logind.inhibitors_held):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_install_reboots_then_the_next_start_finishes_before_ready(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, factory, systemd = e2e
    daemon_config(device)
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        async with aklited(device, tmp_path, "first"):
            code, status = await aklitectl(device, "status")
            assert (code, status["State"]) == (0, "idle")
            assert status["CurrentTarget"]["name"] == "initial-target"

            code, done = await aklitectl(device, "install", str(bundle))
            assert code == 100, done
            await wait_for_reboot_request(logind)
            # Shutdowns were held off during the copy and the deployment, and are no more.
            inhibits = [c for c in logind.calls() if c.startswith("Inhibit")]
            assert len(inhibits) == 1 and '"shutdown"' in inhibits[0], logind.calls()
            assert '"block"' in inhibits[0] and v2.name in inhibits[0]
            await released(logind)

            code, status = await aklitectl(device, "status")
            assert status["State"] == "awaiting-reboot"
            assert status["PendingTarget"]["name"] == v2.name
            assert status["LastResult"][0] == 100
    assert any(c.startswith('StopUnit "aktualizr-lite.service"') for c in systemd.calls())

    await device.reboot()
    async with aklited(device, tmp_path, "after-reboot") as notifications:
        # READY=1 came after the finalize: the status is final at once.
        code, status = await aklitectl(device, "status")
    assert status["State"] == "idle"
    assert status["CurrentTarget"]["name"] == v2.name
    assert status["PendingTarget"] == {}
    assert status["LastResult"][0] == 0
    assert any("finishing" in message for message in notifications.received)
    assert device.current()["Target"] == v2.name


async def test_the_running_service_matches_its_introspection_file(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, _, _ = e2e
    async with aklited(device, tmp_path, "introspect"):
        bus = await MessageBus(bus_address=device.bus_address).connect()
        try:
            node = await bus.introspect(BUS_NAME, OBJECT_PATH)
        finally:
            bus.disconnect()
    running = next(i for i in node.interfaces if i.name == INTERFACE)
    xml = await asyncio.to_thread(INTROSPECTION_XML.read_text)
    shipped = next(i for i in Node.parse(xml).interfaces if i.name == INTERFACE)

    def shape(interface: Any) -> dict[str, Any]:
        return {
            "methods": {
                m.name: ([a.signature for a in m.in_args], [a.signature for a in m.out_args])
                for m in interface.methods
            },
            "signals": {s.name: [a.signature for a in s.args] for s in interface.signals},
            "properties": {p.name: (p.signature, p.access.value) for p in interface.properties},
        }

    assert shape(running) == shape(shipped)


async def test_check_changes_nothing_and_without_auto_reboot_the_install_waits(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, factory, _ = e2e
    (device.config_dir / "50-daemon.toml").write_text("[aklited]\nauto_reboot = false\n")
    v2 = await factory.release(2)
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        async with aklited(device, tmp_path, "busy"):
            code, result = await aklitectl(device, "check", str(bundle))
            assert (code, result["target"]) == (16, v2.name)
            code, status = await aklitectl(device, "status")
            assert status["State"] == "idle" and status["PendingTarget"] == {}

            code, done = await aklitectl(device, "install", str(bundle))
            assert code == 100, done
            # Pending now: another install of it answers as the first time, not a second one.
            code, again = await aklitectl(device, "install", str(bundle))
            assert code == 100, again
    assert not logind.reboot_requested()
    assert await asyncio.to_thread(device.sentinel.exists)


async def test_a_damaged_journal_leaves_the_daemon_serving_and_saying_why(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, factory, _ = e2e
    await asyncio.to_thread(device.db.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(device.db.write_bytes, b"not a journal at all\n" * 100)
    v2 = await factory.release(2)
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        # Ready all the same (no crash loop), and it says what is missing.
        async with aklited(device, tmp_path, "degraded") as notifications:
            code, status = await aklitectl(device, "status")
            assert code == 0 and status["State"] == "idle"
            last_code, last_message = status["LastResult"]
            assert last_code == 1 and "not an SQLite database" in last_message
            code, refused = await aklitectl(device, "install", str(bundle))
            assert code == 1 and "not an SQLite database" in refused, refused
    assert any("updates unavailable" in m for m in notifications.received)
    # Untouched: the operator decides what to do with a damaged journal.
    assert (await asyncio.to_thread(device.db.read_bytes)).startswith(b"not a journal")


async def test_without_a_sysroot_the_daemon_serves_and_says_so(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, factory, _ = e2e
    missing = tmp_path / "no-sysroot"
    # After sota.toml in basename order, so this sysroot wins.
    (device.config_dir / "zz-no-sysroot.toml").write_text(f'[pacman]\nsysroot = "{missing}"\n')
    v2 = await factory.release(2)
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        async with aklited(device, tmp_path, "no-sysroot"):
            _, status = await aklitectl(device, "status")
            code, message = status["LastResult"]
            assert code == 1 and "no OSTree sysroot" in message, status["LastResult"]
            code, refused = await aklitectl(device, "install", str(bundle))
            assert code == 1 and "no OSTree sysroot" in refused["message"], refused
            # ... and it keeps serving.
            code, status = await aklitectl(device, "status")
            assert code == 0 and status["State"] == "idle"
    assert not logind.reboot_requested()


async def test_watch_follows_an_install_and_exits_with_its_code(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, factory, _ = e2e
    (device.config_dir / "50-daemon.toml").write_text("[aklited]\nauto_reboot = false\n")
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        async with aklited(device, tmp_path, "watch"):
            watch = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aklited.cli.ctl", "watch",
                env=device.env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert watch.stdout is not None
            # Its first line says where things stand, once it listens for what follows.
            first = await asyncio.wait_for(watch.stdout.readline(), SAFETY_S)
            assert first.decode() == "state: idle\n"
            code, done = await aklitectl(device, "install", str(bundle))
            assert code == 100, done
            rest, err = await asyncio.wait_for(watch.communicate(), SAFETY_S)
    assert watch.returncode == 100, err.decode()
    lines = rest.decode().splitlines()
    states = [line.removeprefix("state: ") for line in lines if line.startswith("state: ")]
    assert states == ["verifying", "installing", "awaiting-reboot"], lines
    percents = [int(line.split("%")[0]) for line in lines if line[:3].strip().isdigit()]
    assert percents and percents == sorted(percents) and percents[-1] > 50, lines
    assert err.decode().strip() == "" and lines[-1].endswith("[100]")


async def test_watch_ends_when_the_daemon_stops(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, _, _ = e2e
    async with aklited(device, tmp_path, "watch-stop"):
        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aklited.cli.ctl", "watch",
            env=device.env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert watch.stdout is not None
        assert await asyncio.wait_for(watch.stdout.readline(), SAFETY_S) == b"state: idle\n"
    # The daemon got SIGTERM on leaving the block: watch says so instead of waiting forever.
    _, err = await asyncio.wait_for(watch.communicate(), SAFETY_S)
    assert watch.returncode == 1
    assert "aklited stopped before the update ended" in err.decode()


async def test_without_a_docker_engine_the_daemon_serves_says_so_and_picks_it_up(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, factory, systemd = e2e
    # The engine's socket is not there (dockerd not started yet, or failed to start).
    socket = tmp_path / "later/docker.sock"
    (device.config_dir / "zz-docker.toml").write_text(
        f'[aklited]\ndocker_host = "unix://{socket}"\nauto_reboot = false\n'
    )
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        async with aklited(device, tmp_path, "no-docker") as notifications:
            # Ready all the same, and it says what is missing.
            code, status = await aklitectl(device, "status")
            assert code == 0 and status["State"] == "idle"
            assert status["LastResult"][0] == 80
            assert f"no Docker engine answers at unix://{socket}" in status["LastResult"][1]
            ready = next(m for m in notifications.received if "READY=1" in m.splitlines())
            assert "no Docker engine answers" in ready

            # An install with apps is refused before it stops aktualizr-lite or copies a byte.
            code, refused = await aklitectl(device, "install", str(bundle))
            assert code == 80 and "no Docker engine answers" in refused["message"], refused
            assert not any(call.startswith("StopUnit") for call in systemd.calls())
            commit = device.sim.sysroot / f"ostree/repo/objects/{v2.commit[:2]}"
            assert not (commit / f"{v2.commit[2:]}.commit").exists()

            # dockerd comes up: the next install goes through, no restart of aklited needed.
            await asyncio.to_thread(socket.parent.mkdir)
            await asyncio.to_thread(socket.symlink_to, device.dockerd.socket)
            code, done = await aklitectl(device, "install", str(bundle))
            assert code == 100, done
