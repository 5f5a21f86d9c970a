"""The TUF client workflow on a pluggable source, persisting only what verified.

Policy lives here, checks live in :class:`~aklited.trust.trusted.TrustedSet`:

* the first trusted root comes from the store, else from the device's pre-provisioned
  chain (``<uptane_metadata_path>/<ci|prod>/N.root.json``, walked from its lowest version
  upwards, as aktualizr-lite imports it);
* roots rotate one version at a time from the source, at most ``max_rotations`` times;
* each role is saved to the store as soon as it verified, so a later failure keeps what
  was proven;
* a source older than the store (rollback) falls back to the stored metadata when that
  still verifies and has not expired, as aktualizr-lite does for offline bundles, and the
  result says so (``from_store`` and ``rollback``); ``fallback_to_store=False`` refuses it;
* delegated targets roles (TUF dialect) are walked depth first from the top-level targets
  in delegation order, each verified with its delegator's keys, checked against snapshot
  meta and expiry, and saved; every role any delegation reaches must be valid (one the
  snapshot does not list is skipped: it offers no targets), at most
  ``max_delegations`` of them are loaded, and the targets are then resolved as the TUF
  search would (:mod:`aklited.trust.delegations`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from aklited.errors import MetadataRejectedError, TrustError
from aklited.trust.delegations import MAX_DELEGATIONS, TOP_LEVEL, resolve_targets
from aklited.trust.errors import MetadataRollbackError, missing_error, security_error
from aklited.trust.keys import Dialect
from aklited.trust.metadata import (
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
    delegated_filename,
)
from aklited.trust.source import DirectorySource, MetadataSource
from aklited.trust.storage import TrustStore, delegated_key
from aklited.trust.trusted import TrustedSet

log = structlog.get_logger(__name__)

MAX_ROOT_ROTATIONS = 1000  # aktualizr's kMaxRotations


@dataclass(frozen=True, slots=True)
class VerifiedMetadata:
    """The outcome of a successful run.

    Attributes:
        dialect: Dialect of the metadata set.
        root: The final root.
        timestamp: The trusted timestamp.
        snapshot: The trusted snapshot.
        targets: The trusted top-level targets.
        from_store: True when the source was older than the device's metadata and the
            stored copy was used instead (aktualizr-lite's ``CHECKIN_OK_CACHED``).
        rotations: How many roots the source rotated through.
        rollback: With ``from_store``: the one-line message naming the source's file
            that is older than the stored one, and both versions.
        delegated: Trusted delegated targets roles by name, in search order.
        all_targets: Every target the search resolves, top-level and delegated, to the
            entry of the role that provides it.
        target_roles: For each of ``all_targets``, the role that provides it.
        delegations_truncated: More roles were delegated than ``max_delegations``; the
            ones not loaded provide no targets.
    """

    dialect: Dialect
    root: Metadata[Root]
    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]
    from_store: bool
    rotations: int
    rollback: str | None = None
    delegated: Mapping[str, Metadata[Targets]] = field(default_factory=dict)
    all_targets: Mapping[str, TargetFile] = field(default_factory=dict)
    target_roles: Mapping[str, str] = field(default_factory=dict)
    delegations_truncated: bool = False


class TrustWorkflow:
    """One verification run: trusted root, root rotations, timestamp, snapshot, targets.

    All methods block (file reads, signature checks): run them in a worker thread.
    """

    def __init__(
        self,
        *,
        source: MetadataSource,
        store: TrustStore,
        reference_time: datetime | None = None,
        provisioned_roots: Path | None = None,
        max_rotations: int = MAX_ROOT_ROTATIONS,
        max_delegations: int = MAX_DELEGATIONS,
        fallback_to_store: bool = True,
        label_prefix: str = "",
    ) -> None:
        """Args:
        source: Where new metadata comes from (a bundle's ``tuf/``).
        store: Trusted metadata; written only with verified bytes.
        reference_time: The one instant every expiry check uses (default: now).
        provisioned_roots: Directory of pre-provisioned ``N.root.json`` used when the
            store has no root yet.
        max_rotations: Most root versions one run may rotate through.
        max_delegations: Most delegated targets roles one run loads.
        fallback_to_store: Use stored metadata when the source is older (rollback);
            False refuses it (11, :class:`MetadataRollbackError`).
        label_prefix: Prefix of file names in messages (``"tuf/"``).
        """
        self.source = source
        self.store = store
        self.reference_time = reference_time or datetime.now(UTC)
        self.provisioned_roots = provisioned_roots
        self.max_rotations = max_rotations
        self.max_delegations = max_delegations
        self.fallback_to_store = fallback_to_store
        self.label_prefix = label_prefix
        self._trusted: TrustedSet | None = None
        self._rotations = 0

    @property
    def trusted(self) -> TrustedSet:
        """The trusted set (after :meth:`update_root`)."""
        if self._trusted is None:
            raise RuntimeError("call update_root() first")
        return self._trusted

    def refresh(self) -> VerifiedMetadata:
        """Run the whole workflow.

        Raises:
            TrustError: 11 failed check, 12 expired, 14 missing file, 4 I/O error.
        """
        self.update_root()
        return self.update_top_level()

    def update_root(self) -> Metadata[Root]:
        """Load the trusted root, rotate through the source's newer roots, check expiry.

        Returns:
            The final root.
        """
        trusted = self._load_trusted_root()
        self._trusted = trusted
        initial = trusted.root.signed
        version = trusted.root.version + 1
        while (raw := self.source.fetch_root(version)) is not None:
            self._rotations += 1
            if self._rotations > self.max_rotations:
                raise security_error(
                    f"{self.label_prefix}{version}.root.json",
                    f"more than {self.max_rotations} root rotations in one update",
                )
            trusted.update_root(raw, filename=f"{self.label_prefix}{version}.root.json")
            self.store.tuf_save("root", version, raw)
            version += 1
        final = trusted.root.signed
        if self._rotations:
            log.info("root rotated", rotations=self._rotations, version=final.version)
            # Spec 5.3.11: new timestamp or snapshot keys make the stored copies useless
            # for rollback protection; forget them so they cannot block recovery.
            if any(initial.roles[r] != final.roles[r] for r in ("timestamp", "snapshot")):
                self.store.tuf_forget("timestamp")
                self.store.tuf_forget("snapshot")
        trusted.check_root_expiry()
        return trusted.root

    def _load_trusted_root(self) -> TrustedSet:
        stored = self.store.tuf_latest("root")
        if stored is not None:
            return TrustedSet(
                stored, reference_time=self.reference_time, filename="trusted root.json"
            )
        if self.provisioned_roots is None:
            raise missing_error("trusted root.json", "the device has no trusted root")
        provisioned = DirectorySource(self.provisioned_roots, boundary=self.provisioned_roots)
        versions = provisioned.root_versions()
        if not versions:
            raise missing_error(
                str(self.provisioned_roots), "holds no N.root.json and the device trusts no root"
            )
        first = versions[0]
        first_raw = provisioned.fetch_root(first)
        if first_raw is None:
            raise missing_error(f"{self.provisioned_roots}/{first}.root.json")
        trusted = TrustedSet(
            first_raw,
            reference_time=self.reference_time,
            filename=str(self.provisioned_roots / f"{first}.root.json"),
        )
        # The version inside the file, not the one in its name: only the former is range-checked.
        self.store.tuf_save("root", trusted.root.version, first_raw)
        version = first + 1
        while (raw := provisioned.fetch_root(version)) is not None:
            trusted.update_root(raw, filename=str(self.provisioned_roots / f"{version}.root.json"))
            self.store.tuf_save("root", version, raw)
            version += 1
        log.info(
            "imported provisioned roots", path=str(self.provisioned_roots), version=version - 1
        )
        return trusted

    def update_top_level(self) -> VerifiedMetadata:
        """Timestamp, snapshot and targets after :meth:`update_root`.

        Raises:
            TrustError: 11 failed check or rollback without usable stored copy,
                12 expired, 14 missing file, 4 I/O error.
        """
        trusted = self.trusted
        prefix = self.label_prefix
        self._try_stored(
            "timestamp",
            lambda raw: trusted.update_timestamp(raw, filename="trusted timestamp.json"),
        )
        raw = self._required(self.source.fetch_timestamp(), "timestamp.json")
        try:
            if trusted.update_timestamp(raw, filename=f"{prefix}timestamp.json"):
                self.store.tuf_save("timestamp", self._version(trusted.timestamp), raw)
        except MetadataRollbackError as e:
            return self._fall_back(e)
        timestamp = trusted.timestamp
        assert timestamp is not None

        stored_snapshot_ok = self._try_stored(
            "snapshot",
            lambda raw: trusted.update_snapshot(
                raw, filename="trusted snapshot.json", trusted=True
            ),
        )
        if not stored_snapshot_ok:
            raw = self._required(
                self.source.fetch_snapshot(timestamp.signed.snapshot.version), "snapshot.json"
            )
            try:
                trusted.update_snapshot(raw, filename=f"{prefix}snapshot.json")
            except MetadataRollbackError as e:
                return self._fall_back(e)
            self.store.tuf_save("snapshot", self._version(trusted.snapshot), raw)
        snapshot = trusted.snapshot
        assert snapshot is not None

        stored_targets_ok = self._try_stored(
            "targets", lambda raw: trusted.update_targets(raw, filename="trusted targets.json")
        )
        if not stored_targets_ok:
            listed = snapshot.signed.meta["targets.json"].version
            raw = self._required(self.source.fetch_targets(listed), "targets.json")
            trusted.update_targets(raw, filename=f"{prefix}targets.json")
            self.store.tuf_save("targets", self._version(trusted.targets), raw)
        truncated = self._load_delegations(trusted)
        return self._result(trusted, truncated=truncated)

    def _load_delegations(self, trusted: TrustedSet) -> bool:
        """Load every delegated role the top-level targets reach, pre-order depth first.

        Returns:
            True when the walk stopped at ``max_delegations`` roles.

        Raises:
            TrustError: 11 failed check, 12 expired, 14 missing file, 4 I/O error.
        """
        targets = trusted.targets
        assert targets is not None
        if targets.signed.delegations is None:
            return False
        # Iterators, not lists: hash bins may number 2**32.
        stack: list[tuple[str, Iterator[str]]] = [
            (TOP_LEVEL, targets.signed.delegations.role_names())
        ]
        truncated = False
        while stack and not truncated:
            delegator, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
            elif child in trusted.delegated:
                trusted.verify_delegation(child, delegator)
            elif len(trusted.delegated) >= self.max_delegations:
                truncated = True
            elif not self._listed(trusted, child, delegator):
                continue
            else:
                loaded = self._load_delegated(trusted, child, delegator)
                if loaded.signed.delegations is not None:
                    stack.append((child, loaded.signed.delegations.role_names()))
        if truncated:
            log.warning(
                "delegated roles beyond the limit are not loaded; their targets are not offered",
                limit=self.max_delegations,
            )
            self._verify_loaded_delegations(trusted)
        return truncated

    @staticmethod
    def _verify_loaded_delegations(trusted: TrustedSet) -> None:
        # The walk stopped early, so some delegations between loaded roles were never
        # checked; a search may still follow them.
        targets = trusted.targets
        assert targets is not None
        delegators = {TOP_LEVEL: targets, **trusted.delegated}
        for delegator, metadata in delegators.items():
            delegations = metadata.signed.delegations
            if delegations is None:
                continue
            for child in trusted.delegated:
                if delegations.keys_for(child) is not None:
                    trusted.verify_delegation(child, delegator)

    def _listed(self, trusted: TrustedSet, role: str, delegator: str) -> bool:
        """Whether the snapshot lists ``role``. An unlisted role is not loaded (nor its stored
        copy): a search that reaches it stops there, so none of its targets is offered, and
        the rest of the repository stays usable, as python-tuf's lazy search has it."""
        snapshot = trusted.snapshot
        assert snapshot is not None
        if f"{role}.json" in snapshot.signed.meta:
            return True
        log.warning(
            "delegated role not in snapshot.json: its targets are not offered",
            role=role,
            delegator=delegator,
        )
        return False

    def _load_delegated(self, trusted: TrustedSet, role: str, delegator: str) -> Metadata[Targets]:
        """The stored copy of ``role`` when still valid, else the source's (then saved)."""
        key = delegated_key(role)
        try:
            filename = delegated_filename(role)
        except ValueError as e:  # parse_targets refuses such names: defence in depth
            parent = "targets.json" if delegator == TOP_LEVEL else delegated_filename(delegator)
            raise security_error(f"{self.label_prefix}{parent}", str(e)) from e
        stored = self.store.tuf_latest(key)
        if stored is not None:
            try:
                return trusted.update_delegated_targets(
                    stored, role=role, delegator=delegator, filename=f"trusted {filename}"
                )
            except TrustError as e:
                log.debug("stored metadata not usable as final", role=role, reason=str(e))
        label = f"{self.label_prefix}{filename}"
        snapshot = trusted.snapshot
        assert snapshot is not None
        listed = snapshot.signed.meta[f"{role}.json"]  # _listed said so
        raw = self._required(self.source.fetch_delegated(role, listed.version), filename)
        loaded = trusted.update_delegated_targets(
            raw, role=role, delegator=delegator, filename=label
        )
        self.store.tuf_save(key, loaded.version, raw)
        return loaded

    def _try_stored(self, role: str, load: Callable[[bytes], object]) -> bool:
        """Load the stored copy of ``role``; True when it is valid as the final one.

        A stored copy that fails only its final checks stays loaded as the reference
        for rollback protection; one that fails to verify is ignored.
        """
        raw = self.store.tuf_latest(role)
        if raw is None:
            return False
        try:
            load(raw)
        except TrustError as e:
            log.debug("stored metadata not usable as final", role=role, reason=str(e))
            return False
        return True

    def _required(self, raw: bytes | None, name: str) -> bytes:
        if raw is None:
            raise missing_error(f"{self.label_prefix}{name}")
        return raw

    @staticmethod
    def _version(
        metadata: Metadata[Timestamp] | Metadata[Snapshot] | Metadata[Targets] | None,
    ) -> int:
        assert metadata is not None
        return metadata.version

    def _fall_back(self, error: MetadataRollbackError) -> VerifiedMetadata:
        """The source is older than the store: continue with the stored metadata if valid."""
        if not self.fallback_to_store:
            raise error
        trusted = self.trusted
        fresh = TrustedSet(
            trusted.root.envelope.raw,
            reference_time=self.reference_time,
            filename=trusted.root.envelope.filename,
            dialect=trusted.dialect,
        )
        stored = {
            role: self.store.tuf_latest(role) for role in ("timestamp", "snapshot", "targets")
        }
        stored_timestamp, stored_snapshot, stored_targets = stored.values()
        if stored_timestamp is None or stored_snapshot is None or stored_targets is None:
            raise error
        try:
            fresh.update_timestamp(stored_timestamp, filename="stored timestamp.json")
            fresh.update_snapshot(stored_snapshot, filename="stored snapshot.json", trusted=True)
            fresh.update_targets(stored_targets, filename="stored targets.json")
            truncated = self._load_delegations(fresh)
        except TrustError as stored_error:
            log.warning("stored metadata unusable", reason=str(stored_error))
            raise MetadataRejectedError(
                f"{error.message}; the device's stored metadata is not usable either "
                f"({stored_error.message})"
            ) from stored_error
        # Callers say it to their user (result.rollback): a warning here would say it twice.
        log.info("source metadata older than the device's; using stored", reason=error.message)
        return self._result(fresh, truncated=truncated, rollback=error.message)

    def _result(
        self, trusted: TrustedSet, *, truncated: bool, rollback: str | None = None
    ) -> VerifiedMetadata:
        timestamp, snapshot, targets = trusted.timestamp, trusted.snapshot, trusted.targets
        assert timestamp is not None and snapshot is not None and targets is not None
        delegated = dict(trusted.delegated)
        resolved = resolve_targets(
            targets.signed,
            {name: role.signed for name, role in delegated.items()},
            max_delegations=self.max_delegations,
        )
        return VerifiedMetadata(
            dialect=trusted.dialect,
            root=trusted.root,
            timestamp=timestamp,
            snapshot=snapshot,
            targets=targets,
            from_store=rollback is not None,
            rotations=self._rotations,
            rollback=rollback,
            delegated=delegated,
            all_targets={name: found.target for name, found in resolved.items()},
            target_roles={name: found.role for name, found in resolved.items()},
            delegations_truncated=truncated,
        )
