"""Parsing of TUF metadata files in both dialects into typed, immutable values.

Parsing checks shape only (types, ``_type``, required fields, key formats, integer
ranges); signatures, versions, hashes and expiry are the trusted set's job
(:mod:`aklited.trust.trusted`). Every failure is a :class:`~aklited.errors.TrustError`
with code 11 naming the file.

Integer ranges (anything outside is refused, 11):

* any JSON integer: the signed 64-bit range (SQLite's INTEGER), checked while decoding,
  so a number of thousands of digits never reaches ``int()``'s string-conversion limit;
* ``version`` and every version in ``meta``: 1 .. 2**31-1, because aktualizr and ota-tuf
  read versions as 32-bit ints and the next root version must still be representable;
* ``length``: 0 .. 2**63-1;
* ``threshold`` (root and delegations): 1 .. 1000 (aktualizr's kMaxSignatures);
* ``succinct_roles.bit_length``: 1 .. 32 (TAP 15).

Delegations (TUF dialect only; the Foundries dialect has none) are parsed into
:class:`Delegations`. A delegated role's metadata is the file ``<quote(name, "")>.json``
(python-tuf's ngclient encoding, see :func:`delegated_filename`); names that would still
be unsafe as a file name are refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from aklited.errors import TrustError
from aklited.trust.canonical import CanonicalError, foundries_canonical, olpc_canonical
from aklited.trust.errors import security_error
from aklited.trust.keys import Dialect, KeyFormatError, PublicKey, decode_signature, parse_key

TOP_LEVEL_ROLES = ("root", "timestamp", "snapshot", "targets")
MAX_THRESHOLD = 1000  # aktualizr's kMaxSignatures
MAX_VERSION = 2**31 - 1  # aktualizr and ota-tuf read versions as 32-bit ints
MAX_LENGTH = 2**63 - 1
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**63 - 1  # SQLite INTEGER
MAX_BIT_LENGTH = 32  # TAP 15 succinct hash bins
# A file name must fit NAME_MAX (255 bytes) once ".json" is appended.
MAX_ROLE_FILENAME = 250
# On the drive these names are taken by files that are not delegated metadata; compared
# case-insensitively because a FAT drive does not tell "Targets.json" from "targets.json".
_RESERVED_ROLE_NAMES = frozenset({*TOP_LEVEL_ROLES, "bundle-targets"})
_VERSIONED_ROOT = re.compile(r"[0-9]+\.root")
_HEX = re.compile(r"[0-9a-f]+")
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


def path_matches(pattern: str, target: str) -> bool:
    """True when ``target`` matches a delegation's path ``pattern`` (spec 5.6.7.2.1).

    Both must have the same number of ``/``-separated parts, and each part must match
    with :func:`fnmatch.fnmatchcase`, so ``*`` and ``?`` never cross a ``/``.
    """
    target_parts = target.split("/")
    pattern_parts = pattern.split("/")
    if len(target_parts) != len(pattern_parts):
        return False
    return all(
        fnmatch.fnmatchcase(part, glob)
        for part, glob in zip(target_parts, pattern_parts, strict=True)
    )


def path_hash(target: str) -> str:
    """Hex sha256 of a target path, as ``path_hash_prefixes`` and hash bins use it."""
    return hashlib.sha256(target.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class DelegatedRole:
    """One entry of ``delegations.roles``: who may sign which target paths.

    Exactly one of ``paths`` and ``path_hash_prefixes`` is set.
    """

    name: str
    keys: RoleKeys
    terminating: bool
    paths: tuple[str, ...] | None
    path_hash_prefixes: tuple[str, ...] | None

    def is_delegated_path(self, target: str) -> bool:
        """True when this delegation covers ``target``."""
        if self.path_hash_prefixes is not None:
            digest = path_hash(target)
            return any(digest.startswith(prefix) for prefix in self.path_hash_prefixes)
        return any(path_matches(pattern, target) for pattern in self.paths or ())


@dataclass(frozen=True, slots=True)
class SuccinctRoles:
    """``delegations.succinct_roles`` (TAP 15): ``2**bit_length`` terminating hash bins."""

    keys: RoleKeys
    bit_length: int
    name_prefix: str

    @property
    def suffix_len(self) -> int:
        """Hex digits of a bin number."""
        return len(f"{(1 << self.bit_length) - 1:x}")

    def role_for(self, target: str) -> str:
        """The bin responsible for ``target``: the hash's leftmost ``bit_length`` bits."""
        leading = int.from_bytes(bytes.fromhex(path_hash(target)[:8]), "big")
        number = leading >> (32 - self.bit_length)
        return f"{self.name_prefix}-{number:0{self.suffix_len}x}"

    def names(self) -> Iterator[str]:
        """Every bin's name, in bin order."""
        for number in range(1 << self.bit_length):
            yield f"{self.name_prefix}-{number:0{self.suffix_len}x}"

    def is_bin(self, name: str) -> bool:
        """True when ``name`` is one of the bins."""
        prefix = f"{self.name_prefix}-"
        suffix = name.removeprefix(prefix)
        # Only the names names() makes: int(x, 16) alone would take "+1" or "0_1" too.
        if suffix == name or len(suffix) != self.suffix_len or not _HEX.fullmatch(suffix):
            return False
        return int(suffix, 16) < 1 << self.bit_length


