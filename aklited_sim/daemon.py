"""aklited as systemd would run it: a process with a NOTIFY_SOCKET, ready once it says so.

The socket stands in for the one PID 1 owns; every datagram the daemon sends is kept, so a
caller can wait for READY=1 or a STATUS= line instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAFETY_S = 120  # only a safety net: every wait here is for an event
NETLINK_KOBJECT_UEVENT = 15
UDEV_GROUP = 2  # libudev's monitors listen on group 2; the kernel's raw events are group 1


class Notifications:
    """The NOTIFY_SOCKET systemd would own: the datagrams the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[str] = []

    async def wait_for(self, line: str) -> None:
        """Until a datagram holds ``line`` as one of its lines."""
        loop = asyncio.get_running_loop()
        while not any(line in message.splitlines() for message in self.received):
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), SAFETY_S)
            self.received.append(data.decode())

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@dataclass
class RunningDaemon:
    process: asyncio.subprocess.Process
    notifications: Notifications
    log_path: Path

    def running(self) -> bool:
        return self.process.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def watching_drives(self, *, timeout_s: float = SAFETY_S) -> None:
        """Until the daemon reads udev's events, so that a drive plugged in now is seen at
        once rather than by the enumeration its watcher makes when it starts.

        The watcher starts after READY=1 and says nothing when it is up: the daemon's
        ``/proc`` entries are polled (:func:`polls_udev`).
        """
        async with asyncio.timeout(timeout_s):
            while not polls_udev(self.process.pid):
                if self.process.returncode is not None:
                    raise DaemonError(f"aklited exited:\n{self.log()[-3000:]}")
                await asyncio.sleep(0.01)


def polls_udev(pid: int) -> bool:
    """True once ``pid`` holds a socket on udev's netlink group and its epoll watches it.

    That is the moment the daemon's media watcher reads events: it opens the monitor and
    enumerates the drives present in a worker thread after READY=1, and only then adds
    the socket to the event loop.
    """
    uevent_inodes = set()
    for line in Path(f"/proc/{pid}/net/netlink").read_text().splitlines()[1:]:
        columns = line.split()
        if int(columns[1]) == NETLINK_KOBJECT_UEVENT and int(columns[3], 16) & UDEV_GROUP:
            uevent_inodes.add(columns[9])
    sockets: set[str] = set()
    epolls: list[str] = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except FileNotFoundError:
            continue
        if target.startswith("socket:[") and target[8:-1] in uevent_inodes:
            sockets.add(fd.name)
        elif target == "anon_inode:[eventpoll]":
            epolls.append(fd.name)
    for fd_name in epolls:
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd_name}").read_text().splitlines()
        except FileNotFoundError:  # closed meanwhile
            continue
        watched = {line.split()[1] for line in info if line.startswith("tfd:")}
        if sockets & watched:
            return True
    return False


class DaemonError(RuntimeError):
    """aklited did not become ready, or did not stop cleanly."""


@asynccontextmanager
async def running_aklited(
    config_dir: Path,
    env: Mapping[str, str],
    workdir: Path,
    name: str = "aklited",
    *,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningDaemon]:
    """``aklited -c config_dir``, ready (READY=1) on entry, stopped with SIGTERM on exit.

    Its output goes to ``workdir/<name>.log``; the exit must be 0. ``extra_env`` adds to
    ``env`` what systemd would set for the unit (e.g. ``WATCHDOG_USEC``).
    """
    notifications = Notifications(workdir / f"notify-{name}")
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aklited.daemon.runner", "-c", str(config_dir),
            env={**env, **(extra_env or {}), "NOTIFY_SOCKET": str(notifications.path)},
            stdout=log, stderr=log,
        )  # fmt: skip
    daemon = RunningDaemon(process, notifications, log_path)
    try:
        ready = asyncio.ensure_future(notifications.wait_for("READY=1"))
        exited = asyncio.ensure_future(process.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not ready.done():
            raise DaemonError(f"aklited exited before it was ready:\n{daemon.log()}")
        yield daemon
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), SAFETY_S)
            if code != 0:
                raise DaemonError(f"aklited stopped with {code}:\n{daemon.log()}")
        notifications.close()


async def aklitectl(env: Mapping[str, str], *args: str) -> tuple[int, Any]:
    """``aklitectl --json ARGS``: its exit code and its parsed answer (stderr on a failure)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aklited.cli.ctl", "--json", *args,
        env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), SAFETY_S)
    assert process.returncode is not None
    if args[0] in ("status", "check") and process.returncode in (0, 16):
        return process.returncode, json.loads(out)
    # install / run / watch: the last line is the result; a failure says why on stderr
    lines = out.decode().strip().splitlines()
    last = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else err.decode()
    return process.returncode, last
