"""The shipped D-Bus policy on a bus configured as Debian's system bus: root may call
everything; any other user may read the properties, introspect and receive the signals,
and gets AccessDenied for Install, Check and Run."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aklited_sim import remove_tree
from aklited_sim.bus import policy_bus_config, private_system_bus
from tests.helpers.dockerd import Dockerd
from tests.integration.engine.harness import REPO_ROOT, Device, make_e2e_device
from tests.integration.engine.test_daemon import SAFETY_S, aklitectl, aklited

pytestmark = [pytest.mark.root, pytest.mark.docker]

POLICY = REPO_ROOT / "packaging/dbus/io.foundries.aklited.conf"
NOBODY = 65534

# Runs as nobody: the calls it may make, the ones it may not, and one Completed signal.
CLIENT = """
import asyncio, sys
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

NAME, PATH, IFACE = "io.foundries.aklited", "/io/foundries/aklited", "io.foundries.aklited.Updater1"

async def call(bus, interface, member, signature="", body=()):
    reply = await bus.call(Message(destination=NAME, path=PATH, interface=interface,
                                   member=member, signature=signature, body=list(body)))
    return reply.error_name if reply.message_type == MessageType.ERROR else "ok"

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    props = "org.freedesktop.DBus.Properties"
    print("GetAll", await call(bus, props, "GetAll", "s", [IFACE]))
    print("Get", await call(bus, props, "Get", "ss", [IFACE, "State"]))
    print("Introspect", await call(bus, "org.freedesktop.DBus.Introspectable", "Introspect"))
    print("Install", await call(bus, IFACE, "Install", "sa{sv}", ["/tmp", {}]))
    print("Check", await call(bus, IFACE, "Check", "s", ["/tmp"]))
    print("Run", await call(bus, IFACE, "Run"))
    completed = asyncio.get_running_loop().create_future()
    def handler(message):
        if message.member == "Completed" and not completed.done():
            completed.set_result(message.body)
    bus.add_message_handler(handler)
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                           body=[f"type='signal',sender='{NAME}',member='Completed'"]))
    print("subscribed", flush=True)
    print("Completed", *(await completed), flush=True)

asyncio.run(main())
"""


@pytest.fixture
def world_reachable() -> Iterator[Path]:
    """A directory nobody can traverse into (pytest's tmp dirs are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="aklited-policy-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def device_on_policy_bus(
    tmp_path: Path, dockerd: Dockerd, world_reachable: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Device]:
    config = policy_bus_config(POLICY)
    with private_system_bus(world_reachable / "bus", config_text=config) as address:
        (world_reachable / "bus").chmod(0o755)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        device, _ = await make_e2e_device(tmp_path, dockerd=dockerd, bus_address=address)
        try:
            yield device
        finally:
            # Deployments are immutable: pytest's own clean-up could not remove them.
            await remove_tree(device.sim.root)


async def test_other_users_read_and_listen_but_cannot_call(
    device_on_policy_bus: Device, tmp_path: Path, world_reachable: Path
) -> None:
    device = device_on_policy_bus
    script = world_reachable / "client.py"
    script.write_text(CLIENT)
    script.chmod(0o644)
    async with aklited(device, tmp_path, "policy"):
        client = await asyncio.create_subprocess_exec(
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            sys.executable, str(script), device.bus_address,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=world_reachable,
        )  # fmt: skip
        assert client.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(SAFETY_S):
            while not lines or lines[-1] != "subscribed":
                line = (await client.stdout.readline()).decode().strip()
                assert line, (lines, (await client.stderr.read()).decode())  # type: ignore[union-attr]
                lines.append(line)
            # Root may call: an install of a directory that holds no bundle fails (14), and
            # its Completed reaches the unprivileged listener.
            code, _ = await aklitectl(device, "install", str(tmp_path / "no-bundle"))
            out, _ = await client.communicate()
    assert code == 14
    lines += out.decode().split("\n")
    denied = "org.freedesktop.DBus.Error.AccessDenied"
    assert lines[:6] == [
        "GetAll ok",
        "Get ok",
        "Introspect ok",
        f"Install {denied}",
        f"Check {denied}",
        f"Run {denied}",
    ]
    assert any(line.startswith("Completed 14 ") for line in lines), lines
