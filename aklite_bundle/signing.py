"""Foundries-dialect metadata documents: roots, targets, snapshot, timestamp, bundle-targets.

Files are written in canonical form (compact, sorted, ASCII-escaped), as the Foundries
backend serves them, so a hash over the raw file equals aktualizr's hash over the
canonical form.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aklite_bundle.keys import KeyKind, SigningKey, generate_key, load_keys, save_key
from aklited.trust.canonical import foundries_canonical

ROLES = ("root", "timestamp", "snapshot", "targets")


def format_expires(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expires_in(days: float) -> str:
    """An ``expires`` value ``days`` from now (negative: in the past)."""
    return format_expires(datetime.now(UTC) + timedelta(days=days))


def sign_document(signed: Mapping[str, Any], keys: Iterable[SigningKey]) -> bytes:
    """Sign ``signed`` with every key and return the canonical file bytes."""
    payload = foundries_canonical(signed)
    signatures = [key.sign(payload) for key in keys]
    return foundries_canonical({"signatures": signatures, "signed": signed})


def add_signatures(
    document_raw: bytes, signed: Mapping[str, Any], keys: Iterable[SigningKey]
) -> bytes:
    """Return the document with signatures by ``keys`` added (existing ones are kept)."""
    document = json.loads(document_raw)
    existing = {s.get("keyid") for s in document.get("signatures", [])}
    payload = foundries_canonical(signed)
    for key in keys:
        if key.keyid not in existing:
            document["signatures"].append(key.sign(payload))
    return foundries_canonical(document)


@dataclass(slots=True)
class Keyring:
    """Who signs what: role keys with thresholds, plus the roots signed so far."""

    roles: dict[str, list[SigningKey]]
    thresholds: dict[str, int]
    roots: list[bytes] = field(default_factory=list)
    root_version: int = 0
    root_expires: str = field(default_factory=lambda: expires_in(365))

    @classmethod
    def generate(
        cls,
        *,
        kind: KeyKind = "ed25519",
        thresholds: Mapping[str, int] | None = None,
        rsa_bits: int = 4096,
        root_expires: str | None = None,
    ) -> Keyring:
        """New keys for every role (as many as the threshold) and a signed version 1 root."""
        wanted = dict.fromkeys(ROLES, 1) | dict(thresholds or {})
        roles = {
            role: [generate_key(kind, rsa_bits=rsa_bits) for _ in range(wanted[role])]
            for role in ROLES
        }
        ring = cls(roles=roles, thresholds=wanted)
        if root_expires is not None:
            ring.root_expires = root_expires
        ring.publish_root(signers=roles["root"])
        return ring

    def root_signed(self, version: int) -> dict[str, Any]:
        """The ``signed`` part of a root listing the current role keys."""
        keys: dict[str, Any] = {}
        roles: dict[str, Any] = {}
        for role in ROLES:
            for key in self.roles[role]:
                keys[key.keyid] = key.public_entry()
            roles[role] = {
                "keyids": [key.keyid for key in self.roles[role]],
                "threshold": self.thresholds[role],
            }
        return {
            "_type": "Root",
            "consistent_snapshot": False,
            "expires": self.root_expires,
            "keys": keys,
            "roles": roles,
            "version": version,
        }

    def publish_root(self, *, signers: Sequence[SigningKey], version: int | None = None) -> bytes:
        """Sign and record the next root (or ``version``) with ``signers``."""
        self.root_version = version if version is not None else self.root_version + 1
        raw = sign_document(self.root_signed(self.root_version), signers)
        self.roots.append(raw)
        return raw

    def rotate(
        self,
        role: str,
        *,
        new_keys: Sequence[SigningKey] | None = None,
        kind: KeyKind = "ed25519",
        rsa_bits: int = 4096,
    ) -> bytes:
        """Replace ``role``'s keys and publish a root signed by the old and new root keys."""
        old_root_keys = list(self.roles["root"])
        count = self.thresholds[role]
        self.roles[role] = list(
            new_keys or [generate_key(kind, rsa_bits=rsa_bits) for _ in range(count)]
        )
        signers = old_root_keys + [k for k in self.roles["root"] if k not in old_root_keys]
        return self.publish_root(signers=signers)

    def save(self, directory: Path) -> None:
        """Write every private key and every root into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        for keys in self.roles.values():
            for key in keys:
                save_key(directory, key)
        first = self.root_version - len(self.roots) + 1
        for offset, raw in enumerate(self.roots):
            (directory / f"{first + offset}.root.json").write_bytes(raw)

    @classmethod
    def load(cls, directory: Path) -> Keyring:
        """Read a keyring directory; the newest root names the role keys.

        Raises:
            ValueError: No root, or a private key the newest root names is missing.
        """
        versions = sorted(
            int(p.name.removesuffix(".root.json"))
            for p in directory.glob("*.root.json")
            if p.name.removesuffix(".root.json").isdigit()
        )
        if not versions:
            raise ValueError(f"{directory} holds no N.root.json: run 'aklite-bundle keys init'")
        private = load_keys(directory)
        roots = [(directory / f"{v}.root.json").read_bytes() for v in versions]
        signed = json.loads(roots[-1])["signed"]
        roles: dict[str, list[SigningKey]] = {}
        thresholds: dict[str, int] = {}
        for role in ROLES:
            spec = signed["roles"][role]
            thresholds[role] = int(spec["threshold"])
            roles[role] = [private[k] for k in spec["keyids"] if k in private]
        ring = cls(roles=roles, thresholds=thresholds, roots=roots, root_version=versions[-1])
        ring.root_expires = signed["expires"]
        return ring

    def first_root_version(self) -> int:
        """Version of the oldest root recorded."""
        return self.root_version - len(self.roots) + 1


def meta_entry(raw: bytes, version: int) -> dict[str, Any]:
    """A snapshot/timestamp ``meta`` entry for a file: version, length, hashes."""
    return {
        "hashes": {"sha256": hashlib.sha256(raw).hexdigest()},
        "length": len(raw),
        "version": version,
    }


@dataclass(frozen=True, slots=True)
class TopLevel:
    """Timestamp, snapshot and targets files of one publication."""

    timestamp: bytes
    snapshot: bytes
    targets: bytes


def publish_top_level(
    ring: Keyring,
    targets: Mapping[str, Any],
    *,
    version: int = 1,
    expires: str | None = None,
    expires_override: Mapping[str, str] | None = None,
) -> TopLevel:
    """Sign targets, snapshot and timestamp (all at ``version``) for ``targets`` entries."""
    default = expires or expires_in(30)
    when = dict.fromkeys(("timestamp", "snapshot", "targets"), default)
    when.update(expires_override or {})
    targets_raw = sign_document(
        {
            "_type": "Targets",
            "expires": when["targets"],
            "targets": dict(targets),
            "version": version,
        },
        ring.roles["targets"],
    )
    snapshot_raw = sign_document(
        {
            "_type": "Snapshot",
            "expires": when["snapshot"],
            "meta": {"targets.json": meta_entry(targets_raw, version)},
            "version": version,
        },
        ring.roles["snapshot"],
    )
    timestamp_raw = sign_document(
        {
            "_type": "Timestamp",
            "expires": when["timestamp"],
            "meta": {"snapshot.json": meta_entry(snapshot_raw, version)},
            "version": version,
        },
        ring.roles["timestamp"],
    )
    return TopLevel(timestamp=timestamp_raw, snapshot=snapshot_raw, targets=targets_raw)


def bundle_targets_signed(
    *, names: Sequence[str], bundle_type: str, tag: str, version: int, expires: str
) -> dict[str, Any]:
    """The ``signed`` part of ``bundle-targets.json``."""
    return {
        "_type": "Targets",
        "expires": expires,
        "version": version,
        "x-fio-offline-bundle": {"tag": tag, "targets": list(names), "type": bundle_type},
    }


def new_keyring_dir(
    directory: Path, *, kind: KeyKind, thresholds: Mapping[str, int], rsa_bits: int = 4096
) -> Keyring:
    """``keys init``: generate a keyring and save it to ``directory``."""
    ring = Keyring.generate(kind=kind, thresholds=thresholds, rsa_bits=rsa_bits)
    ring.save(directory)
    return ring
