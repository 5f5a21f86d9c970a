"""An isolated Docker engine for tests and the demo.

It has its own data root, exec root, pidfile and socket.

Start it with :func:`start_dockerd` and stop it with :meth:`Dockerd.stop` (the test fixture
and the demo do both). The engine runs with ``--bridge=none --iptables=false
--ip-masq=false`` so it leaves no bridge or firewall rule behind and can run beside any other
engine on the machine. It is stopped by its pid, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOCKERD = Path("/usr/sbin/dockerd")
DOCKER_CLI = Path("/usr/bin/docker")


@dataclass(frozen=True, slots=True)
class Dockerd:
    """A running isolated engine."""

    root: Path
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` value that reaches this engine."""
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def env(self) -> dict[str, str]:
        """The environment for a ``docker`` command aimed at this engine."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``/usr/bin/docker ARGS`` against this engine and return its output."""
        return subprocess.run(
            [str(DOCKER_CLI), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def stop(self) -> None:
        """Stop the engine by its pid (SIGTERM, then SIGKILL) and delete its directories."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        # Mounts left by a killed engine (overlay, shm) would make rmtree fail.
        _unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    with Path("/proc/self/mounts").open(encoding="utf-8") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def start_dockerd(*, parent: Path | None = None, ready_timeout_s: float = 30.0) -> Dockerd:
    """Start an isolated ``dockerd`` and wait until its API answers.

    Args:
        parent: where to create the engine's directory (default: the system temp dir).
        ready_timeout_s: how long to wait for the API before giving up.

    Returns:
        The running engine; call :meth:`Dockerd.stop` when done.
    """
    # A short path: the socket path must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="akd-", dir=parent))
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [
            str(DOCKERD),
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'docker.pid'}",
            f"--host=unix://{root / 'docker.sock'}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip6tables=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    engine = Dockerd(root=root, process=process)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if process.poll() is not None:
            text = engine.log.read_text(errors="replace")[-2000:]
            engine.stop()
            raise RuntimeError(f"dockerd exited with {process.returncode}: {text}")
        if engine.socket.exists() and engine.cli("version", check=False).returncode == 0:
            return engine
        if time.monotonic() > deadline:
            engine.stop()
            raise RuntimeError("dockerd did not answer in time")
        time.sleep(0.05)
