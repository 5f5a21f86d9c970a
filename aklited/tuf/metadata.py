"""Parsing of TUF metadata files in both dialects into typed, immutable values.

Parsing checks shape only (types, ``_type``, required fields, key formats); signatures,
versions, hashes and expiry are the trusted set's job (:mod:`aklited.tuf.trusted`).
Every failure is a :class:`~aklited.errors.TrustError` with code 11 naming the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from aklited.errors import TrustError
from aklited.tuf.canonical import CanonicalError, foundries_canonical, olpc_canonical
from aklited.tuf.errors import security_error
from aklited.tuf.keys import Dialect, KeyFormatError, PublicKey, decode_signature, parse_key

TOP_LEVEL_ROLES = ("root", "timestamp", "snapshot", "targets")
MAX_THRESHOLD = 1000  # aktualizr's kMaxSignatures
SUPPORTED_HASHES = frozenset({"sha256", "sha512"})
_EXPIRES_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_FOUNDRIES_TYPES = {"timestamp": "Timestamp", "snapshot": "Snapshot", "targets": "Targets"}


@dataclass(frozen=True, slots=True)
class RoleKeys:
    """Who may sign a role: key ids and how many distinct keys must sign."""

    keyids: frozenset[str]
    threshold: int


@dataclass(frozen=True, slots=True)
class Root:
    """``root.json``: the keys and thresholds of every top-level role."""

    version: int
    expires: datetime
    keys: Mapping[str, PublicKey]
    roles: Mapping[str, RoleKeys]


@dataclass(frozen=True, slots=True)
class MetaFile:
    """A reference to another metadata file (in timestamp or snapshot)."""

    version: int
    length: int | None
    hashes: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Timestamp:
    """``timestamp.json``: the current snapshot's version and hash."""

    version: int
    expires: datetime
    snapshot: MetaFile


@dataclass(frozen=True, slots=True)
class Snapshot:
    """``snapshot.json``: versions (and maybe hashes) of the targets metadata."""

    version: int
    expires: datetime
    meta: Mapping[str, MetaFile]


@dataclass(frozen=True, slots=True)
class TargetFile:
    """One target: for LmP, ``hashes.sha256`` is the OSTree commit."""

    name: str
    length: int
    hashes: Mapping[str, str]
    custom: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Targets:
    """``targets.json``: the targets the repository offers."""

    version: int
    expires: datetime
    targets: Mapping[str, TargetFile]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed, not yet verified, metadata file.

    Attributes:
        filename: Name used in messages (``3.root.json``, ``targets.json``...).
        dialect: Which canonical form and signature encoding apply.
        signed: The ``signed`` object.
        signatures: ``(keyid, signature bytes or None when undecodable)`` pairs.
        raw: The file's bytes exactly as read.
        signed_bytes: The canonical bytes the signatures cover.
    """

    filename: str
    dialect: Dialect
    signed: Mapping[str, Any]
    signatures: tuple[tuple[str, bytes | None], ...]
    raw: bytes
    signed_bytes: bytes
    signature_objects: tuple[Any, ...]

    def matches(self, length: int | None, hashes: Mapping[str, str]) -> str | None:
        """Check this file against a length and hashes listed for it; return why not, or None.

        The TUF dialect hashes the raw bytes. aktualizr hashes the canonical form of the
        parsed document; raw bytes are accepted too, since fioctl writes canonical files.
        """
        candidates = [self.raw]
        if self.dialect is Dialect.FOUNDRIES:
            document = {"signatures": list(self.signature_objects), "signed": self.signed}
            candidates.insert(0, foundries_canonical(document))
        for content in candidates:
            if _content_matches(content, length, hashes):
                return None
        if length is not None and all(len(c) != length for c in candidates):
            return f"length differs from the {length} bytes listed for it"
        return "hash differs from the one listed for it"


def _content_matches(content: bytes, length: int | None, hashes: Mapping[str, str]) -> bool:
    if length is not None and len(content) != length:
        return False
    for algorithm, expected in hashes.items():
        if hashlib.new(algorithm, content).hexdigest() != expected.lower():
            return False
    return True


T = TypeVar("T", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True, slots=True)
class Metadata(Generic[T]):
    """An envelope together with its typed ``signed`` payload."""

    envelope: Envelope
    signed: T

    @property
    def version(self) -> int:
        """The ``signed.version``."""
        return self.signed.version


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(raw: bytes, filename: str) -> Any:
    """Decode strict UTF-8 JSON; duplicate keys, NaN and runaway nesting are refused.

    Raises:
        TrustError: Code 11, naming ``filename``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise security_error(filename, f"is not UTF-8 (byte {e.start})") from e
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError as e:
        raise security_error(filename, "is nested too deeply to be metadata") from e
    except ValueError as e:
        raise security_error(filename, f"is not valid JSON: {e}") from e


