"""A whole simulated LmP device for aklited to run on, in one directory, torn down as one.

Real: the OSTree sysroot (release 1 booted, its kernel command line a file), a Docker engine
of its own (for a device with apps), a system bus (dbus-daemon, optionally loading aklited's
shipped policy), systemd-udevd with aklited's udev rule extended to loop devices, loop
devices as USB drives, and a factory that signs and writes offline-update bundles.
Stood in for: PID 1 and logind (python-dbusmock), because they cannot run here.

Write every drive before the daemon starts: while the loop rule is installed, a running
aklited takes any loop device attached for a drive plugged in, the factory's own included.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aklited_sim.bus import (
    LogindMock,
    SystemdMock,
    logind_mock,
    policy_bus_config,
    private_system_bus,
    systemd_mock,
)
from aklited_sim.daemon import RunningDaemon, aklitectl, running_aklited
from aklited_sim.dockerd import Dockerd, start_dockerd
from aklited_sim.factory import HWID, TAG, Factory, Release
from aklited_sim.loopfs import loop_ext4
from aklited_sim.sysroot import SimDevice, make_device, reboot, remove_tree
from aklited_sim.udev import LoopDrives, loop_media_rules, running_udevd

REPO = Path(__file__).resolve().parents[1]
SHIPPED_POLICY = REPO / "packaging/dbus/io.foundries.aklited.conf"


def write_device_config(
    device_root: Path, sim: SimDevice, *, docker_host: str | None, extra: str = ""
) -> Path:
    """The device's ``/etc/sota/conf.d``: a rootfs+apps device when ``docker_host`` is set,
    a rootfs-only one otherwise; ``extra`` is appended (e.g. an ``[aklited]`` setting)."""
    config_dir = device_root / "etc/sota/conf.d"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "40-hardware-id.toml").write_text(
        f'[provision]\nprimary_ecu_hardware_id = "{HWID}"\n'
    )
    if docker_host is not None:
        pacman = f"""type = "ostree+compose_apps"
compose_apps_root = "{device_root}/var/sota/compose-apps"
reset_apps_root = "{device_root}/var/sota/reset-apps"
docker_compose_bin = "/usr/bin/docker"
"""
        docker = f'docker_host = "{docker_host}"\n'
    else:
        pacman, docker = 'type = "ostree"\n', ""
    (config_dir / "sota.toml").write_text(
        f"""
[pacman]
{pacman}os = "{sim.osname}"
sysroot = "{sim.sysroot}"
tags = "{TAG}"

[storage]
path = "{device_root}/var/sota"
uptane_metadata_path = "{device_root}/usr/lib/sota/tuf"

[bootloader]
reboot_sentinel_dir = "{device_root}/run/aktualizr-session"

[aklited]
device_type = "ci"
kernel_cmdline = "{sim.kernel_cmdline}"
{docker}lock_path = "{device_root}/run/lock/aklite.lock"
media_root = "{device_root}/run/aklited/media"
{extra}"""
    )
    return config_dir


@dataclass
class World:
    """The simulated device, its factory, and the stand-ins around it."""

    root: Path
    sim: SimDevice
    factory: Factory
    device_root: Path
    config_dir: Path
    bus_address: str
    systemd: SystemdMock
    logind: LogindMock
    dockerd: Dockerd | None
    drives: LoopDrives | None

    @property
    def sentinel(self) -> Path:
        return self.device_root / "run/aktualizr-session/need_reboot"

    def env(self) -> dict[str, str]:
        """The environment of a process on this device (its system bus)."""
        return {
            **os.environ,
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address,
            "PYTHONPATH": str(REPO),
        }

    def daemon(
        self, name: str = "aklited", *, extra_env: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[RunningDaemon]:
        """aklited for this device, ready on entry, stopped with SIGTERM on exit.

        ``extra_env``: variables systemd would add for the unit (e.g. ``WATCHDOG_USEC``).
        """
        return running_aklited(self.config_dir, self.env(), self.root, name, extra_env=extra_env)

    async def aklitectl(self, *args: str) -> tuple[int, Any]:
        return await aklitectl(self.env(), *args)

    async def write_drive(
        self, image: Path, releases: Sequence[Release], *, size_mib: int = 256
    ) -> Path:
        """An ext4 drive image holding a bundle of ``releases`` under ``offline-update/``.

        The drive is written and "unplugged" again: :attr:`drives` plugs it in.
        """
        mountpoint = image.with_suffix(".mnt")
        with loop_ext4(image, size_mib=size_mib, mountpoint=mountpoint, label="UPDATE") as fs:
            await self.factory.write_bundle(fs.mountpoint / "offline-update", list(releases))
        await asyncio.to_thread(mountpoint.rmdir)
        return image

    async def reboot(self) -> str:
        """Power-cycle: the tmpfs sentinel is gone and the bootloader starts the default entry."""
        await asyncio.to_thread(self.sentinel.unlink, missing_ok=True)
        return await reboot(self.sim)


@contextmanager
def _system_bus(workdir: Path, *, policy: bool) -> Iterator[str]:
    if not policy:
        with private_system_bus(workdir) as address:
            yield address
        return
    with private_system_bus(workdir, config_text=policy_bus_config(SHIPPED_POLICY)) as address:
        yield address


@asynccontextmanager
async def simulated_world(
    root: Path,
    *,
    apps: bool = True,
    policy: bool = True,
    udev: bool = True,
    settings: str = "",
) -> AsyncIterator[World]:
    """Stand the device up under ``root``; tear everything down (in reverse) afterwards.

    Args:
        apps: a device with Compose Apps and its own Docker engine (else rootfs-only).
        policy: the system bus loads aklited's shipped D-Bus policy.
        udev: systemd-udevd and the loop-drive rule, and :attr:`World.drives` to plug in.
        settings: lines appended to the device's configuration (its ``[aklited]`` table).
    """
    async with AsyncExitStack() as stack:
        stack.push_async_callback(remove_tree, root / "rootfs")
        sim = await make_device(root / "rootfs", osname="lmp", version="1")
        factory = Factory(root=root / "factory", repo=sim.repo)
        await asyncio.to_thread(factory.root.mkdir, parents=True, exist_ok=True)
        device_root = root / "device"
        provisioned = device_root / "usr/lib/sota/tuf/ci"
        await asyncio.to_thread(provisioned.mkdir, parents=True)
        await asyncio.to_thread((provisioned / "1.root.json").write_bytes, factory.ring.roots[0])
        dockerd = None
        if apps:
            dockerd = await asyncio.to_thread(start_dockerd, parent=root)
            stack.callback(dockerd.stop)
        config_dir = write_device_config(
            device_root, sim, docker_host=dockerd.host if dockerd else None, extra=settings
        )
        address = stack.enter_context(_system_bus(root / "bus", policy=policy))
        systemd = stack.enter_context(systemd_mock(address, root / "bus"))
        systemd.add_unit("aktualizr-lite.service", active=True)
        if apps:
            systemd.add_unit("docker.service", active=True)
        logind = stack.enter_context(logind_mock(address, root / "bus"))
        drives = None
        if udev:
            stack.enter_context(running_udevd())
            stack.enter_context(loop_media_rules())
            drives = stack.enter_context(LoopDrives())
        yield World(
            root=root,
            sim=sim,
            factory=factory,
            device_root=device_root,
            config_dir=config_dir,
            bus_address=address,
            systemd=systemd,
            logind=logind,
            dockerd=dockerd,
            drives=drives,
        )
