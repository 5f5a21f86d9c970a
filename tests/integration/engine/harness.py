"""A simulated factory and device for end-to-end engine tests, all real components.

The factory signs TUF metadata with ``aklite_bundle``, commits rootfs trees with the
``ostree`` CLI and builds app stores from busybox-static; it writes bundles onto a
loop-mounted ext4 "USB drive". The device is an OSTree sysroot in a temp directory with
its kernel command line in a file, a private dockerd, a private system bus with systemd
mocked, and its configuration as TOML snippets. ``aklite-offline`` runs as a real
subprocess, so exit codes and SIGKILL behave as on a device.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aklited_sim.dockerd import Dockerd
from aklited_sim.factory import Factory
from aklited_sim.loopfs import LoopFs, loop_ext4
from aklited_sim.sysroot import SimDevice, make_device, reboot
from aklited_sim.world import write_device_config

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Device:
    """A simulated LmP device: sysroot, journal, dockerd, system bus, configuration."""

    root: Path
    sim: SimDevice
    dockerd: Dockerd
    bus_address: str
    config_dir: Path

    @property
    def sentinel(self) -> Path:
        return self.root / "run/aktualizr-session/need_reboot"

    @property
    def db(self) -> Path:
        return self.root / "var/sota/aklited.db"

    @property
    def current_target_file(self) -> Path:
        return self.root / "var/sota/current-target"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address,
            "PYTHONPATH": str(REPO_ROOT),
            **extra,
        }

    def cli(
        self, *args: str, crash_at: str | None = None, path: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``aklite-offline`` with this device's configuration (``path``: a directory
        searched first for the programs it runs)."""
        entry = ["tests.helpers.crash_cli", crash_at] if crash_at else ["aklited.cli.offline"]
        extra = {"PATH": f"{path}:{os.environ['PATH']}"} if path is not None else {}
        return subprocess.run(
            [sys.executable, "-m", *entry, "-c", str(self.config_dir), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def start_cli(
        self, *args: str, cgroup: Path | None = None, cgroups: tuple[Path, ...] = ()
    ) -> subprocess.Popen[str]:
        """Start ``aklite-offline`` in the background, optionally inside (v1) cgroups."""

        def enter_cgroup() -> None:
            for group in (*cgroups, *([cgroup] if cgroup is not None else [])):
                (group / "cgroup.procs").write_text(str(os.getpid()))

        return subprocess.Popen(
            [sys.executable, "-m", "aklited.cli.offline", "-c", str(self.config_dir), *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=enter_cgroup,  # noqa: PLW1509 - the child only writes its pid
        )

    async def update_to(self, bundle: Path) -> None:
        """A whole successful update: install (100), reboot, run (0)."""
        done = self.cli("install", "-s", str(bundle))
        assert done.returncode == 100, (done.stdout, done.stderr)
        await self.reboot()
        done = self.cli("run")
        assert done.returncode == 0, (done.stdout, done.stderr)

    async def reboot(self, *, position: int = 0) -> None:
        """Power-cycle: the tmpfs sentinel is gone and the bootloader starts a deployment."""
        self.sentinel.unlink(missing_ok=True)
        await reboot(self.sim, position=position)

    def journal_states(self) -> list[str]:
        """The event states in the journal, oldest first (read-only, like an operator would)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True)
        try:
            return [row[0] for row in conn.execute("SELECT state FROM events ORDER BY id")]
        finally:
            conn.close()

    def installs(self) -> list[dict[str, object]]:
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM installs ORDER BY id")]
        finally:
            conn.close()

    def current(self) -> dict[str, str]:
        """``aklite-offline current`` parsed into its fields."""
        done = self.cli("current")
        assert done.returncode == 0, done.stderr
        fields: dict[str, str] = {}
        for line in done.stdout.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        return fields

    def running_projects(self) -> dict[str, list[str]]:
        """Compose project -> states of its containers, read from the engine."""
        done = self.dockerd.cli("ps", "-a", "--format", "{{json .}}")
        projects: dict[str, list[str]] = {}
        for line in done.stdout.splitlines():
            item = json.loads(line)
            labels = dict(
                part.split("=", 1) for part in item.get("Labels", "").split(",") if "=" in part
            )
            project = labels.get("com.docker.compose.project")
            if project:
                projects.setdefault(project, []).append(item["State"])
        return projects


def write_config(device_root: Path, sim: SimDevice, dockerd: Dockerd) -> Path:
    return write_device_config(device_root, sim, docker_host=dockerd.host)


async def make_e2e_device(
    root: Path, *, dockerd: Dockerd, bus_address: str
) -> tuple[Device, Factory]:
    sim = await make_device(root / "rootfs", osname="lmp", version="1")
    factory = Factory(root=root / "factory", repo=sim.repo)
    factory.root.mkdir(parents=True, exist_ok=True)
    provisioned = root / "device/usr/lib/sota/tuf/ci"
    provisioned.mkdir(parents=True)
    (provisioned / "1.root.json").write_bytes(factory.ring.roots[0])
    config_dir = write_config(root / "device", sim, dockerd)
    device = Device(
        root=root / "device",
        sim=sim,
        dockerd=dockerd,
        bus_address=bus_address,
        config_dir=config_dir,
    )
    return device, factory


@contextmanager
def usb_drive(root: Path, *, size_mib: int = 256) -> Iterator[LoopFs]:
    """A loop-mounted ext4 drive to write a bundle on."""
    with loop_ext4(root / "usb.img", size_mib=size_mib, mountpoint=root / "usb") as fs:
        yield fs


def clean_engine(dockerd: Dockerd) -> None:
    """Remove every container and image, so each test starts from an empty engine."""
    ids = dockerd.cli("ps", "-aq").stdout.split()
    if ids:
        dockerd.cli("rm", "-f", *ids)
    images = dockerd.cli("images", "-aq").stdout.split()
    if images:
        dockerd.cli("rmi", "-f", *set(images), check=False)
