"""TUF-dialect test repositories written by python-tuf, and python-tuf as an oracle.

``TufRepo`` keeps python-tuf ``Metadata`` objects so a test can change any field and
re-sign; ``files()`` serialises the set as an offline bundle's ``tuf/`` holds it.
``oracle_verdict`` feeds the same bytes to python-tuf's ``TrustedMetadataSet``;
``oracle_targets`` runs python-tuf's ``Updater`` (delegation search included) on them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface, Updater
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from aklite_bundle.build import TargetSpec, write_app_uris
from aklite_bundle.keys import SigningKey, generate_key
from aklite_bundle.signing import (
    Keyring,
    bundle_targets_signed,
    expires_in,
    meta_entry,
    sign_document,
)
from aklited.trust.canonical import foundries_canonical

KEY_TYPES = ("ed25519", "rsa", "ecdsa")
ROLES = ("root", "timestamp", "snapshot", "targets")


@functools.cache
def _signer_pool(key_type: str) -> list[CryptoSigner]:
    """Keys are slow to make (RSA): make a few per type once per test session."""
    make: Callable[[], CryptoSigner] = {
        "ed25519": CryptoSigner.generate_ed25519,
        "rsa": lambda: CryptoSigner.generate_rsa(size=2048),
        "ecdsa": CryptoSigner.generate_ecdsa,
    }[key_type]
    return [make() for _ in range(8)]


def signer(key_type: str, index: int) -> CryptoSigner:
    """The ``index``-th cached signer of ``key_type``."""
    return _signer_pool(key_type)[index]


def delegated_file(name: str) -> str:
    """The file a delegated role is fetched as (python-tuf ngclient's encoding)."""
    return f"{quote(name, '')}.json"


class TufRepo:
    """An in-memory TUF repository: top-level roles and optional delegated targets roles."""

    def __init__(
        self,
        *,
        key_type: str = "ed25519",
        expires: datetime | None = None,
        targets_threshold: int = 1,
        hash_targets: bool = True,
    ) -> None:
        self.key_type = key_type
        self.expires = expires or datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
        self.hash_targets = hash_targets
        pool = _signer_pool(key_type)
        self.signers: dict[str, list[CryptoSigner]] = {
            "root": [pool[0]],
            "timestamp": [pool[1]],
            "snapshot": [pool[2]],
            "targets": [pool[3], pool[4]][:targets_threshold],
        }
        root = Metadata(Root(expires=self.expires, consistent_snapshot=False))
        for role, signers in self.signers.items():
            for s in signers:
                root.signed.add_key(s.public_key, role)
        root.signed.roles["targets"].threshold = targets_threshold
        self.root = root
        self.roots: list[bytes] = []
        self._sign(root)
        self.roots.append(self._serialize(root))
        self.targets = Metadata(Targets(expires=self.expires))
        self.snapshot = Metadata(Snapshot(expires=self.expires))
        self.timestamp = Metadata(Timestamp(expires=self.expires))
        # Delegated roles in creation order, and who signs each.
        self.delegated: dict[str, Metadata[Targets]] = {}
        self.delegated_signers: dict[str, list[CryptoSigner]] = {}

    @staticmethod
    def _serialize(md: Metadata[Any]) -> bytes:
        return bytes(md.to_bytes(JSONSerializer(compact=False)))

    def _sign(self, md: Metadata[Any], signers: list[CryptoSigner] | None = None) -> None:
        md.signatures.clear()
        for s in signers if signers is not None else self.signers[md.signed.type]:
            md.sign(s, append=True)

    def add_target(
        self, name: str, custom: dict[str, Any], data: bytes = b"x", *, role: str = "targets"
    ) -> None:
        """Add a target with Uptane-style ``custom`` to ``role`` (top-level or delegated)."""
        target = TargetFile.from_data(name, data, ["sha256"])
        target.unrecognized_fields["custom"] = custom
        self.role(role).signed.targets[name] = target

    def role(self, name: str) -> Metadata[Targets]:
        """The top-level targets (``"targets"``) or a delegated role."""
        return self.targets if name == "targets" else self.delegated[name]

    def delegate(
        self,
        delegator: str,
        name: str,
        *,
        paths: list[str] | None = None,
        path_hash_prefixes: list[str] | None = None,
        terminating: bool = False,
        signers: list[CryptoSigner] | None = None,
        threshold: int = 1,
    ) -> Metadata[Targets]:
        """Make ``delegator`` delegate ``name`` (appended: last in search order).

        ``paths`` defaults to ``["*"]`` unless hash prefixes are given. The role's
        metadata is created on first delegation; its signers default to key 5.
        """
        if paths is None and path_hash_prefixes is None:
            paths = ["*"]
        signers = signers if signers is not None else [signer(self.key_type, 5)]
        parent = self.role(delegator).signed
        if parent.delegations is None:
            parent.delegations = Delegations(keys={}, roles={})
        assert parent.delegations.roles is not None
        parent.delegations.roles[name] = DelegatedRole(
            name,
            [s.public_key.keyid for s in signers],
            threshold,
            terminating,
            paths,
            path_hash_prefixes,
        )
        for s in signers:
            parent.delegations.keys[s.public_key.keyid] = s.public_key
        if name not in self.delegated:
            self.delegated[name] = Metadata(Targets(expires=self.expires))
            self.delegated_signers[name] = signers
        return self.delegated[name]

    def delegate_bins(
        self, bit_length: int, prefix: str = "bin", signers: list[CryptoSigner] | None = None
    ) -> SuccinctRoles:
        """Make the top-level targets delegate to ``2**bit_length`` hash bins (TAP 15)."""
        signers = signers if signers is not None else [signer(self.key_type, 5)]
        succinct = SuccinctRoles([s.public_key.keyid for s in signers], 1, bit_length, prefix)
        self.targets.signed.delegations = Delegations(
            keys={s.public_key.keyid: s.public_key for s in signers}, succinct_roles=succinct
        )
        for name in succinct.get_roles():
            self.delegated[name] = Metadata(Targets(expires=self.expires))
            self.delegated_signers[name] = signers
        return succinct

    def add_binned_target(
        self, succinct: SuccinctRoles, name: str, custom: dict[str, Any], data: bytes = b"x"
    ) -> str:
        """Add a target to the hash bin responsible for it; return the bin's name."""
        role = succinct.get_role_for_target(name)
        self.add_target(name, custom, data, role=role)
        return role

    def rotate_root(self, new_root_signer: CryptoSigner, *, version_step: int = 1) -> None:
        """Publish a new root whose root key is ``new_root_signer`` (signed by old and new)."""
        old_signers = list(self.signers["root"])
        for s in old_signers:
            self.root.signed.revoke_key(s.public_key.keyid, "root")
        self.root.signed.add_key(new_root_signer.public_key, "root")
        self.root.signed.version += version_step
        self.signers["root"] = [new_root_signer]
        self._sign(self.root, [*old_signers, new_root_signer])
        self.roots.append(self._serialize(self.root))

    def bump(self) -> None:
        """New versions of timestamp, snapshot and targets."""
        for md in (self.targets, self.snapshot, self.timestamp):
            md.signed.version += 1

    def _meta(self, md: Metadata[Any], raw: bytes) -> MetaFile:
        if not self.hash_targets:
            return MetaFile(version=md.signed.version)
        return MetaFile(
            version=md.signed.version,
            length=len(raw),
            hashes={"sha256": hashlib.sha256(raw).hexdigest()},
        )

    def files(
        self,
        *,
        tamper_timestamp: Callable[[Timestamp], None] | None = None,
        tamper_snapshot: Callable[[Snapshot], None] | None = None,
    ) -> dict[str, bytes]:
        """Serialise everything with matching hashes; ``tamper_timestamp`` edits the
        timestamp's ``signed`` after the snapshot hash is set (then it is signed);
        ``tamper_snapshot`` edits the snapshot's ``meta`` before it is signed.

        Delegated roles are written as ``delegated_file(name)`` and listed in the
        snapshot as ``<name>.json``."""
        delegated_raw: dict[str, bytes] = {}
        for name, md in self.delegated.items():
            self._sign(md, self.delegated_signers[name])
            delegated_raw[name] = self._serialize(md)
            self.snapshot.signed.meta[f"{name}.json"] = self._meta(md, delegated_raw[name])
        self._sign(self.targets)
        targets_raw = self._serialize(self.targets)
        self.snapshot.signed.meta["targets.json"] = self._meta(self.targets, targets_raw)
        if tamper_snapshot is not None:
            tamper_snapshot(self.snapshot.signed)
        self._sign(self.snapshot)
        snapshot_raw = self._serialize(self.snapshot)
        self.timestamp.signed.snapshot_meta = MetaFile(
            version=self.snapshot.signed.version,
            length=len(snapshot_raw),
            hashes={"sha256": hashlib.sha256(snapshot_raw).hexdigest()},
        )
        if tamper_timestamp is not None:
            tamper_timestamp(self.timestamp.signed)
        self._sign(self.timestamp)
        result = {f"{i + 1}.root.json": raw for i, raw in enumerate(self.roots)}
        result["timestamp.json"] = self._serialize(self.timestamp)
        result["snapshot.json"] = snapshot_raw
        result["targets.json"] = targets_raw
        for name, raw in delegated_raw.items():
            result[delegated_file(name)] = raw
        return result


def write_files(directory: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into ``directory`` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def edit_json(raw: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """Re-serialise ``raw`` after ``change`` edits the document (signatures untouched)."""
    document = json.loads(raw)
    change(document)
    return json.dumps(document, indent=1).encode()


def oracle_verdict(
    trusted_root: bytes,
    files: dict[str, bytes],
    *,
    stored: dict[str, bytes] | None = None,
    reference_time: datetime | None = None,
) -> bool:
    """Run python-tuf's TrustedMetadataSet on the same bytes; True when it accepts.

    Mirrors python-tuf's Updater: root rotations, then the stored copies as intermediate
    or final metadata, then the new files.
    """
    stored = dict(stored or {})
    try:
        tms = TrustedMetadataSet(trusted_root, EnvelopeType.METADATA)
        if reference_time is not None:
            tms.reference_time = reference_time
        version = tms.root.version + 1
        while f"{version}.root.json" in files:
            tms.update_root(files[f"{version}.root.json"])
            version += 1
        if "timestamp" in stored:
            with contextlib.suppress(tuf_exceptions.RepositoryError):
                tms.update_timestamp(stored["timestamp"])
        with contextlib.suppress(tuf_exceptions.EqualVersionNumberError):
            tms.update_timestamp(files["timestamp.json"])
        snapshot_final = False
        if "snapshot" in stored:
            try:
                tms.update_snapshot(stored["snapshot"], trusted=True)
                snapshot_final = True
            except tuf_exceptions.RepositoryError:
                pass
        if not snapshot_final:
            tms.update_snapshot(files["snapshot.json"])
        tms.update_targets(files["targets.json"])
    except (tuf_exceptions.RepositoryError, ValueError, KeyError):
        return False
    return True


class _FilesFetcher(FetcherInterface):
    """Serves a file set as python-tuf's Updater fetches it: the URL's last part is the name."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rpartition("/")[2]
        if name not in self.files:
            raise tuf_exceptions.DownloadHTTPError(f"{name} not found", 404)
        return iter([self.files[name]])


def oracle_targets(
    trusted_root: bytes, files: dict[str, bytes], paths: list[str], metadata_dir: Path
) -> dict[str, TargetFile | None] | None:
    """python-tuf's ``Updater.get_targetinfo`` for each path; None when it refuses.

    ``Updater`` refreshes the top-level roles, then walks delegations per path exactly as
    ngclient does (pre-order depth first, ``max_delegations`` 32), loading delegated roles
    only when a search reaches them.
    """
    metadata_dir.mkdir(parents=True, exist_ok=True)
    try:
        updater = Updater(
            str(metadata_dir),
            "https://repo.invalid/metadata/",
            fetcher=_FilesFetcher(files),
            bootstrap=trusted_root,
        )
        updater.refresh()
        return {path: updater.get_targetinfo(path) for path in paths}
    except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError, ValueError):
        return None


def clone(files: dict[str, bytes]) -> dict[str, bytes]:
    """A copy of a file set to tamper with."""
    return copy.deepcopy(files)


# ---- Foundries dialect (aklite-bundle) ------------------------------------------------------

HWID = "raspberrypi4-64"
TAG = "main"


def commit_of(seed: str) -> str:
    """A deterministic fake OSTree commit sha256."""
    return hashlib.sha256(seed.encode()).hexdigest()


def app_uri(name: str, seed: str = "1") -> str:
    """A Foundries-shaped app URI."""
    digest = hashlib.sha256((name + seed).encode()).hexdigest()
    return f"hub.foundries.io/factory/{name}@sha256:{digest}"


def target_spec(
    version: int, *, hwid: str = HWID, tags: tuple[str, ...] = (TAG,), **kw: Any
) -> TargetSpec:
    """A typical LmP target at ``version``."""
    return TargetSpec(
        name=f"{hwid}-lmp-{version}",
        version=version,
        hardware_id=hwid,
        ostree_commit=commit_of(f"{hwid}-{version}"),
        tags=tags,
        apps=kw.pop("apps", {"shellhttpd": app_uri("shellhttpd", str(version))}),
        **kw,
    )


@functools.cache
def keyring(targets_threshold: int = 1) -> Keyring:
    """A cached Ed25519 keyring with roots v1 and v2 (a root key rotation)."""
    ring = Keyring.generate(kind="ed25519", thresholds={"targets": targets_threshold})
    ring.rotate("root")
    return ring


Mutator = Callable[[dict[str, Any]], None]


def write_foundries_bundle(
    dst: Path,
    ring: Keyring,
    targets: list[TargetSpec],
    *,
    version: int = 1,
    expires: str | None = None,
    bundle_type: str = "ci",
    tag: str = TAG,
    bundle_names: list[str] | None = None,
    mutate: dict[str, Mutator] | None = None,
    signers: dict[str, list[SigningKey]] | None = None,
    content: bool = True,
) -> Path:
    """Write a Foundries-dialect bundle; ``mutate[role]`` edits a role's ``signed`` before signing.

    Roles for ``mutate``/``signers``: timestamp, snapshot, targets, bundle-targets.
    Hashes and lengths always match the files as written (so one attack at a time).
    ``content`` also writes the commit objects and the apps' ``uri`` files.
    """
    mutate = mutate or {}
    signers = signers or {}
    when = expires or expires_in(30)
    tuf = dst / "tuf"
    tuf.mkdir(parents=True, exist_ok=True)
    first = ring.first_root_version()
    for offset, raw in enumerate(ring.roots):
        (tuf / f"{first + offset}.root.json").write_bytes(raw)

    def signed_file(role: str, signed: dict[str, Any], default: list[SigningKey]) -> bytes:
        if role in mutate:
            mutate[role](signed)
        return sign_document(signed, signers.get(role, default))

    targets_raw = signed_file(
        "targets",
        {
            "_type": "Targets",
            "expires": when,
            "targets": {t.name: t.entry() for t in targets},
            "version": version,
        },
        ring.roles["targets"],
    )
    snapshot_raw = signed_file(
        "snapshot",
        {
            "_type": "Snapshot",
            "expires": when,
            "meta": {"targets.json": meta_entry(targets_raw, version)},
            "version": version,
        },
        ring.roles["snapshot"],
    )
    timestamp_raw = signed_file(
        "timestamp",
        {
            "_type": "Timestamp",
            "expires": when,
            "meta": {"snapshot.json": meta_entry(snapshot_raw, version)},
            "version": version,
        },
        ring.roles["timestamp"],
    )
    bundle_raw = signed_file(
        "bundle-targets",
        bundle_targets_signed(
            names=bundle_names if bundle_names is not None else [t.name for t in targets],
            bundle_type=bundle_type,
            tag=tag,
            version=version,
            expires=when,
        ),
        ring.roles["targets"],
    )
    for name, raw in (
        ("targets.json", targets_raw),
        ("snapshot.json", snapshot_raw),
        ("timestamp.json", timestamp_raw),
        ("bundle-targets.json", bundle_raw),
    ):
        (tuf / name).write_bytes(raw)
    if content:
        for target in targets:
            add_commit_object(dst, target.ostree_commit)
            write_app_uris(dst, dict(target.apps))
    return dst


def add_commit_object(bundle: Path, commit: str) -> Path:
    """Create ``ostree_repo/objects/<2>/<62>.commit`` (presence is all selection checks)."""
    path = bundle / "ostree_repo" / "objects" / commit[:2] / f"{commit[2:]}.commit"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"commit")
    return path


def resign(path: Path, change: Mutator, keys: list[SigningKey]) -> None:
    """Edit the ``signed`` part of a Foundries file and sign it again with ``keys``."""
    document = json.loads(path.read_bytes())
    change(document["signed"])
    path.write_bytes(sign_document(document["signed"], keys))


def edit_document(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit a Foundries file in place without re-signing (canonical output)."""
    document = json.loads(path.read_bytes())
    change(document)
    path.write_bytes(foundries_canonical(document))


def fresh_key() -> SigningKey:
    """A key no root knows."""
    return generate_key("ed25519")
