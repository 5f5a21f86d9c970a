"""The engine's trust port: verify a bundle's metadata, then select its target.

The one verify+select both front ends use, for ``check`` (``persist=False``: what verified
stays in memory) and for ``install`` (what verified is kept in the journal).
"""

from __future__ import annotations

from pathlib import Path

from aklited.bundle.device import DeviceFacts
from aklited.bundle.select import select_target
from aklited.bundle.verify import VerifiedBundle, verify_bundle
from aklited.engine.model import GuardTarget, Selection, Target
from aklited.trust.storage import OverlayTrustStore, TrustStore


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
        bundle = await verify_bundle(
            src_dir,
            store=self._store if persist else OverlayTrustStore(self._store),
            device=self._device,
            provisioned_roots=self._provisioned_roots,
        )
        selected = await select_target(
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