@dataclass(frozen=True, slots=True)
class Delegations:
    """``delegations`` of a targets role: keys, then ordered roles or hash bins."""

    keys: Mapping[str, PublicKey]
    roles: tuple[DelegatedRole, ...] = ()
    succinct: SuccinctRoles | None = None
    _by_name: Mapping[str, RoleKeys] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A delegations list may be long: keys_for() must not scan it per lookup.
        object.__setattr__(self, "_by_name", {role.name: role.keys for role in self.roles})

    def role_names(self) -> Iterator[str]:
        """Every delegated role's name, in the order the search considers them."""
        if self.succinct is not None:
            yield from self.succinct.names()
        else:
            yield from (role.name for role in self.roles)

    def keys_for(self, name: str) -> RoleKeys | None:
        """Key ids and threshold that ``name`` must be signed with, or None if not delegated."""
        if self.succinct is not None:
            return self.succinct.keys if self.succinct.is_bin(name) else None
        return self._by_name.get(name)

    def roles_for(self, target: str) -> Iterator[tuple[str, bool]]:
        """``(name, terminating)`` of each delegation covering ``target``, in order."""
        if self.succinct is not None:
            yield self.succinct.role_for(target), True
            return
        for role in self.roles:
            if role.is_delegated_path(target):
                yield role.name, role.terminating


@dataclass(frozen=True, slots=True)
class Targets:
    """``targets.json`` or a delegated targets role: its targets and delegations."""

    version: int
    expires: datetime
    targets: Mapping[str, TargetFile]
    delegations: Delegations | None = None


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


class _IntegerRangeError(ValueError):
    """A JSON integer outside the signed 64-bit range."""


# Digits of the longest in-range integer (2**63 = 9223372036854775808, 19 digits).
_MAX_INT_DIGITS = 19


