"""systemd-udevd started by hand, udev rules for loop devices, and loop devices as drives.

There is no systemd on a CI machine or a bare demo machine to start udevd, and without it
udev's netlink group stays silent: no ``ID_FS_*``, no rule tags. So udevd is started here in
the foreground of its own session, so that its pid is known and it is stopped by that pid.
A udevd already running (a developer's machine) is used as it is and left running.

Loop devices stand in for USB drives. They are not removable and have no ID_BUS, so the
shipped rule alone would never tag them: the simulation's rule is the shipped rule plus one
line for loop devices, so its guards (action, subsystem, a filesystem) are the ones exercised.
While that rule is installed, a running aklited takes *every* loop device attached for a
drive: never attach loop devices of another job meanwhile.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RULES = REPO / "packaging" / "udev" / "70-aklited.rules"
RULES_END = 'LABEL="aklited_end"'
LOOP_RULE = (
    "# Test only: loop devices stand in for USB drives (not removable, no ID_BUS).\n"
    'KERNEL=="loop*", ENV{AKLITED_MEDIA}="1", TAG+="aklited"\n'
)
DETACH_TIMEOUT_S = 30
UDEVD = Path("/lib/systemd/systemd-udevd")
# Rules under /run win over the packaged ones in /lib and vanish with /run's contents.
RUNTIME_RULES = Path("/run/udev/rules.d")


@dataclass(frozen=True, slots=True)
class Udevd:
    """The udevd in use. ``pid`` is None when it was already running."""

    pid: int | None
    log: Path | None


def udevadm(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["udevadm", *args], capture_output=True, text=True, check=False, timeout=timeout_s
    )


def udevd_answers() -> bool:
    """True when a udevd answers on its control socket."""
    return udevadm("control", "--ping", "--timeout=5").returncode == 0


def settle() -> None:
    """Wait until udevd has handled every queued event (e.g. before the next test)."""
    done = udevadm("settle", "--timeout=60", timeout_s=90)
    if done.returncode != 0:
        raise RuntimeError(f"udevadm settle failed: {done.stderr.strip()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_udevd(log: Path, *, ready_timeout_s: float = 30.0) -> subprocess.Popen[bytes]:
    """Start udevd in the foreground of a new session; return once it answers a ping."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(UDEVD)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + ready_timeout_s
    # udevd binds its control socket after reading its rules; a ping answers only then.
    while not udevd_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"systemd-udevd did not come up (exit {process.returncode}): {tail}")
        time.sleep(0.02)
    return process


@contextmanager
def running_udevd() -> Iterator[Udevd]:
    """The running udevd, or one started here and stopped when the block ends."""
    if udevd_answers():
        yield Udevd(pid=None, log=None)
        return
    if not UDEVD.exists():
        raise RuntimeError(f"{UDEVD} is not installed (apt-get install udev)")
    log = Path(tempfile.mkdtemp(prefix="udevd-")) / "udevd.log"
    process = start_udevd(log)
    try:
        yield Udevd(pid=process.pid, log=log)
    finally:
        _stop(process)
        shutil.rmtree(log.parent, ignore_errors=True)


@contextmanager
def udev_rules(name: str, text: str) -> Iterator[Path]:
    """Install a rules file under /run/udev/rules.d while the block runs."""
    RUNTIME_RULES.mkdir(parents=True, exist_ok=True)
    path = RUNTIME_RULES / name
    path.write_text(text)
    try:
        _reload()
        yield path
    finally:
        path.unlink(missing_ok=True)
        _reload()


def _reload() -> None:
    done = udevadm("control", "--reload")
    if done.returncode != 0:
        raise RuntimeError(f"udevadm control --reload failed: {done.stderr.strip()}")


def rules_text() -> str:
    """The shipped rule with the loop-device line just before its end label."""
    text = SHIPPED_RULES.read_text()
    if text.count(RULES_END) != 1:
        raise RuntimeError(f"{SHIPPED_RULES} has no single {RULES_END}")
    return text.replace(RULES_END, LOOP_RULE + RULES_END)


@contextmanager
def loop_media_rules() -> Iterator[Path]:
    """aklited's rule extended to loop devices, installed while the block runs.

    Named after this process, so that another user's end does not take it away; a killed
    process's file is removed by the next one.
    """
    for stale in RUNTIME_RULES.glob("70-aklited-sim-*.rules"):
        if not Path(f"/proc/{stale.stem.rpartition('-')[2]}").exists():
            stale.unlink(missing_ok=True)
    with udev_rules(f"70-aklited-sim-{os.getpid()}.rules", rules_text()) as path:
        yield path


def run(*argv: str | Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {done.stderr.strip()}")
    return done.stdout.strip()


class LoopDrives:
    """Loop devices attached by one user (a test, the demo); all detached at the end."""

    def __init__(self) -> None:
        self._attached: dict[str, Path] = {}

    def attach(self, image: Path) -> str:
        device = run("losetup", "-f", "--show", image)
        self._attached[device] = image
        return device

    def detach(self, device: str) -> None:
        image = self._attached.pop(device)
        _detach(device, image)

    def __enter__(self) -> LoopDrives:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        for device, image in reversed(self._attached.items()):
            try:
                _detach(device, image)
            except (OSError, RuntimeError) as e:
                errors.append(f"{device}: {e}")
        self._attached.clear()
        # The next user's watcher must not see these drives' last events.
        settle()
        if errors:
            raise RuntimeError(f"loop devices left attached: {errors}")


def _backing_file(device: str) -> str | None:
    try:
        return Path(f"/sys/block/{Path(device).name}/loop/backing_file").read_text().strip()
    except OSError:  # gone, or (ENODEV) being detached right now
        return None


def _detach(device: str, image: Path) -> None:
    # Only a device still backed by our image: its number may have been reused.
    if _backing_file(device) != str(image):
        return
    if _has_partitions(device):
        run("partx", "-d", device)
    run("losetup", "-d", device)
    # While anything holds the device open (a FUSE server exiting after its unmount),
    # losetup -d only marks it; it detaches, and udev hears of it, once released. The
    # next test must get a free device and a udev database that no longer names this one.
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    while _backing_file(device) == str(image):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{device} still attached {DETACH_TIMEOUT_S} s after losetup -d")
        time.sleep(0.01)


def _has_partitions(device: str) -> bool:
    name = Path(device).name
    return any(Path(f"/sys/block/{name}").glob(f"{name}p*"))
