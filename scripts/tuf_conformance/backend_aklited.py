"""The aklited verifier back-end: TrustWorkflow as ``aklite-bundle verify`` builds it.

:class:`aklited.trust.workflow.TrustWorkflow` on a :class:`~aklited.trust.source.DirectorySource`
with a :class:`~aklited.trust.storage.DirectoryTrustStore` over the suite's metadata directory,
``fallback_to_store=False`` (a bundle older than the trusted metadata fails).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from adapter import AdapterError, TargetInfo, log, role_filename, target_info

from aklited.trust import storage
from aklited.trust.source import DEFAULT_LIMITS, DirectorySource, read_bounded
from aklited.trust.storage import ROLES, DirectoryTrustStore
from aklited.trust.trusted import TrustedSet
from aklited.trust.workflow import TrustWorkflow, VerifiedMetadata

# Method names a delegation-aware VerifiedMetadata might offer (first found wins).
TARGET_RESOLVERS = ("find_target", "get_targetinfo", "resolve_target", "lookup_target")

# Set when aklited's DirectoryTrustStore keeps delegated roles itself (``delegated:<name>``).
NATIVE_DELEGATED_PREFIX: str | None = getattr(storage, "DELEGATED_PREFIX", None)


class ConformanceTrustStore(DirectoryTrustStore):
    """DirectoryTrustStore, plus ``<quoted role>.json`` for any role name it refuses.

    The suite reads ``root.json``, ``timestamp.json``, ``snapshot.json``, ``targets.json``
    and ``<quoted role>.json`` per delegated role. DirectoryTrustStore uses those names for
    the top-level roles; when it knows delegated roles too, it is used unchanged for them,
    otherwise this adds the suite's naming for whatever other role names a workflow saves.
    """

    def _native(self, role: str) -> bool:
        prefix = NATIVE_DELEGATED_PREFIX
        return role in ROLES or (prefix is not None and role.startswith(prefix))

    def _path(self, role: str) -> Path:
        if self._native(role):
            return super()._path(role)
        return self.directory / role_filename(role)

    def tuf_latest(self, role: str) -> bytes | None:
        """Return the role's file or None (other role names: the targets size limit)."""
        if self._native(role):
            return super().tuf_latest(role)
        path = self._path(role)
        return read_bounded(
            path, limit=DEFAULT_LIMITS.targets, boundary=self.directory, label=str(path)
        )


class AkliteVerifier:
    """aklited's TrustWorkflow, as ``aklite-bundle verify`` builds it."""

    def __init__(self, metadata_dir: Path, tuf_dir: Path) -> None:
        """Args:
        metadata_dir: Trusted metadata (the suite's ``--metadata-dir``).
        tuf_dir: The bundle's ``tuf/`` directory.
        """
        self.metadata_dir = metadata_dir
        self.tuf_dir = tuf_dir
        self.store = ConformanceTrustStore(metadata_dir)
        self.verified: VerifiedMetadata | None = None

    def load_trusted_root(self) -> None:
        """Parse and self-verify the stored root, as the workflow's first step does."""
        raw = self.store.tuf_latest("root")
        if raw is None:
            raise AdapterError(f"{self.metadata_dir}/root.json: missing")
        TrustedSet(raw, reference_time=datetime.now(UTC), filename="trusted root.json")

    def verify(self) -> None:
        """Root rotations, timestamp, snapshot, targets; each saved as soon as it verified."""
        source = DirectorySource(self.tuf_dir, boundary=self.tuf_dir.resolve().parent)
        workflow = TrustWorkflow(
            source=source,
            store=self.store,
            label_prefix=f"{self.tuf_dir.name}/",
            fallback_to_store=False,
        )
        self.verified = workflow.refresh()

    def find_target(self, path: str) -> TargetInfo | None:
        """The target as the verified metadata resolves it.

        ``VerifiedMetadata.all_targets`` (every target the delegation search resolves)
        when the verifier has it, else a resolver method on it, else top-level targets.
        """
        verified = self.verified
        if verified is None:
            raise RuntimeError("verify() first")
        resolved = getattr(verified, "all_targets", None)
        if resolved is not None:
            log.info("resolving %r in VerifiedMetadata.all_targets", path)
            return target_info(path, resolved.get(path))
        for name in TARGET_RESOLVERS:
            resolver = getattr(verified, name, None)
            if callable(resolver):
                log.info("resolving %r with VerifiedMetadata.%s", path, name)
                return target_info(path, resolver(path))
        log.info("resolving %r in the top-level targets only", path)
        return target_info(path, verified.targets.signed.targets.get(path))


Verifier = AkliteVerifier
