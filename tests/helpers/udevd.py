"""systemd-udevd for tests, and udev rules installed for the length of a test session.

There is no systemd on a CI machine to start udevd, and without it udev's netlink group
stays silent: no ``ID_FS_*``, no rule tags. So the fixture starts udevd by hand, in the
foreground of its own session so that its pid is known and it is stopped by that pid.
A udevd already running (a developer's machine) is used as it is and left running.

Usage in a conftest::

    udevd = pytest.fixture(scope="session")(udevd_fixture)
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

import pytest

UDEVD = Path("/lib/systemd/systemd-udevd")
# Rules under /run win over the packaged ones in /lib and vanish with /run's contents.
RUNTIME_RULES = Path("/run/udev/rules.d")


@dataclass(frozen=True, slots=True)
class Udevd:
    """The udevd the tests talk to. ``pid`` is None when it was already running."""

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


def udevd_fixture() -> Iterator[Udevd]:
    """Body of a fixture: the running udevd, or one started here and stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("udevd needs root")
    if udevd_answers():
        yield Udevd(pid=None, log=None)
        return
    if not UDEVD.exists():
        pytest.skip(f"{UDEVD} is not installed (apt-get install udev)")
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
