"""The trusted set: verified metadata, changed only by forward-only ``update_*`` calls.

It does no I/O and raises on anything invalid (TUF client workflow, spec 5.3-5.6); the
orchestrator in :mod:`aklited.trust.workflow` decides what a failure means. One reference
time is used for every expiry check of a run.

Example::

    trusted = TrustedSet(stored_root, reference_time=now)
    trusted.update_root(bundle_root_v4)          # threshold of v3 and v4, version == 4
    trusted.update_timestamp(timestamp_bytes)
    trusted.update_snapshot(snapshot_bytes)
    trusted.update_targets(targets_bytes)
    trusted.update_delegated_targets(role_bytes, role="fw", delegator="targets", ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from aklited.errors import MetadataRejectedError
from aklited.trust.errors import MetadataRollbackError, expired_error, security_error
from aklited.trust.keys import Dialect, PublicKey
from aklited.trust.metadata import (
    Envelope,
    Metadata,
    RoleKeys,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    brief,
    delegated_filename,
    detect_dialect,
    format_time,
    parse_envelope,
    parse_root,
    parse_snapshot,
    parse_targets,
    parse_timestamp,
)


def verify_signatures(
    envelope: Envelope, keys: Mapping[str, PublicKey], spec: RoleKeys, *, signers: str
) -> None:
    """Check that ``envelope`` carries ``spec.threshold`` valid signatures by ``spec``'s keys.

    Each distinct key counts once, however many key ids name it.

    Args:
        envelope: The file.
        keys: Key ids to keys (a root's, or a delegator's ``delegations.keys``).
        spec: The key ids allowed to sign and how many must.
        signers: Who those keys are, for the message (``"targets keys of root v3"``).

    Raises:
        TrustError: 11 when the threshold is not met.
    """
    valid: set[bytes] = set()
    for keyid, signature in envelope.signatures:
        key = keys.get(keyid)
        if keyid not in spec.keyids or key is None or signature is None:
            continue
        if key.verify(signature, envelope.signed_bytes):
            valid.add(key.material)
    if len(valid) < spec.threshold:
        raise security_error(
            envelope.filename,
            f"{len(valid)} valid signature(s) by {signers}, {spec.threshold} required",
        )


def verify_role(envelope: Envelope, root: Root, role: str) -> None:
    """Check that ``envelope`` carries a threshold of valid signatures by ``role``'s keys.

    Raises:
        TrustError: 11 when the threshold is not met.
    """
    verify_signatures(
        envelope, root.keys, root.roles[role], signers=f"{role} keys of root v{root.version}"
    )


def is_expired(expires: datetime, reference_time: datetime) -> bool:
    """True when metadata expiring at ``expires`` is expired at ``reference_time``."""
    return reference_time >= expires


class TrustedSet:
    """Verified top-level metadata of one run.

    Attributes:
        dialect: The dialect of the trusted root; every later file must use it.
        reference_time: The single instant every expiry check compares against.
    """

    def __init__(
        self,
        root_raw: bytes,
        *,
        reference_time: datetime,
        filename: str = "root.json",
        dialect: Dialect | None = None,
    ) -> None:
        """Load a root that is already trusted (it must still be signed by itself).

        Raises:
            TrustError: 11 when the root cannot be parsed or is not self-signed.
        """
        self.dialect = dialect or detect_dialect(root_raw, filename)
        self.reference_time = reference_time
        root = parse_root(
            parse_envelope(root_raw, role="root", filename=filename, dialect=self.dialect)
        )
        verify_role(root.envelope, root.signed, "root")
        self._root = root
        self._timestamp: Metadata[Timestamp] | None = None
        self._snapshot: Metadata[Snapshot] | None = None
        self._targets: Metadata[Targets] | None = None
        self._delegated: dict[str, Metadata[Targets]] = {}

    @property
    def root(self) -> Metadata[Root]:
        """The newest trusted root."""
        return self._root

    @property
    def timestamp(self) -> Metadata[Timestamp] | None:
        """The trusted timestamp, if loaded."""
        return self._timestamp

    @property
    def snapshot(self) -> Metadata[Snapshot] | None:
        """The trusted snapshot, if loaded."""
        return self._snapshot

    @property
    def targets(self) -> Metadata[Targets] | None:
        """The trusted targets, if loaded."""
        return self._targets

    @property
    def delegated(self) -> Mapping[str, Metadata[Targets]]:
        """Trusted delegated targets roles by name, in the order they were loaded."""
        return self._delegated

    def update_root(self, raw: bytes, *, filename: str) -> Metadata[Root]:
        """Rotate to the next root (spec 5.3.4-5.3.9).

        The new root must be signed by a threshold of the trusted root's root keys and of
        its own, and its version must be exactly one higher.

        Raises:
            RuntimeError: Called after the timestamp was loaded (a programming error).
            TrustError: 11 on any failed check.
        """
        if self._timestamp is not None:
            raise RuntimeError("roots cannot rotate after the timestamp is loaded")
        envelope = parse_envelope(raw, role="root", filename=filename, dialect=self.dialect)
        new_root = parse_root(envelope)
        verify_role(envelope, self._root.signed, "root")
        expected = self._root.version + 1
        if new_root.version != expected:
            raise security_error(
                filename, f"has version {new_root.version}, expected {expected} (no skipping)"
            )
        verify_role(envelope, new_root.signed, "root")
        self._root = new_root
        return new_root

    def check_root_expiry(self) -> None:
        """Refuse an expired final root (spec 5.3.10, freeze attack).

        Raises:
            TrustError: 12.
        """
        root = self._root
        if is_expired(root.signed.expires, self.reference_time):
            raise expired_error(root.envelope.filename, format_time(root.signed.expires))

    def update_timestamp(self, raw: bytes, *, filename: str = "timestamp.json") -> bool:
        """Load a timestamp (spec 5.4).

        An equal version keeps the trusted one (returns False). An expired timestamp is
        loaded and then refused (12), so it still guards against rollback.

        Returns:
            True when ``raw`` became the trusted timestamp.

        Raises:
            RuntimeError: Called after the snapshot was loaded.
            MetadataRollbackError: Version or snapshot version lower than trusted (11).
            TrustError: 11 on any other failed check, 12 when expired.
        """
        if self._snapshot is not None:
            raise RuntimeError("the timestamp cannot change after the snapshot is loaded")
        self.check_root_expiry()
        envelope = parse_envelope(raw, role="timestamp", filename=filename, dialect=self.dialect)
        new = parse_timestamp(envelope)
        verify_role(envelope, self._root.signed, "timestamp")
        old = self._timestamp
        if old is not None:
            if new.version < old.version:
                raise MetadataRollbackError(
                    f"{filename}: version {new.version} is older than the trusted "
                    f"version {old.version} (rollback)"
                )
            if new.version == old.version:
                return False
            if new.signed.snapshot.version < old.signed.snapshot.version:
                raise MetadataRollbackError(
                    f"{filename}: names snapshot version {new.signed.snapshot.version}, "
                    f"older than the trusted {old.signed.snapshot.version} (rollback)"
                )
        self._timestamp = new
        if is_expired(new.signed.expires, self.reference_time):
            raise expired_error(filename, format_time(new.signed.expires))
        return True

    def update_snapshot(
        self, raw: bytes, *, filename: str = "snapshot.json", trusted: bool = False
    ) -> None:
        """Load a snapshot (spec 5.5).

        Args:
            raw: The file.
            filename: Name for messages.
            trusted: The bytes come from the trusted store: skip the hash check.

        Raises:
            MetadataRollbackError: A targets version went down or disappeared (11).
            TrustError: 11 on any other failed check, 12 when it or the timestamp expired.
        """
        timestamp = self._require_timestamp()
        if self._targets is not None:
            raise RuntimeError("the snapshot cannot change after targets are loaded")
        envelope = parse_envelope(raw, role="snapshot", filename=filename, dialect=self.dialect)
        listed = timestamp.signed.snapshot
        if not trusted and (problem := envelope.matches(listed.length, listed.hashes)):
            raise security_error(filename, f"{problem} in timestamp.json")
        new = parse_snapshot(envelope)
        verify_role(envelope, self._root.signed, "snapshot")
        old = self._snapshot
        if old is not None:
            for name, old_meta in old.signed.meta.items():
                new_meta = new.signed.meta.get(name)
                if new_meta is None:
                    raise MetadataRollbackError(f"{filename}: no longer lists {name} (rollback)")
                if new_meta.version < old_meta.version:
                    raise MetadataRollbackError(
                        f"{filename}: lists {name} version {new_meta.version}, older than the "
                        f"trusted {old_meta.version} (rollback)"
                    )
        self._snapshot = new
        self._check_final_snapshot(filename)

    def update_targets(self, raw: bytes, *, filename: str = "targets.json") -> None:
        """Load the top-level targets (spec 5.6).

        Raises:
            TrustError: 11 on a failed check, 12 when it or the snapshot expired.
        """
        snapshot = self._require_snapshot()
        self._check_final_snapshot("snapshot.json")
        envelope = parse_envelope(raw, role="targets", filename=filename, dialect=self.dialect)
        listed = snapshot.signed.meta["targets.json"]
        checkable = listed.length is not None or bool(listed.hashes)
        if checkable and (problem := envelope.matches(listed.length, listed.hashes)):
            raise security_error(filename, f"{problem} in snapshot.json")
        new = parse_targets(envelope)
        verify_role(envelope, self._root.signed, "targets")
        if new.version != listed.version:
            raise security_error(
                filename, f"has version {new.version}, snapshot.json lists {listed.version}"
            )
        if is_expired(new.signed.expires, self.reference_time):
            raise expired_error(filename, format_time(new.signed.expires))
        self._targets = new

    def update_delegated_targets(
        self, raw: bytes, *, role: str, delegator: str, filename: str
    ) -> Metadata[Targets]:
        """Load delegated targets role ``role`` that ``delegator`` delegates (spec 5.6.7).

        The checks of top-level targets apply, with the delegator's keys and threshold for
        the role: length and hashes as snapshot.json lists ``<role>.json``, version equal
        to the listed one (so rollback is the snapshot's check), then expiry. Nothing
        changes when a check fails.

        Raises:
            RuntimeError: The delegator is not loaded yet (a programming error).
            TrustError: 11 on a failed check, 12 when it or the snapshot expired.
        """
        snapshot = self._require_snapshot()
        self._check_final_snapshot("snapshot.json")
        spec, keys, signers = self._delegation(role, delegator, filename)
        listed = snapshot.signed.meta.get(f"{role}.json")
        if listed is None:
            raise security_error(
                filename, f"is delegated by {delegator} but snapshot.json does not list it"
            )
        envelope = parse_envelope(raw, role="targets", filename=filename, dialect=self.dialect)
        checkable = listed.length is not None or bool(listed.hashes)
        if checkable and (problem := envelope.matches(listed.length, listed.hashes)):
            raise security_error(filename, f"{problem} in snapshot.json")
        new = parse_targets(envelope)
        verify_signatures(envelope, keys, spec, signers=signers)
        if new.version != listed.version:
            raise security_error(
                filename, f"has version {new.version}, snapshot.json lists {listed.version}"
            )
        if is_expired(new.signed.expires, self.reference_time):
            raise expired_error(filename, format_time(new.signed.expires))
        self._delegated[role] = new
        return new

    def verify_delegation(self, role: str, delegator: str) -> None:
        """Check a loaded delegated role against one more delegator of it.

        A role that two roles delegate must satisfy the keys and threshold of each, as a
        search reaching it through either would check.

        Raises:
            RuntimeError: ``role`` or the delegator is not loaded (a programming error).
            TrustError: 11 when the threshold is not met.
        """
        loaded = self._delegated.get(role)
        if loaded is None:
            raise RuntimeError(f"delegated role {role!r} is not loaded")
        spec, keys, signers = self._delegation(role, delegator, loaded.envelope.filename)
        verify_signatures(loaded.envelope, keys, spec, signers=signers)

    def _delegation(
        self, role: str, delegator: str, filename: str
    ) -> tuple[RoleKeys, Mapping[str, PublicKey], str]:
        parent = self._targets if delegator == "targets" else self._delegated.get(delegator)
        if parent is None:
            raise RuntimeError(f"load the delegator {delegator!r} first")
        delegations = parent.signed.delegations
        spec = delegations.keys_for(role) if delegations is not None else None
        if delegations is None or spec is None:
            raise security_error(filename, f"{delegator} does not delegate {brief(role)}")
        try:
            delegated_filename(role)
        except ValueError as e:
            raise security_error(filename, str(e)) from e
        return spec, delegations.keys, f"keys {delegator} delegates it to"

    def _require_timestamp(self) -> Metadata[Timestamp]:
        timestamp = self._timestamp
        if timestamp is None:
            raise RuntimeError("load the timestamp first")
        if is_expired(timestamp.signed.expires, self.reference_time):
            raise expired_error("timestamp.json", format_time(timestamp.signed.expires))
        return timestamp

    def _require_snapshot(self) -> Metadata[Snapshot]:
        if self._snapshot is None:
            raise RuntimeError("load the snapshot first")
        return self._snapshot

    def _check_final_snapshot(self, filename: str) -> None:
        snapshot = self._require_snapshot()
        timestamp = self._require_timestamp()
        if is_expired(snapshot.signed.expires, self.reference_time):
            raise expired_error(filename, format_time(snapshot.signed.expires))
        if snapshot.version != timestamp.signed.snapshot.version:
            raise MetadataRejectedError(
                f"{filename}: has version {snapshot.version}, timestamp.json lists "
                f"{timestamp.signed.snapshot.version}"
            )
