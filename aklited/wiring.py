"""Composition only: builds the real adapters from the configuration, hands them to the engine.

Each adapter implements its engine port itself: the trust port (:mod:`aklited.bundle`), the
OSTree sysroot (:mod:`aklited.rootfs`), Compose Apps (:mod:`aklited.apps`), systemd, the
update lock, the reboot marker and current-target (:mod:`aklited.host`).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from aklited.apps.absent import NoApps
from aklited.bundle.device import DeviceFacts
from aklited.bundle.port import BundleTrust
from aklited.config import Config
from aklited.engine.engine import Checkpoint, Engine
from aklited.engine.journal import Journal
from aklited.engine.ports import AppsPort, EngineObserver, ServicesPort
from aklited.host.current_target import CurrentTargetFile
from aklited.host.lock import UpdateLock
from aklited.host.reboot import RebootMarker
from aklited.host.systemd import NoSystemd, connect_systemd
from aklited.rootfs.sysroot import OstreeSysroot

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from aklited.apps.adapter import ComposeApps
    from aklited.apps.port import ComposeAppsPort


async def _logind(stack: AsyncExitStack) -> MessageBus | None:
    """A bus to logind (for the shutdown inhibitor), or None where there is no system bus."""
    try:
        # dbus-fast honours DBUS_SYSTEM_BUS_ADDRESS; unix fds: the inhibitor is one.
        bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    except (OSError, ValueError) as e:
        log.info("no system bus: shutdowns are not held off during updates", error=str(e))
        return None
    stack.callback(bus.disconnect)
    return bus


def device_facts(config: Config) -> DeviceFacts:
    """Hardware id, type, tags and app shortlist, as selection needs them."""
    return DeviceFacts(
        hardware_id=config.provision.hardware_id,
        device_type=config.aklited.device_type,
        tags=tuple(config.pacman.tags),
        compose_apps=config.pacman.compose_apps,
        with_apps=config.pacman.type != "ostree",
    )


async def _apps_port(config: Config, stack: AsyncExitStack) -> AppsPort:
    if config.pacman.type == "ostree":
        return NoApps()  # a device without Compose Apps never imports the Docker clients
    # The Docker client libraries are imported on first use, and importing reads files:
    # off the loop.
    port = await asyncio.to_thread(importlib.import_module, "aklited.apps.port")
    apps: ComposeApps = port.ComposeApps(
        store_root=config.pacman.reset_apps_root,
        compose_root=config.pacman.compose_apps_root,
        docker_host=config.aklited.docker_host,
        compose_bin=config.pacman.docker_compose_bin,
    )
    stack.push_async_callback(apps.close)
    port_type: type[ComposeAppsPort] = port.ComposeAppsPort
    return port_type(apps)


@asynccontextmanager
async def build_engine(
    config: Config,
    *,
    readonly: bool = False,
    observer: EngineObserver | None = None,
    services: ServicesPort | None = None,
    checkpoint: Checkpoint | None = None,
    logind: MessageBus | None = None,
) -> AsyncIterator[Engine]:
    """The engine for this device, with every connection closed on exit (in reverse order).

    ``readonly`` serves ``check`` and ``current``: the journal is opened read-only (an empty
    one in memory when the device has none yet) and systemd is not asked for anything. A
    device without Compose Apps never loads the Docker client libraries.
    """
    async with AsyncExitStack() as stack:
        if readonly:
            journal = await asyncio.to_thread(Journal.open_for_check, config.storage.db_path)
        else:
            journal = await asyncio.to_thread(Journal.open, config.storage.db_path)
        stack.push_async_callback(asyncio.to_thread, journal.close)
        if services is None:
            services = NoSystemd() if readonly else await connect_systemd()
            stack.push_async_callback(services.close)
        apps = await _apps_port(config, stack)
        yield Engine(
            journal=journal,
            trust=BundleTrust(
                store=journal,
                device=device_facts(config),
                provisioned_roots=config.storage.uptane_metadata_path / config.aklited.device_type,
            ),
            rootfs=OstreeSysroot(
                sysroot=config.pacman.sysroot,
                osname=config.pacman.os,
                kernel_cmdline=config.aklited.kernel_cmdline,
            ),
            apps=apps,
            services=services,
            reboot=RebootMarker(
                config.bootloader.reboot_sentinel_dir / "need_reboot",
                logind=logind if logind is not None or readonly else await _logind(stack),
            ),
            lock=UpdateLock(config.aklited.lock_path),
            current_file=CurrentTargetFile(config.storage.current_target_path),
            observer=observer,
            checkpoint=checkpoint,
        )
