"""TUF-spec metadata written by python-tuf: ours and python-tuf's TrustedMetadataSet agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aklited.errors import TrustError
from aklited.outcomes import StatusCode
from aklited.trust.source import DirectorySource
from aklited.trust.storage import OverlayTrustStore
from aklited.trust.workflow import TrustWorkflow
from tests.helpers.tuf_repo import KEY_TYPES, TufRepo, edit_json, oracle_verdict, signer

PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


@dataclass
class Case:
    """Trusted root, offered files, stored metadata, expected code (0 = accepted)."""

    trusted_root: bytes
    files: dict[str, bytes]
    expected: int
    stored: dict[str, bytes] = field(default_factory=dict)
    names_file: str = ""


def _repo(key_type: str, **kw: object) -> TufRepo:
    repo = TufRepo(key_type=key_type, **kw)  # type: ignore[arg-type]
    repo.add_target("rpi-lmp-1", {"hardwareIds": ["rpi"], "version": "1", "targetFormat": "OSTREE"})
    return repo


def valid(kt: str) -> Case:
    f = _repo(kt).files()
    return Case(f["1.root.json"], f, 0)


def non_ascii_custom(kt: str) -> Case:
    repo = _repo(kt)
    repo.add_target("café", {"note": "line one\nline two \x01 😀", "😀key": "ü"})
    f = repo.files()
    return Case(f["1.root.json"], f, 0)


def rotation(kt: str) -> Case:
    repo = _repo(kt)
    repo.rotate_root(signer(kt, 5))
    repo.rotate_root(signer(kt, 6))
    f = repo.files()
    return Case(f["1.root.json"], f, 0)


def byte_flipped_targets(kt: str) -> Case:
    f = _repo(kt, hash_targets=False).files()
    f["targets.json"] = f["targets.json"].replace(b'"rpi"', b'"rpj"')
    return Case(f["1.root.json"], f, 11, names_file="targets.json")


def byte_flipped_signature(kt: str) -> Case:
    f = _repo(kt).files()

    def flip(doc: dict) -> None:  # type: ignore[type-arg]
        sig = doc["signatures"][0]["sig"]
        doc["signatures"][0]["sig"] = ("0" if sig[10] != "0" else "1").join((sig[:10], sig[11:]))

    f["timestamp.json"] = edit_json(f["timestamp.json"], flip)
    return Case(f["1.root.json"], f, 11, names_file="timestamp.json")


def signature_below_threshold(kt: str) -> Case:
    f = _repo(kt, targets_threshold=2, hash_targets=False).files()
    f["targets.json"] = edit_json(f["targets.json"], lambda d: d["signatures"].pop())
    return Case(f["1.root.json"], f, 11, names_file="targets.json")


def duplicated_signature(kt: str) -> Case:
    f = _repo(kt).files()
    f["timestamp.json"] = edit_json(
        f["timestamp.json"], lambda d: d["signatures"].append(dict(d["signatures"][0]))
    )
    return Case(f["1.root.json"], f, 11, names_file="timestamp.json")


def duplicated_signature_threshold_two(kt: str) -> Case:
    f = _repo(kt, targets_threshold=2, hash_targets=False).files()

    def twice(d: dict) -> None:  # type: ignore[type-arg]
        d["signatures"] = [d["signatures"][0], dict(d["signatures"][0])]

    f["targets.json"] = edit_json(f["targets.json"], twice)
    return Case(f["1.root.json"], f, 11, names_file="targets.json")


def _expired(role: str) -> Callable[[str], Case]:
    def make(kt: str) -> Case:
        repo = _repo(kt)
        trusted = repo.roots[0]
        md = {"root": repo.root, "timestamp": repo.timestamp}.get(role)
        if role == "root":
            repo.root.signed.expires = PAST
            repo.root.signed.version += 1
            repo._sign(repo.root)
            repo.roots.append(repo._serialize(repo.root))
        elif md is not None:
            md.signed.expires = PAST
        else:
            getattr(repo, role).signed.expires = PAST
        f = repo.files()
        name = "2.root.json" if role == "root" else f"{role}.json"
        return Case(trusted, f, 12, names_file=name)

    make.__name__ = f"expired_{role}"
    return make


def rolled_back_timestamp(kt: str) -> Case:
    repo = _repo(kt)
    old = repo.files()
    repo.bump()
    new = repo.files()
    return Case(old["1.root.json"], old, 11, {"timestamp": new["timestamp.json"]}, "timestamp.json")


def rolled_back_targets_in_snapshot(kt: str) -> Case:
    repo = _repo(kt)
    repo.bump()
    stored = repo.files()
    repo.timestamp.signed.version += 1
    repo.snapshot.signed.version += 1
    repo.targets.signed.version -= 1
    offered = repo.files()
    seeds = {"timestamp": stored["timestamp.json"], "snapshot": stored["snapshot.json"]}
    return Case(stored["1.root.json"], offered, 11, seeds, "snapshot.json")


def skipped_root_version(kt: str) -> Case:
    repo = _repo(kt)
    repo.rotate_root(signer(kt, 5), version_step=2)
    f = repo.files()
    return Case(f["1.root.json"], f, 11, names_file="2.root.json")


def rotation_without_old_signature(kt: str) -> Case:
    repo = _repo(kt)
    repo.rotate_root(signer(kt, 5))
    repo._sign(repo.root, [signer(kt, 5)])
    repo.roots[-1] = repo._serialize(repo.root)
    f = repo.files()
    return Case(f["1.root.json"], f, 11, names_file="2.root.json")


def wrong_snapshot_hash(kt: str) -> Case:
    def tamper(ts: object) -> None:
        ts.snapshot_meta.hashes = {"sha256": "00" * 32}  # type: ignore[attr-defined]

    f = _repo(kt).files(tamper_timestamp=tamper)
    return Case(f["1.root.json"], f, 11, names_file="snapshot.json")


def wrong_snapshot_length(kt: str) -> Case:
    def tamper(ts: object) -> None:
        ts.snapshot_meta.length += 1  # type: ignore[attr-defined]

    f = _repo(kt).files(tamper_timestamp=tamper)
    return Case(f["1.root.json"], f, 11, names_file="snapshot.json")


def wrong_targets_hash(kt: str) -> Case:
    f = _repo(kt).files()
    f["targets.json"] = f["targets.json"] + b"\n"  # raw bytes differ from the listed hash
    return Case(f["1.root.json"], f, 11, names_file="targets.json")


def snapshot_version_mismatch(kt: str) -> Case:
    def tamper(ts: object) -> None:
        ts.snapshot_meta.version += 1  # type: ignore[attr-defined]

    f = _repo(kt).files(tamper_timestamp=tamper)
    return Case(f["1.root.json"], f, 11, names_file="snapshot.json")


def wrong_type(kt: str) -> Case:
    f = _repo(kt).files()
    f["snapshot.json"] = f["snapshot.json"].replace(b'"_type": "snapshot"', b'"_type": "targets"')
    return Case(f["1.root.json"], f, 11, names_file="snapshot.json")


CASES = [
    valid,
    non_ascii_custom,
    rotation,
    byte_flipped_targets,
    byte_flipped_signature,
    signature_below_threshold,
    duplicated_signature,
    duplicated_signature_threshold_two,
    _expired("root"),
    _expired("timestamp"),
    _expired("snapshot"),
    _expired("targets"),
    rolled_back_timestamp,
    rolled_back_targets_in_snapshot,
    skipped_root_version,
    rotation_without_old_signature,
    wrong_snapshot_hash,
    wrong_snapshot_length,
    wrong_targets_hash,
    snapshot_version_mismatch,
    wrong_type,
]


def run_ours(case: Case, tmp_path: Path) -> tuple[int, str]:
    tuf = tmp_path / "bundle" / "tuf"
    tuf.mkdir(parents=True)
    for name, data in case.files.items():
        (tuf / name).write_bytes(data)
    store = OverlayTrustStore(None)
    version = json.loads(case.trusted_root)["signed"]["version"]
    store.tuf_save("root", version, case.trusted_root)
    for role, data in case.stored.items():
        store.tuf_save(role, 0, data)
    workflow = TrustWorkflow(
        source=DirectorySource(tuf), store=store, fallback_to_store=False, label_prefix="tuf/"
    )
    try:
        workflow.refresh()
    except TrustError as e:
        return int(e.code), e.message
    return 0, ""


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_agrees_with_python_tuf(make: Callable[[str], Case], key_type: str, tmp_path: Path) -> None:
    case = make(key_type)
    code, message = run_ours(case, tmp_path)
    assert code == case.expected, message
    oracle = oracle_verdict(case.trusted_root, case.files, stored=case.stored)
    assert oracle == (code == 0), f"python-tuf {'accepts' if oracle else 'refuses'}: {message}"
    if case.expected:
        assert case.names_file in message
        assert code in (StatusCode.SECURITY_ERROR, StatusCode.METADATA_EXPIRED)