def detect_dialect(root_raw: bytes, filename: str) -> Dialect:
    """Tell the dialect of a metadata set from its root.

    A lowercase ``root`` type with a ``spec_version`` is the TUF spec dialect; anything
    else is read as the Foundries dialect (whose parser then judges it).
    """
    document = load_json(root_raw, filename)
    signed = document.get("signed") if isinstance(document, dict) else None
    if isinstance(signed, dict) and signed.get("_type") == "root" and "spec_version" in signed:
        return Dialect.TUF
    return Dialect.FOUNDRIES


def parse_envelope(raw: bytes, *, role: str, filename: str, dialect: Dialect) -> Envelope:
    """Parse the outer ``{"signed", "signatures"}`` object and check ``_type``.

    Raises:
        TrustError: Code 11 on any shape problem.
    """
    document = load_json(raw, filename)
    if not isinstance(document, dict):
        raise security_error(filename, "is not a JSON object")
    signed = document.get("signed")
    signatures = document.get("signatures")
    if not isinstance(signed, dict) or not isinstance(signatures, list):
        raise security_error(filename, "lacks a 'signed' object or a 'signatures' list")
    _check_type(signed.get("_type"), role=role, filename=filename, dialect=dialect)
    decoded: list[tuple[str, bytes | None]] = []
    seen: set[str] = set()
    for entry in signatures:
        try:
            keyid, sig = decode_signature(entry, dialect)
        except KeyFormatError as e:
            raise security_error(filename, str(e)) from e
        if keyid in seen:
            raise security_error(filename, f"key {keyid} signed it more than once")
        seen.add(keyid)
        decoded.append((keyid, sig))
    try:
        signed_bytes = (
            foundries_canonical(signed) if dialect is Dialect.FOUNDRIES else olpc_canonical(signed)
        )
    except CanonicalError as e:
        raise security_error(filename, f"has no canonical form: {e}") from e
    return Envelope(
        filename=filename,
        dialect=dialect,
        signed=signed,
        signatures=tuple(decoded),
        raw=raw,
        signed_bytes=signed_bytes,
        signature_objects=tuple(signatures),
    )


def _check_type(value: Any, *, role: str, filename: str, dialect: Dialect) -> None:
    if dialect is Dialect.TUF:
        expected = role
        ok = value == role
    elif role == "root":
        # aktualizr compares the root's type case-insensitively, the others exactly.
        expected = "Root"
        ok = isinstance(value, str) and value.lower() == "root"
    else:
        expected = _FOUNDRIES_TYPES[role]
        ok = value == expected
    if not ok:
        raise security_error(filename, f"_type is {value!r}, expected {expected!r}")


class _Fields:
    """Typed access to one ``signed`` object; every failure names the file."""

    def __init__(self, envelope: Envelope) -> None:
        self.filename = envelope.filename
        self.dialect = envelope.dialect
        self.signed = envelope.signed

    def fail(self, reason: str) -> TrustError:
        return security_error(self.filename, reason)

    def integer(self, obj: Mapping[str, Any], key: str, *, minimum: int, where: str) -> int:
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{where}{key} must be an integer >= {minimum}, got {value!r}")
        return value

    def mapping(self, obj: Mapping[str, Any], key: str, *, where: str) -> Mapping[str, Any]:
        value = obj.get(key)
        if not isinstance(value, dict):
            raise self.fail(f"{where}{key} must be an object")
        return value

    def common(self) -> tuple[int, datetime]:
        if self.dialect is Dialect.TUF:
            spec = self.signed.get("spec_version")
            if not isinstance(spec, str) or spec.split(".")[0] != "1":
                raise self.fail(f"unsupported spec_version {spec!r}")
        version = self.integer(self.signed, "version", minimum=1, where="")
        expires = self.signed.get("expires")
        if not isinstance(expires, str) or not _EXPIRES_FORMAT.fullmatch(expires):
            raise self.fail(f"expires {expires!r} is not YYYY-MM-DDTHH:MM:SSZ")
        try:
            when = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError as e:
            raise self.fail(f"expires {expires!r} is not a valid date") from e
        return version, when

    def hashes(
        self, obj: Mapping[str, Any], *, where: str, required: bool, known_only: bool = True
    ) -> dict[str, str]:
        value = obj.get("hashes")
        if value is None and not required:
            return {}
        if not isinstance(value, dict) or not value:
            raise self.fail(f"{where}hashes must be a non-empty object")
        result: dict[str, str] = {}
        for algorithm, digest in value.items():
            if known_only and algorithm not in SUPPORTED_HASHES:
                raise self.fail(f"{where}hash algorithm {algorithm!r} is not supported")
            if not isinstance(digest, str):
                raise self.fail(f"{where}hashes.{algorithm} must be a string")
            result[algorithm] = digest
        return result

    def meta_file(self, obj: Any, *, where: str, hashes_required: bool) -> MetaFile:
        if not isinstance(obj, dict):
            raise self.fail(f"{where} must be an object")
        version = self.integer(obj, "version", minimum=1, where=f"{where}.")
        length = obj.get("length")
        if length is not None:
            length = self.integer(obj, "length", minimum=0, where=f"{where}.")
        hashes = self.hashes(obj, where=f"{where}.", required=hashes_required)
        return MetaFile(version=version, length=length, hashes=hashes)


