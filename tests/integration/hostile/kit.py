"""What the hostile-drive tests share: planting hostile entries in a bundle, running
``aklite-offline`` so that a hang fails instead of blocking, and checking that a refusal
left the device as it was.

Every bundle is built once per session (see ``worlds.py``) and copied with ``cp -a`` for
each case; a case then replaces exactly one path of its copy with a hostile entry:

=====================  ==============================================================
kind                   what takes the file's place
=====================  ==============================================================
fifo                   a FIFO (an open or a read that never returns)
chardev                a character device made on the drive: /dev/zero's numbers (1, 5)
symlink-outside-file   an absolute symlink to a valid copy of the file outside the bundle
symlink-outside-fifo   a relative symlink (``../``) to a FIFO outside the bundle
symlink-dev-zero       a symlink to the host's /dev/zero
symlink-loop           a symlink loop inside the bundle (x -> x.loop -> x)
directory              an empty directory
=====================  ==============================================================

The outside copy is valid on purpose: a reader that follows the link would find good
content and go on, so only the exit code and the inotify watch can tell it went out.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aklited.engine.engine import INITIAL_TARGET
from aklited.engine.phases import IN_FLIGHT, PENDING
from aklited_sim.bus import SystemdMock
from tests.helpers.inotify import Event, Watcher
from tests.integration.engine.harness import Device

# A hang fails the test after this long instead of blocking the run (a refusal takes about
# a second, a whole rootfs install a few).
HANG_TIMEOUT_S = 60
# A read of /dev/zero cannot be watched with inotify; a bounded reader returns at once.
QUICK_S = 30

KINDS = (
    "fifo",
    "chardev",
    "symlink-outside-file",
    "symlink-outside-fifo",
    "symlink-dev-zero",
    "symlink-loop",
    "directory",
)

# Exit codes (README.md)
TUF_UPDATE_FAILED = 4
TUF_SECURITY_ERROR = 11
COPY_FAILED = 50
VERIFICATION_FAILED = 70
NO_PENDING_INSTALLATION = 40
NEEDS_REBOOT = 100
NEEDS_DOCKER_RESTART = 101
UPDATE_AVAILABLE = 16


@dataclass
class Planted:
    """A hostile entry in a bundle and what outside the bundle it leads to."""

    kind: str
    path: Path
    watch: list[Path] = field(default_factory=list)  # never to be opened or read
    fifos: list[Path] = field(default_factory=list)  # no reader may ever open these


def copy_bundle(pristine: Path, dst: Path) -> Path:
    """A private copy of a built bundle (``cp -a``: links, modes and times kept)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(pristine), str(dst)], check=True, timeout=120)
    return dst


def plant(path: Path, kind: str, *, outside: Path) -> Planted:
    """Replace ``path`` (a regular file in a bundle copy) with a hostile entry of ``kind``.

    Args:
        path: the file to replace.
        kind: one of :data:`KINDS`.
        outside: a directory outside the bundle for the targets of outside links.
    """
    assert path.is_file() and not path.is_symlink(), f"{path} is not a plain file to replace"
    outside.mkdir(parents=True, exist_ok=True)
    planted = Planted(kind, path)
    match kind:
        case "fifo":
            path.unlink()
            os.mkfifo(path, 0o644)
        case "chardev":
            path.unlink()
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))
        case "symlink-outside-file":
            target = outside / f"copy-of-{path.name}"
            shutil.copy2(path, target)
            path.unlink()
            path.symlink_to(target)
            planted.watch.append(target)
        case "symlink-outside-fifo":
            target = outside / f"fifo-for-{path.name}"
            os.mkfifo(target, 0o644)
            path.unlink()
            path.symlink_to(os.path.relpath(target, path.parent))
            planted.watch.append(target)
            planted.fifos.append(target)
        case "symlink-dev-zero":
            path.unlink()
            path.symlink_to("/dev/zero")
        case "symlink-loop":
            other = path.with_name(path.name + ".loop")
            path.unlink()
            path.symlink_to(other.name)
            other.symlink_to(path.name)
        case "directory":
            path.unlink()
            path.mkdir()
        case _:
            raise ValueError(f"unknown hostile kind {kind!r}")
    return planted


def relocate_outside(directory: Path, *, outside: Path) -> Planted:
    """Move a bundle directory outside the bundle and leave a symlink to it in its place."""
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / directory.name
    directory.rename(target)
    directory.symlink_to(target)
    planted = Planted("dir-symlink-outside", directory, watch=[target])
    planted.watch.extend(p for p in target.rglob("*"))
    return planted


