"""``aklite-offline check -s DIR``: what would an install do? Changes nothing on the device.

The journal is opened read-only and wrapped in an in-memory overlay, so the verification
workflow runs exactly as for an install while every write stays in memory.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aklited.bundle import DeviceFacts, SelectedTarget, select_target, verify_bundle
from aklited.config import Config
from aklited.errors import AkliteError
from aklited.phases import INITIAL_TARGET, downgrade_guard
from aklited.status import StatusCode
from aklited.store import InstallRecord, Store
from aklited.tuf.storage import OverlayTrustStore


async def check(config: Config, src_dir: Path) -> int:
    """Verify the bundle in ``src_dir`` and report the target an install would choose.

    Prints the chosen target and the reason on stdout; one error line on stderr.

    Returns:
        16 a newer target is installable, 0 the device already runs the bundle's target,
        else the failure's code (4, 6, 8, 11, 12, 14, 15, 20, 102).
    """
    device = DeviceFacts.from_config(config)
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
    except AkliteError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return int(e.code)
    finally:
        if store is not None:
            await asyncio.to_thread(store.close)
    if bundle.metadata.from_store:
        print("Note: the bundle's metadata is older than the device's; stored metadata used")
    _print_target(selected)
    if current is not None and current.target_name == selected.name:
        print(f"Status: the device already runs {selected.name}; nothing to install")
        return int(StatusCode.OK)
    print(f"Status: {_reason(selected, current)}")
    return int(StatusCode.UPDATE_AVAILABLE)


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