def parse_root(envelope: Envelope) -> Metadata[Root]:
    """Type the ``signed`` part of a root; an unusable key rejects the whole root (11)."""
    fields = _Fields(envelope)
    version, expires = fields.common()
    keys: dict[str, PublicKey] = {}
    for keyid, entry in fields.mapping(envelope.signed, "keys", where="").items():
        try:
            keys[keyid] = parse_key(keyid, entry, envelope.dialect)
        except KeyFormatError as e:
            raise fields.fail(str(e)) from e
    raw_roles = fields.mapping(envelope.signed, "roles", where="")
    roles: dict[str, RoleKeys] = {}
    for role in TOP_LEVEL_ROLES:
        spec = raw_roles.get(role)
        if not isinstance(spec, dict):
            raise fields.fail(f"roles.{role} is missing")
        threshold = fields.integer(spec, "threshold", minimum=1, where=f"roles.{role}.")
        if threshold > MAX_THRESHOLD:
            raise fields.fail(f"roles.{role}.threshold {threshold} is above {MAX_THRESHOLD}")
        keyids = spec.get("keyids")
        if not isinstance(keyids, list) or not all(isinstance(k, str) for k in keyids):
            raise fields.fail(f"roles.{role}.keyids must be a list of strings")
        roles[role] = RoleKeys(keyids=frozenset(keyids), threshold=threshold)
    root = Root(version=version, expires=expires, keys=keys, roles=roles)
    return Metadata(envelope=envelope, signed=root)


def parse_timestamp(envelope: Envelope) -> Metadata[Timestamp]:
    """Type a timestamp; the Foundries dialect requires a snapshot hash (aktualizr does)."""
    fields = _Fields(envelope)
    version, expires = fields.common()
    meta = fields.mapping(envelope.signed, "meta", where="")
    if "snapshot.json" not in meta:
        raise fields.fail("meta lacks snapshot.json")
    if envelope.dialect is Dialect.TUF and len(meta) != 1:
        raise fields.fail("meta must list snapshot.json only")
    snapshot = fields.meta_file(
        meta["snapshot.json"],
        where="meta.snapshot.json",
        hashes_required=envelope.dialect is Dialect.FOUNDRIES,
    )
    return Metadata(envelope, Timestamp(version=version, expires=expires, snapshot=snapshot))


def parse_snapshot(envelope: Envelope) -> Metadata[Snapshot]:
    """Type a snapshot; it must list targets.json."""
    fields = _Fields(envelope)
    version, expires = fields.common()
    meta = {
        name: fields.meta_file(entry, where=f"meta.{name}", hashes_required=False)
        for name, entry in fields.mapping(envelope.signed, "meta", where="").items()
    }
    if "targets.json" not in meta:
        raise fields.fail("meta lacks targets.json")
    return Metadata(envelope, Snapshot(version=version, expires=expires, meta=meta))


def parse_targets(envelope: Envelope) -> Metadata[Targets]:
    """Type a targets file (top-level targets only: delegations are not followed)."""
    fields = _Fields(envelope)
    version, expires = fields.common()
    targets: dict[str, TargetFile] = {}
    for name, entry in fields.mapping(envelope.signed, "targets", where="").items():
        where = f"targets.{name}"
        if not isinstance(entry, dict):
            raise fields.fail(f"{where} must be an object")
        length = fields.integer(entry, "length", minimum=0, where=f"{where}.")
        # Target hashes are checked by whoever fetches the target, so any algorithm passes.
        hashes = fields.hashes(entry, where=f"{where}.", required=True, known_only=False)
        custom = entry.get("custom", {})
        if not isinstance(custom, dict):
            raise fields.fail(f"{where}.custom must be an object")
        targets[name] = TargetFile(name=name, length=length, hashes=hashes, custom=custom)
    return Metadata(envelope, Targets(version=version, expires=expires, targets=targets))


def format_time(when: datetime) -> str:
    """Format a time the way metadata writes ``expires``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