def relocate_inside(path: Path, *, bundle: Path) -> Path:
    """Move ``path`` elsewhere inside ``bundle`` and link it back (relative): still valid."""
    elsewhere = bundle / "elsewhere" / path.parent.name
    elsewhere.mkdir(parents=True, exist_ok=True)
    target = elsewhere / path.name
    path.rename(target)
    path.symlink_to(os.path.relpath(target, path.parent))
    return target


class FifoWriterProbe:
    """Tries, all along a command, to open FIFOs for writing without blocking.

    Such an open succeeds only while some process has the FIFO open for reading, so a
    success proves the command opened a FIFO it must never have touched (and the probe's
    open also ends a reader's wait, so a wrong reader fails here instead of hanging).
    """

    def __init__(self, fifos: Iterable[Path]) -> None:
        self._fifos = list(fifos)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self.opened: list[Path] = []

    def _probe(self) -> None:
        while not self._stop.is_set():
            for fifo in self._fifos:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError as e:
                    if e.errno != errno.ENXIO:  # ENXIO: no reader, as it should be
                        raise
                    continue
                os.close(fd)
                self.opened.append(fifo)
            self._stop.wait(0.002)

    def start(self) -> None:
        if self._fifos:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


@dataclass(frozen=True)
class Ran:
    """One finished ``aklite-offline`` command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float

    def __str__(self) -> str:
        return (
            f"aklite-offline {' '.join(self.args)} -> {self.returncode} in {self.elapsed_s:.1f}s"
            f"\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


# What one command may use at most: an unbounded read of a device node stops here (the
# command is killed) instead of taking the machine's memory. A bounded install needs little.
MEMORY_CAP_BYTES = 2 * 1024**3


@contextmanager
def memory_cgroup(limit_bytes: int = MEMORY_CAP_BYTES) -> Iterator[Path | None]:
    """A memory cgroup (v1, else v2) capped at ``limit_bytes``; None where neither is usable."""
    v1 = Path("/sys/fs/cgroup/memory")
    v2 = Path("/sys/fs/cgroup")
    if (v1 / "memory.limit_in_bytes").exists():
        base, limit_file = v1, "memory.limit_in_bytes"
    elif "memory" in _read(v2 / "cgroup.subtree_control").split():
        base, limit_file = v2, "memory.max"
    else:
        yield None
        return
    group = base / f"aklited-hostile-{os.getpid()}"
    group.mkdir()
    try:
        (group / limit_file).write_text(str(limit_bytes))
        yield group
    finally:
        # every command has ended; a killed one's children may take a moment to go
        deadline = time.monotonic() + 10
        while _read(group / "cgroup.procs").strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        group.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def run_cli(
    device: Device, *args: str, timeout_s: float = HANG_TIMEOUT_S, cgroup: Path | None = None
) -> Ran:
    """Run ``aklite-offline`` for ``device``; fail the test if it does not end in time.

    The command runs in a session of its own, so a hang is ended with everything it
    started (an ``ostree`` child stuck on a FIFO, say), by that session's id. With
    ``cgroup`` it runs in that cgroup (entered by a shell before it execs the command).
    """
    argv = [sys.executable, "-m", "aklited.cli.offline", "-c", str(device.config_dir), *args]
    if cgroup is not None:
        argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env=device.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(
            f"aklite-offline {' '.join(args)} hung: killed after {timeout_s}s\n"
            f"--- stderr (tail)\n{stderr[-3000:]}"
        )
    finally:
        # Whatever the command left behind in its session goes too (nothing, normally).
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return Ran(tuple(args), proc.returncode, stdout, stderr, time.monotonic() - started)


@dataclass
class Outside:
    """What a command did to the outside targets of planted entries (filled when it ends)."""

    events: list[Event] = field(default_factory=list)  # inotify opens and reads
    fifo_readers: list[Path] = field(default_factory=list)  # outside FIFOs opened to read

    def assert_untouched(self) -> None:
        assert self.events == [], f"opened or read outside the bundle: {self.events_text()}"
        assert self.fifo_readers == [], f"opened outside FIFOs to read: {self.fifo_readers}"

    def events_text(self) -> list[str]:
        return [str(e) for e in self.events]


@contextmanager
def watching(planted: Iterable[Planted]) -> Iterator[Outside]:
    """Watch every outside target of ``planted`` while the body runs."""
    entries = list(planted)
    outside = Outside()
    with Watcher() as watcher:
        for entry in entries:
            for path in entry.watch:
                watcher.watch(path)
        probe = FifoWriterProbe(f for e in entries for f in e.fifos)
        probe.start()
        try:
            yield outside
        finally:
            probe.stop()
            outside.events.extend(watcher.events())
            outside.fifo_readers.extend(probe.opened)


def offending_name(relative: str) -> str:
    """What the operator line must contain: ``objects/ab/cdef...<type>`` or the config."""
    return relative if relative.endswith("/config") else relative.removeprefix("ostree_repo/")


def operator_line(ran: Ran) -> str:
    """The one line for the operator: the last line of stderr."""
    lines = ran.stderr.rstrip("\n").splitlines()
    assert lines, f"nothing on stderr\n{ran}"
    return lines[-1]


def assert_refused(ran: Ran, code: int, *, names: str | tuple[str, ...]) -> None:
    """``ran`` exited ``code`` with one operator line naming ``names`` (one of them, for a
    tuple), and no traceback."""
    assert ran.returncode == code, str(ran)
    assert "Traceback" not in ran.stderr, str(ran)
    last = operator_line(ran)
    assert last.startswith("aklite-offline: "), str(ran)
    assert sum(line.startswith("aklite-offline") for line in ran.stderr.splitlines()) == 1, str(ran)
    wanted = (names,) if isinstance(names, str) else names
    assert any(name in last for name in wanted), f"the operator line names none of {wanted}"


def aklite_jobs(systemd: SystemdMock, *, since: int) -> list[str]:
    """Stop/Start calls on aktualizr-lite.service among the Manager calls from ``since`` on."""
    return systemd.jobs("aktualizr-lite.service", since=since)


def lock_path(device: Device) -> Path:
    config = tomllib.loads((device.config_dir / "sota.toml").read_text())
    return Path(config["aklited"]["lock_path"])


def assert_lock_free(device: Device) -> None:
    path = lock_path(device)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError when held
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def deployments(device: Device) -> list[str]:
    """The deployment directories of the device's stateroot."""
    deploy = device.sim.sysroot / "ostree/deploy" / device.sim.osname / "deploy"
    return sorted(p.name for p in deploy.iterdir() if p.is_dir())


