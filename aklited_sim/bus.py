"""A private system-like D-Bus with python-dbusmock standing in for PID 1 and logind.

PID 1 and logind cannot run in a test or a demo, so their Managers are the things mocked;
the bus (optionally with aklited's shipped policy), the client library and the signals are
real. The systemd template lacks LoadUnit, Subscribe and
RestartUnit, so they are added here with the semantics real systemd has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""

# Debian's system.conf, reduced to what matters here: nothing may be called unless a
# service's own policy allows it. Root owns and calls the stand-ins' names as on a real
# system (their own policy files allow that); aklited's policy is included as
# /usr/share/dbus-1/system.d would include it.
POLICY_BUS = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={{socket}}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <policy user="root">
    <allow own="org.freedesktop.systemd1"/>
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.systemd1"/>
    <allow send_destination="org.freedesktop.login1"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


def policy_bus_config(policy: Path) -> str:
    """A system-bus configuration that loads ``policy`` (for :func:`private_system_bus`)."""
    return POLICY_BUS.format(policy=policy)


UNIT_IFACE = "org.freedesktop.systemd1.Unit"

# Real systemd's LoadUnit loads any name; an unknown unit comes back "not-found".
LOAD_UNIT = f"""
name = str(args[0])
if name not in self.units:
    self.AddMockUnit(name)
    objects[self.units[name]].UpdateProperties('{UNIT_IFACE}', {{'LoadState': 'not-found'}})
ret = self.units[name]
"""

RESTART_UNIT = """
ret = self.StartUnit(args[0], args[1])
"""


def _alive(pid: int) -> bool:
    # A zombie has exited; whoever parents it reaps it later.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.01)


@contextmanager
def private_system_bus(workdir: Path, *, config_text: str = BUS_CONFIG) -> Iterator[str]:
    """Start a dbus-daemon with a system-like config; yield its address; stop it by pid.

    ``config_text`` is formatted with ``socket`` (the listening socket's path).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    socket_path = workdir / "system_bus_socket"
    config = workdir / "system-like.conf"
    config.write_text(config_text.format(socket=socket_path))
    proc = subprocess.run(
        ["dbus-daemon", f"--config-file={config}", "--fork", "--print-address=1", "--print-pid=1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    lines = proc.stdout.split()
    address, pid = lines[0], int(lines[1])
    try:
        yield address
    finally:
        _kill(pid)


def _gdbus_call(address: str, dest: str, path: str, method: str, *args: str) -> str:
    # dbus-send cannot express every signature; the mock's own D-Bus API takes plain
    # strings, so a tiny dbus-python client is the simplest faithful caller.
    code = (
        "import sys, dbus\n"
        "bus = dbus.bus.BusConnection(sys.argv[1])\n"
        "obj = bus.get_object(sys.argv[2], sys.argv[3])\n"
        "iface, member = sys.argv[4].rsplit('.', 1)\n"
        "print(getattr(dbus.Interface(obj, iface), member)(*sys.argv[5:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, address, dest, path, method, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


@dataclass
class SystemdMock:
    address: str
    log_path: Path

    def call(self, method: str, *args: str) -> str:
        return _gdbus_call(
            self.address, "org.freedesktop.systemd1", "/org/freedesktop/systemd1", method, *args
        )

    def add_unit(self, name: str, *, active: bool) -> None:
        self.call("org.freedesktop.DBus.Mock.AddMockUnit", name)
        if active:
            self.call("org.freedesktop.systemd1.Manager.StartUnit", name, "replace")

    def calls(self) -> list[str]:
        """The Manager methods called so far, in order, with their arguments."""
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        return [line.split(" ", 1)[1] for line in lines if " " in line]

    def jobs(self, unit: str | None = None, *, since: int = 0) -> list[str]:
        """The StartUnit and StopUnit calls among the calls from ``since`` on (of ``unit``
        only, when given), in order."""
        return [
            method
            for method, _, args in (call.partition(" ") for call in self.calls()[since:])
            if method in ("StartUnit", "StopUnit") and (unit is None or f'"{unit}"' in args)
        ]


@contextmanager
def _dbusmock(template: str, address: str, log_path: Path, *, ready: list[str]) -> Iterator[None]:
    """Run python-dbusmock's ``template`` on the bus at ``address`` until the block ends.

    ``ready`` is a call (destination, path, method, args...) that answers once it serves.
    """
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbusmock", "--template", template, "-l", str(log_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _gdbus_call(address, *ready)
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def systemd_mock(address: str, workdir: Path) -> Iterator[SystemdMock]:
    """Run python-dbusmock's systemd template on the bus at ``address``."""
    log_path = workdir / "systemd-mock.log"
    manager = "org.freedesktop.systemd1.Manager"
    version = [
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.DBus.Properties.Get",
        manager,
        "Version",
    ]
    with _dbusmock("systemd", address, log_path, ready=version):
        mock = SystemdMock(address=address, log_path=log_path)
        mock.call("org.freedesktop.DBus.Mock.AddMethod", manager, "LoadUnit", "s", "o", LOAD_UNIT)
        mock.call("org.freedesktop.DBus.Mock.AddMethod", manager, "Subscribe", "", "", "")
        mock.call(
            "org.freedesktop.DBus.Mock.AddMethod", manager, "RestartUnit", "ss", "o", RESTART_UNIT
        )
        yield mock


@dataclass
class LogindMock:
    address: str
    log_path: Path

    def calls(self) -> list[str]:
        """The logind Manager methods called so far, in order, with their arguments."""
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        return [line.split(" ", 1)[1] for line in lines if " " in line]

    def reboot_requested(self) -> bool:
        """True once anything asked logind to reboot."""
        return any(call.startswith("Reboot") for call in self.calls())

    def inhibitors_held(self) -> int:
        """How many inhibitors logind holds now (a closed descriptor releases one)."""
        listing = _gdbus_call(
            self.address,
            "org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager.ListInhibitors",
        )
        return listing.count("dbus.Struct(")


@contextmanager
def logind_mock(address: str, workdir: Path) -> Iterator[LogindMock]:
    """Run python-dbusmock's logind template on the bus at ``address``; it records Reboot."""
    log_path = workdir / "logind-mock.log"
    introspect = [
        "org.freedesktop.login1",
        "/org/freedesktop/login1",
        "org.freedesktop.DBus.Introspectable.Introspect",
    ]
    with _dbusmock("logind", address, log_path, ready=introspect):
        yield LogindMock(address=address, log_path=log_path)
