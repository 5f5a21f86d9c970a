"""The engine's trust port: verify a bundle's metadata, then select its target.

The one verify+select both front ends use, for ``check`` (``persist=False``: what verified
stays in memory) and for ``install`` (what verified is kept in the journal).
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from aklited.bundle.device import DeviceFacts
from aklited.engine.model import GuardTarget, Selection, Target

if TYPE_CHECKING:
    from aklited.bundle.verify import VerifiedBundle
    from aklited.trust.storage import TrustStore

_TRUST_MODULES = ("aklited.bundle.verify", "aklited.bundle.select", "aklited.trust.storage")


async def _trust_modules() -> tuple[ModuleType, ...]:
    # The TUF stack (the crypto library with it, about 10 MiB) is loaded with the first
    # bundle, off the loop (importing reads files): a daemon waiting for its first drive,
    # which is most of its life, does not carry it.
    return await asyncio.to_thread(lambda: tuple(map(importlib.import_module, _TRUST_MODULES)))


class BundleTrust:
    """TrustPort over the TUF workflow and target selection."""

    def __init__(self, *, store: TrustStore, device: DeviceFacts, provisioned_roots: Path) -> None:
        self._store = store
        self._device = device
        self._provisioned_roots = provisioned_roots

    async def select(
        self,
        src_dir: Path,
        *,
        target_name: str | None,
        force: bool,
        guard: GuardTarget | None,
        persist: bool,
    ) -> Selection:
        verify, select, storage = await _trust_modules()
        bundle: VerifiedBundle = await verify.verify_bundle(
            src_dir,
            store=self._store if persist else storage.OverlayTrustStore(self._store),
            device=self._device,
            provisioned_roots=self._provisioned_roots,
        )
        selected = await select.select_target(
            bundle,
            self._device,
            target_name=target_name,
            current_version=guard.version if guard else None,
            current_name=guard.name if guard else None,
            force=force,
        )
        target = Target(
            name=selected.name,
            version=selected.version,
            ostree_commit=selected.ostree_commit,
            apps=dict(selected.apps),
            custom=dict(selected.custom),
            tag=bundle.manifest.tag or None,
        )
        return Selection(target=target, stored_metadata_used=_rollback_note(bundle))


def _rollback_note(bundle: VerifiedBundle) -> str | None:
    """Why the drive's newer-looking target was not considered, when it was not."""
    if not bundle.metadata.from_store:
        return None
    reason = f" ({bundle.metadata.rollback})" if bundle.metadata.rollback else ""
    return f"the drive's TUF metadata is older than the device's{reason}; stored metadata used"
