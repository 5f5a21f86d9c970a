"""``aklite-offline check -s DIR``: what would an install do? Changes nothing on the device.

The journal is opened read-only and wrapped in an in-memory overlay, so the verification
workflow runs exactly as for an install while every write stays in memory. Plain ``check``
verifies the metadata; ``--deep`` also verifies every byte an install would (the OSTree
commit object by object, every app blob, manifest and archive), writing nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from aklited.bundle.content import verify_target_content
from aklited.bundle.select import SelectedTarget, select_target
from aklited.bundle.verify import VerifiedBundle, verify_bundle
from aklited.cli.offline import print_error
from aklited.config import Config
from aklited.engine.journal import InstallRecord, Store
from aklited.engine.phases import INITIAL_TARGET, downgrade_guard
from aklited.errors import AkliteError
from aklited.outcomes import StatusCode
from aklited.trust.storage import OverlayTrustStore
from aklited.wiring import device_facts

if TYPE_CHECKING:
    from aklited.apps.adapter import ComposeApps


async def check(config: Config, src_dir: Path, *, deep: bool = False) -> int:
    """Verify the bundle in ``src_dir`` and report the target an install would choose.

    Prints the chosen target and the reason on stdout; one error line on stderr.

    Returns:
        16 a newer target is installable, 0 the device already runs the bundle's target,
        else the failure's code (4, 6, 8, 11, 12, 14, 15, 20, 102; with ``deep`` also 50
        and 70 for the content, as an install would answer).
    """
    device = device_facts(config)
    store: Store | None = None
    try:
        store = await asyncio.to_thread(Store.open_readonly, config.storage.db_path)
        bundle = await verify_bundle(
            src_dir,
            store=OverlayTrustStore(store),
            device=device,
            provisioned_roots=config.storage.uptane_metadata_path / config.aklited.device_type,
        )
        current = await asyncio.to_thread(store.current_install) if store else None
        current_version, current_name = downgrade_guard(
            current.target_name if current else None, current.version if current else None
        )
        selected = await select_target(
            bundle, device, current_version=current_version, current_name=current_name
        )
        content = await verify_content(config, bundle, selected) if deep else None
    except AkliteError as e:
        print_error(e)
        return int(e.code)
    finally:
        if store is not None:
            await asyncio.to_thread(store.close)
    if bundle.metadata.from_store:
        print("Note: the bundle's metadata is older than the device's; stored metadata used")
    _print_target(selected)
    print(f"Content: {content or 'not verified (metadata only; --deep verifies every byte)'}")
    if current is not None and current.target_name == selected.name:
        print(f"Status: the device already runs {selected.name}; nothing to install")
        return int(StatusCode.OK)
    print(f"Status: {_reason(selected, current)}")
    return int(StatusCode.UPDATE_AVAILABLE)


async def verify_content(config: Config, bundle: VerifiedBundle, target: SelectedTarget) -> str:
    """Verify every byte of ``target`` that an install would verify; say what was checked.

    Raises:
        AkliteError: 50 the drive could not be read, 70 content is unsafe or does not match,
            8 content is missing.
    """
    device = device_facts(config)

    def apps_reader() -> ComposeApps:
        from aklited.apps.adapter import ComposeApps  # noqa: PLC0415 - Docker client libraries

        return ComposeApps(
            store_root=config.pacman.reset_apps_root,
            compose_root=config.pacman.compose_apps_root,
            docker_host=config.aklited.docker_host,
            compose_bin=config.pacman.docker_compose_bin,
        )

    report = await verify_target_content(
        bundle.layout.root,
        target.ostree_commit,
        target.apps if device.with_apps else {},
        apps_reader=apps_reader,
        shortlist=device.compose_apps,
    )
    parts = [
        f"OSTree commit verified ({report.objects} file objects hashed)"
        if report.objects
        else "OSTree commit checked (not an archive repo: objects checked, not hashed)"
    ]
    if report.apps:
        parts.append(f"{report.apps} apps verified ({report.blobs} blobs hashed)")
    return "; ".join(parts)


def _print_target(target: SelectedTarget) -> None:
    print(f"Target: {target.name}")
    print(f"Version: {target.version}")
    print(f"OSTree commit: {target.ostree_commit}")
    apps = ", ".join(f"{name} ({uri})" for name, uri in sorted(target.apps.items()))
    print(f"Apps: {apps or 'none'}")


def _reason(target: SelectedTarget, current: InstallRecord | None) -> str:
    if current is None:
        return f"{target.name} can be installed (the device has no recorded target)"
    if current.target_name == INITIAL_TARGET:
        return f"{target.name} can be installed over the image the device was flashed with"
    if target.version > current.version:
        return (
            f"{target.name} can be installed: version {target.version} is newer than "
            f"{current.target_name} (version {current.version})"
        )
    return (
        f"{target.name} can be installed: it replaces {current.target_name} "
        f"(version {current.version}) at the same version"
    )
