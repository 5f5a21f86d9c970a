"""Builds the engine's real collaborators from the configuration.

The adapters here only translate between the engine's small protocols
(:mod:`aklited.engine.ports`) and the modules that do the work: bundle verification and
target selection (:mod:`aklited.bundle`), the OSTree sysroot (:mod:`aklited.rootfs`),
Compose Apps (:mod:`aklited.apps`) and systemd (:mod:`aklited.host`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from aklited.apps.adapter import ComposeApps
from aklited.bundle.device import DeviceFacts
from aklited.bundle.select import select_target
from aklited.bundle.verify import verify_bundle
from aklited.config import Config
from aklited.engine.engine import Engine, EngineSettings
from aklited.engine.journal import Store
from aklited.engine.phases import downgrade_guard
from aklited.engine.ports import CurrentTarget, EngineObserver, TargetSpec
from aklited.errors import AppsError
from aklited.host.systemd import ServiceManager, connect_systemd
from aklited.rootfs.sysroot import OstreeSysroot


class BundleTrust:
    """TrustPort: the TUF workflow against the journal's trusted metadata, then selection."""

    def __init__(self, *, store: Store, device: DeviceFacts, provisioned_roots: Path) -> None:
        self._store = store
        self._device = device
        self._provisioned_roots = provisioned_roots

    async def select(
        self,
        src_dir: Path,
        *,
        target_name: str | None,
        force: bool,
        current: CurrentTarget | None,
    ) -> TargetSpec:
        bundle = await verify_bundle(
            src_dir,
            store=self._store,
            device=self._device,
            provisioned_roots=self._provisioned_roots,
        )
        current_version, current_name = downgrade_guard(
            current.name if current else None, current.version if current else None
        )
        selected = await select_target(
            bundle,
            self._device,
            target_name=target_name,
            current_version=current_version,
            current_name=current_name,
            force=force,
        )
        return TargetSpec(
            name=selected.name,
            version=selected.version,
            ostree_hash=selected.ostree_commit,
            apps=dict(selected.apps),
            custom=dict(selected.custom),
            tag=bundle.manifest.tag or None,
            note=_rollback_note(bundle.metadata.rollback),
        )


def _rollback_note(rollback: str | None) -> str | None:
    if rollback is None:
        return None
    return f"the drive's TUF metadata is older than the device's ({rollback}); stored metadata used"


class OstreeRootfs:
    """RootfsPort over :class:`~aklited.rootfs.sysroot.OstreeSysroot`."""

    def __init__(self, sysroot: OstreeSysroot) -> None:
        self._sysroot = sysroot

    async def booted_commit(self) -> str | None:
        booted = (await self._sysroot.status()).booted
        return booted.checksum if booted is not None else None

    async def pending_commit(self) -> str | None:
        pending = (await self._sysroot.status()).pending
        return pending.checksum if pending is not None else None

    async def has_commit(self, commit: str) -> bool:
        return await self._sysroot.has_commit(commit)

    async def pull(self, src_repo: Path, commit: str) -> None:
        await self._sysroot.pull(source_repo=src_repo, commit=commit)

    async def deploy(self, commit: str) -> None:
        await self._sysroot.deploy(commit=commit)

    async def prune(self) -> None:
        await self._sysroot.prune()


class ComposeAppsPort:
    """AppsPort over :class:`~aklited.apps.adapter.ComposeApps`."""

    def __init__(self, apps: ComposeApps) -> None:
        self._apps = apps

    async def stage(self, src_store: Path, apps: Mapping[str, str]) -> None:
        verified = await self._apps.verify(src_store, apps)
        await self._apps.fetch(src_store, verified)
        await self._apps.load(verified)

    async def start(self, apps: Mapping[str, str]) -> None:
        verified = await self._apps.verify_local(apps)
        # Images may be gone (a dockerd with a fresh data root): loading skips present ones.
        await self._apps.load(verified)
        await self._apps.install(verified)
        await self._apps.start(verified)

    async def in_place(self, apps: Mapping[str, str]) -> bool:
        if not apps:
            return True
        try:
            verified = await self._apps.verify_local(apps, quick=True)
        except AppsError:  # absent or damaged: not in place, install again
            return False
        statuses = await self._apps.check_running(verified)
        return all(status.running for status in statuses.values())

    async def retire(self, keep: Mapping[str, str]) -> None:
        dropped = [name for name in await self._apps.installed() if name not in keep]
        if dropped:
            await self._apps.remove(dropped)
        verified = await self._apps.verify_local(keep, quick=True) if keep else ()
        await self._apps.prune(verified)

    async def states(self, apps: Mapping[str, str]) -> dict[str, str]:
        try:
            verified = await self._apps.verify_local(apps, quick=True)
        except AppsError as e:  # reported as the app's state
            return dict.fromkeys(apps, f"not installed ({e})")
        statuses = await self._apps.check_running(verified)
        return {
            name: "running" if status.running else "not running"
            for name, status in statuses.items()
        }


class NoApps:
    """AppsPort of a device without Compose Apps (``pacman.type = "ostree"``)."""

    async def stage(self, src_store: Path, apps: Mapping[str, str]) -> None:
        return None

    async def start(self, apps: Mapping[str, str]) -> None:
        return None

    async def in_place(self, apps: Mapping[str, str]) -> bool:
        return True

    async def retire(self, keep: Mapping[str, str]) -> None:
        return None

    async def states(self, apps: Mapping[str, str]) -> dict[str, str]:
        return {}


def device_facts(config: Config) -> DeviceFacts:
    """Hardware id, type, tags and app shortlist, as selection needs them."""
    return DeviceFacts(
        hardware_id=config.provision.hardware_id,
        device_type=config.aklited.device_type,
        tags=tuple(config.pacman.tags),
        compose_apps=config.pacman.compose_apps,
        with_apps=config.pacman.type != "ostree",
    )


def engine_settings(config: Config) -> EngineSettings:
    return EngineSettings(
        lock_path=config.aklited.lock_path,
        reboot_sentinel=config.bootloader.reboot_sentinel_dir / "need_reboot",
        current_target_path=config.storage.current_target_path,
    )


@asynccontextmanager
async def build_engine(
    config: Config,
    *,
    observer: EngineObserver | None = None,
    services: ServiceManager | None = None,
) -> AsyncIterator[Engine]:
    """The engine for this device, with every connection closed on exit."""
    store = await asyncio.to_thread(Store.open, config.storage.db_path)
    own_services = services is None
    manager = services if services is not None else await connect_systemd()
    apps = ComposeApps(
        store_root=config.pacman.reset_apps_root,
        compose_root=config.pacman.compose_apps_root,
        docker_host=config.aklited.docker_host,
        compose_bin=config.pacman.docker_compose_bin,
    )
    try:
        yield Engine(
            store=store,
            trust=BundleTrust(
                store=store,
                device=device_facts(config),
                provisioned_roots=config.storage.uptane_metadata_path / config.aklited.device_type,
            ),
            rootfs=OstreeRootfs(
                OstreeSysroot(
                    sysroot=config.pacman.sysroot,
                    osname=config.pacman.os,
                    kernel_cmdline=config.aklited.kernel_cmdline,
                )
            ),
            apps=ComposeAppsPort(apps) if config.pacman.type != "ostree" else NoApps(),
            services=manager,
            settings=engine_settings(config),
            observer=observer,
        )
    finally:
        await apps.close()
        if own_services:
            await manager.close()
        await asyncio.to_thread(store.close)