def assert_device_unchanged(
    device: Device,
    systemd: SystemdMock,
    *,
    code: int,
    calls_before: int,
    initial_commit: str,
    transaction: bool | None = None,
    full: bool = True,
    cgroup: Path | None = None,
) -> None:
    """The refused install left nothing in flight and the device on its old target.

    What ``run`` and ``current`` answer from is read directly every time (the journal, the
    sysroot, the lock, the Manager calls); ``full`` also asks ``aklite-offline run`` (40)
    and ``aklite-offline current``, which cost a second each.

    Args:
        code: the exit code of the refused install (recorded as the install's result).
        calls_before: how many systemd Manager calls there were before the install.
        initial_commit: the commit the device ran before.
        transaction: True if the refusal must come inside the install transaction (an
            install row that failed), False if before it (no install at all), None if
            either is acceptable.
        full: also run ``run`` and ``current``.
        cgroup: where ``run`` runs (see :func:`run_cli`).
    """
    installs = device.installs()
    for install in installs:
        assert install["state"] not in IN_FLIGHT | PENDING, installs
    current_rows = [i for i in installs if i["is_current"]]
    assert [(i["target_name"], i["ostree_hash"]) for i in current_rows] == [
        (INITIAL_TARGET, initial_commit)
    ], installs
    started = [i for i in installs if i["target_name"] != INITIAL_TARGET]
    states = device.journal_states()
    if transaction is not None:
        assert bool(started) == transaction, (installs, states)
    if started:
        # refused inside the transaction: the step failed, then the install
        assert len(started) == 1, installs
        assert started[0]["state"] == "failed", installs
        assert started[0]["result_code"] == code, installs
        assert states[-1] == "failed", states
        assert any(s.endswith("-failed") for s in states), states
    # aktualizr-lite runs again if the install stopped it (checked before `run`, which
    # would start it too)
    jobs = aklite_jobs(systemd, since=calls_before)
    assert jobs in ([], ["StopUnit", "StartUnit"]), jobs
    if not started:
        assert jobs == [], jobs
    assert_lock_free(device)
    # nothing deployed, no reboot asked for
    assert len(deployments(device)) == 1, deployments(device)
    assert not device.sentinel.exists()
    if not full:
        return
    ran = run_cli(device, "run", cgroup=cgroup)
    assert ran.returncode == NO_PENDING_INSTALLATION, str(ran)
    assert aklite_jobs(systemd, since=calls_before) == jobs  # `run` had nothing to restart
    current = device.current()
    assert current["Target"] == INITIAL_TARGET, current
    assert current["Ostree hash"] == initial_commit, current