def _bounded_int(text: str) -> int:
    # Checked on the text first: int() refuses strings beyond 4300 digits with a
    # ValueError whose message is about interpreter settings, not about the file.
    digits = len(text.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise _IntegerRangeError(f"holds an integer of {digits} digits, beyond 64 bits")
    value = int(text)
    if not JSON_INT_MIN <= value <= JSON_INT_MAX:
        raise _IntegerRangeError(f"holds the integer {value}, beyond 64 bits")
    return value


def load_json(raw: bytes, filename: str) -> Any:
    """Decode strict UTF-8 JSON; duplicate keys, NaN, integers beyond 64 bits and
    runaway nesting are refused.

    Raises:
        TrustError: Code 11, naming ``filename``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise security_error(filename, f"is not UTF-8 (byte {e.start})") from e
    try:
        return json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
        )
    except RecursionError as e:
        raise security_error(filename, "is nested too deeply to be metadata") from e
    except _IntegerRangeError as e:
        raise security_error(filename, str(e)) from e
    except ValueError as e:
        raise security_error(filename, f"is not valid JSON: {e}") from e


def brief(value: Any, width: int = 60) -> str:
    """A one-line, bounded ``repr`` for messages (values come from untrusted files)."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 3]}..."


def delegated_filename(name: str) -> str:
    """The file holding delegated role ``name``: ``quote(name, "")`` + ``.json``.

    The percent-encoding is python-tuf ngclient's, so a ``/`` or ``..`` in a name never
    reaches the file system as a path separator.

    Raises:
        ValueError: ``name`` is empty, a top-level or reserved name (also in another
            case, for FAT drives), ``N.root``, or too long for a file name.
    """
    if not name:
        raise ValueError("a delegated role name is empty")
    folded = name.casefold()
    if folded in _RESERVED_ROLE_NAMES or _VERSIONED_ROOT.fullmatch(folded):
        raise ValueError(f"delegated role name {brief(name)} is reserved")
    encoded = quote(name, safe="", errors="surrogatepass")
    if len(encoded) > MAX_ROLE_FILENAME:
        raise ValueError(f"delegated role name {brief(name)} is too long for a file name")
    return f"{encoded}.json"


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

    def integer(
        self, obj: Mapping[str, Any], key: str, *, minimum: int, maximum: int, where: str
    ) -> int:
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{where}{key} must be an integer, got {brief(value)}")
        if not minimum <= value <= maximum:
            raise self.fail(f"{where}{key} {value} is outside {minimum}..{maximum}")
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
        version = self.integer(self.signed, "version", minimum=1, maximum=MAX_VERSION, where="")
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
        version = self.integer(obj, "version", minimum=1, maximum=MAX_VERSION, where=f"{where}.")
        length = obj.get("length")
        if length is not None:
            length = self.integer(obj, "length", minimum=0, maximum=MAX_LENGTH, where=f"{where}.")
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
        threshold = fields.integer(
            spec, "threshold", minimum=1, maximum=MAX_THRESHOLD, where=f"roles.{role}."
        )
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
    """Type a targets file, top-level or delegated; the TUF dialect's ``delegations`` too."""
    fields = _Fields(envelope)
    version, expires = fields.common()
    targets: dict[str, TargetFile] = {}
    for name, entry in fields.mapping(envelope.signed, "targets", where="").items():
        where = f"targets.{brief(name)}"
        if not isinstance(entry, dict):
            raise fields.fail(f"{where} must be an object")
        length = fields.integer(entry, "length", minimum=0, maximum=MAX_LENGTH, where=f"{where}.")
        # Target hashes are checked by whoever fetches the target, so any algorithm passes.
        hashes = fields.hashes(entry, where=f"{where}.", required=True, known_only=False)
        custom = entry.get("custom", {})
        if not isinstance(custom, dict):
            raise fields.fail(f"{where}.custom must be an object")
        targets[name] = TargetFile(name=name, length=length, hashes=hashes, custom=custom)
    delegations = None
    # Foundries metadata has no delegations; aktualizr-lite ignores the field there too.
    if envelope.dialect is Dialect.TUF and envelope.signed.get("delegations") is not None:
        delegations = _parse_delegations(fields, envelope.signed["delegations"])
    typed = Targets(version=version, expires=expires, targets=targets, delegations=delegations)
    return Metadata(envelope, typed)


def _parse_keyids(fields: _Fields, spec: Mapping[str, Any], where: str) -> frozenset[str]:
    keyids = spec.get("keyids")
    if not isinstance(keyids, list) or not all(isinstance(k, str) for k in keyids):
        raise fields.fail(f"{where}keyids must be a list of strings")
    if len(set(keyids)) != len(keyids):
        raise fields.fail(f"{where}keyids lists a key more than once")
    return frozenset(keyids)


def _parse_role_keys(fields: _Fields, spec: Mapping[str, Any], where: str) -> RoleKeys:
    threshold = fields.integer(spec, "threshold", minimum=1, maximum=MAX_THRESHOLD, where=where)
    return RoleKeys(keyids=_parse_keyids(fields, spec, where), threshold=threshold)


def _string_list(fields: _Fields, value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise fields.fail(f"{where} must be a list of strings")
    return tuple(value)


def _check_role_name(fields: _Fields, name: str, where: str) -> None:
    try:
        delegated_filename(name)
    except ValueError as e:
        raise fields.fail(f"{where}: {e}") from e


def _parse_delegations(fields: _Fields, value: Any) -> Delegations:
    """``delegations`` as python-tuf reads them (spec 5.6.7, TAP 15 succinct roles)."""
    if not isinstance(value, dict):
        raise fields.fail("delegations must be an object")
    keys: dict[str, PublicKey] = {}
    for keyid, entry in fields.mapping(value, "keys", where="delegations.").items():
        try:
            keys[keyid] = parse_key(keyid, entry, fields.dialect)
        except KeyFormatError as e:
            raise fields.fail(f"delegations: {e}") from e
    raw_roles, raw_succinct = value.get("roles"), value.get("succinct_roles")
    if (raw_roles is None) == (raw_succinct is None):
        raise fields.fail("delegations must have exactly one of roles and succinct_roles")
    if raw_succinct is not None:
        return Delegations(keys=keys, succinct=_parse_succinct(fields, raw_succinct))
    if not isinstance(raw_roles, list):
        raise fields.fail("delegations.roles must be a list")
    roles: list[DelegatedRole] = []
    names: set[str] = set()
    for index, spec in enumerate(raw_roles):
        where = f"delegations.roles[{index}]."
        if not isinstance(spec, dict):
            raise fields.fail(f"{where[:-1]} must be an object")
        name = spec.get("name")
        if not isinstance(name, str):
            raise fields.fail(f"{where}name must be a string")
        _check_role_name(fields, name, f"{where}name")
        if name in names:
            raise fields.fail(f"{where}name {brief(name)} is delegated twice")
        names.add(name)
        terminating = spec.get("terminating")
        if not isinstance(terminating, bool):
            raise fields.fail(f"{where}terminating must be true or false")
        paths, prefixes = spec.get("paths"), spec.get("path_hash_prefixes")
        if (paths is None) == (prefixes is None):
            raise fields.fail(f"{where[:-1]} must have exactly one of paths and path_hash_prefixes")
        roles.append(
            DelegatedRole(
                name=name,
                keys=_parse_role_keys(fields, spec, where),
                terminating=terminating,
                paths=None if paths is None else _string_list(fields, paths, f"{where}paths"),
                path_hash_prefixes=None
                if prefixes is None
                else _string_list(fields, prefixes, f"{where}path_hash_prefixes"),
            )
        )
    return Delegations(keys=keys, roles=tuple(roles))


def _parse_succinct(fields: _Fields, spec: Any) -> SuccinctRoles:
    where = "delegations.succinct_roles."
    if not isinstance(spec, dict):
        raise fields.fail(f"{where[:-1]} must be an object")
    bit_length = fields.integer(spec, "bit_length", minimum=1, maximum=MAX_BIT_LENGTH, where=where)
    prefix = spec.get("name_prefix")
    if not isinstance(prefix, str):
        raise fields.fail(f"{where}name_prefix must be a string")
    succinct = SuccinctRoles(
        keys=_parse_role_keys(fields, spec, where), bit_length=bit_length, name_prefix=prefix
    )
    # Bins differ only in their hex suffix: the last bin's name is the longest one.
    _check_role_name(fields, f"{prefix}-{(1 << bit_length) - 1:x}", f"{where}name_prefix")
    return succinct


def format_time(when: datetime) -> str:
    """Format a time the way metadata writes ``expires``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
