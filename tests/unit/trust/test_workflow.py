"""The workflow's policy: persistence, rollback fallback, provisioned roots, rotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from aklite_bundle.signing import Keyring, meta_entry, sign_document
from aklited.bundle.device import DeviceFacts
from aklited.bundle.verify import verify_bundle_sync
from aklited.errors import TrustError
from aklited.trust.canonical import foundries_canonical
from aklited.trust.errors import MetadataRollbackError
from aklited.trust.source import DirectorySource
from aklited.trust.storage import DirectoryTrustStore, OverlayTrustStore
from aklited.trust.workflow import TrustWorkflow, VerifiedMetadata
from tests.helpers.tuf_repo import (
    HWID,
    TAG,
    edit_document,
    keyring,
    resign,
    target_spec,
    write_foundries_bundle,
)


def bundle(
    tmp_path: Path, name: str, version: int, ring: Keyring | None = None, **kw: object
) -> Path:
    ring = ring or keyring()
    return write_foundries_bundle(
        tmp_path / name,
        ring,
        [target_spec(40 + version)],
        version=version,
        **kw,  # type: ignore[arg-type]
    )


def run(tuf: Path, store: object, **kw: object) -> VerifiedMetadata:
    return TrustWorkflow(
        source=DirectorySource(tuf / "tuf"),
        store=store,
        label_prefix="tuf/",
        **kw,  # type: ignore[arg-type]
    ).refresh()


def trusted_dir(tmp_path: Path, ring: Keyring | None = None) -> Path:
    directory = tmp_path / "trusted"
    directory.mkdir()
    (directory / "root.json").write_bytes((ring or keyring()).roots[0])
    return directory


def test_directory_store_keeps_exact_verified_bytes(tmp_path: Path) -> None:
    trusted = trusted_dir(tmp_path)
    b = bundle(tmp_path, "b", 2)
    result = run(b, DirectoryTrustStore(trusted))
    assert result.root.version == 2 and result.rotations == 1
    for role in ("timestamp", "snapshot", "targets"):
        assert (trusted / f"{role}.json").read_bytes() == (b / "tuf" / f"{role}.json").read_bytes()
    assert (trusted / "root.json").read_bytes() == (b / "tuf" / "2.root.json").read_bytes()
    assert sorted(p.name for p in trusted.iterdir()) == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]


def test_later_failure_keeps_what_was_proven(tmp_path: Path) -> None:
    trusted = trusted_dir(tmp_path)
    b = bundle(tmp_path, "b", 2)
    resign(b / "tuf" / "targets.json", lambda s: None, keyring().roles["snapshot"])
    with pytest.raises(TrustError) as err:
        run(b, DirectoryTrustStore(trusted))
    assert err.value.code == 11 and "tuf/targets.json" in err.value.message
    assert (trusted / "timestamp.json").exists() and (trusted / "snapshot.json").exists()
    assert not (trusted / "targets.json").exists()
    assert json.loads((trusted / "root.json").read_bytes())["signed"]["version"] == 2


def test_failed_timestamp_is_not_persisted(tmp_path: Path) -> None:
    trusted = trusted_dir(tmp_path)
    b = bundle(
        tmp_path, "b", 2, mutate={"timestamp": lambda s: s.update(expires="2000-01-01T00:00:00Z")}
    )
    with pytest.raises(TrustError) as err:
        run(b, DirectoryTrustStore(trusted))
    assert err.value.code == 12
    assert not (trusted / "timestamp.json").exists()


def test_overlay_never_writes_its_base(tmp_path: Path) -> None:
    trusted = trusted_dir(tmp_path)
    before = {p.name: p.read_bytes() for p in trusted.iterdir()}
    overlay = OverlayTrustStore(DirectoryTrustStore(trusted))
    run(bundle(tmp_path, "b", 2), overlay)
    assert {p.name: p.read_bytes() for p in trusted.iterdir()} == before
    assert overlay.tuf_latest("targets") is not None
    overlay.tuf_forget("root")
    assert overlay.tuf_latest("root") is None
    assert (trusted / "root.json").exists()


def test_older_bundle_falls_back_to_stored_metadata(tmp_path: Path) -> None:
    store = DirectoryTrustStore(trusted_dir(tmp_path))
    run(bundle(tmp_path, "new", 3), store)
    result = run(bundle(tmp_path, "old", 2), store)
    assert result.from_store
    assert result.targets.version == 3
    assert list(result.targets.signed.targets) == [target_spec(43).name]
    with pytest.raises(MetadataRollbackError) as err:
        run(bundle(tmp_path, "old2", 2), store, fallback_to_store=False)
    assert err.value.code == 11 and "rollback" in err.value.message


def test_same_bundle_twice_is_accepted(tmp_path: Path) -> None:
    store = DirectoryTrustStore(trusted_dir(tmp_path))
    b = bundle(tmp_path, "b", 2)
    first = run(b, store)
    second = run(b, store)
    assert not second.from_store
    assert second.targets.envelope.raw == first.targets.envelope.raw


def test_provisioned_roots_imported_on_first_use(tmp_path: Path) -> None:
    ring = keyring()
    provisioned = tmp_path / "ci"
    provisioned.mkdir()
    for version, raw in enumerate(ring.roots, start=1):
        (provisioned / f"{version}.root.json").write_bytes(raw)
    store = OverlayTrustStore(None)
    result = run(bundle(tmp_path, "b", 2), store, provisioned_roots=provisioned)
    assert result.root.version == 2 and result.rotations == 0
    assert store.tuf_latest("root") == ring.roots[1]


def test_broken_provisioned_chain_and_no_root(tmp_path: Path) -> None:
    ring = keyring()
    provisioned = tmp_path / "ci"
    provisioned.mkdir()
    (provisioned / "1.root.json").write_bytes(ring.roots[0])
    doc = json.loads(ring.roots[1])
    doc["signatures"] = []
    (provisioned / "2.root.json").write_bytes(foundries_canonical(doc))
    with pytest.raises(TrustError) as err:
        run(bundle(tmp_path, "b", 2), OverlayTrustStore(None), provisioned_roots=provisioned)
    assert err.value.code == 11 and "2.root.json" in err.value.message
    with pytest.raises(TrustError) as err:
        run(bundle(tmp_path, "c", 2), OverlayTrustStore(None), provisioned_roots=tmp_path / "none")
    assert err.value.code == 14


def test_rotation_cap(tmp_path: Path) -> None:
    ring = Keyring.generate(kind="ed25519")
    for _ in range(3):
        ring.rotate("root")
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    b = bundle(tmp_path, "b", 2, ring=ring)
    with pytest.raises(TrustError) as err:
        run(b, store, max_rotations=2)
    assert err.value.code == 11 and "4.root.json" in err.value.message
    assert run(b, store, max_rotations=3).root.version == 4


def test_timestamp_key_rotation_forgets_stored_timestamp(tmp_path: Path) -> None:
    ring = Keyring.generate(kind="ed25519")
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    run(bundle(tmp_path, "v5", 5, ring=ring), store)
    ring.rotate("timestamp")
    # Version 1 after the rotation: recovery from a compromised timestamp key (spec 5.3.11).
    result = run(bundle(tmp_path, "v1", 1, ring=ring), store, fallback_to_store=False)
    assert result.timestamp.version == 1 and result.root.version == 2


def test_rsa_keyring_and_non_ascii_custom(tmp_path: Path) -> None:
    ring = Keyring.generate(kind="rsa", rsa_bits=2048)
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    spec = target_spec(42, custom={"note": "café\nligne 2 😀"})
    b = write_foundries_bundle(tmp_path / "b", ring, [spec], version=1)
    assert b"caf\\u00e9\\n" in (b / "tuf" / "targets.json").read_bytes()
    result = run(b, store)
    assert result.targets.signed.targets[spec.name].custom["note"] == "café\nligne 2 😀"


def test_snapshot_hash_over_canonical_form(tmp_path: Path) -> None:
    """aktualizr hashes the canonical form of the parsed snapshot, not the file's bytes."""
    ring = keyring()
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    b = bundle(tmp_path, "b", 2)
    snapshot = b / "tuf" / "snapshot.json"
    canonical = snapshot.read_bytes()
    snapshot.write_bytes(json.dumps(json.loads(canonical), indent=2).encode())  # same content
    assert run(b, store).snapshot.version == 2
    # ... and a hash of something else is still refused
    timestamp = json.loads((b / "tuf" / "timestamp.json").read_bytes())["signed"]
    timestamp["meta"]["snapshot.json"] = meta_entry(canonical + b" ", 2)
    (b / "tuf" / "timestamp.json").write_bytes(sign_document(timestamp, ring.roles["timestamp"]))
    fresh = OverlayTrustStore(None)
    fresh.tuf_save("root", 1, ring.roots[0])
    with pytest.raises(TrustError) as err:
        run(b, fresh)
    assert err.value.code == 11 and "snapshot.json" in err.value.message


def test_one_key_under_two_key_ids_counts_once(tmp_path: Path) -> None:
    ring = Keyring.generate(kind="ed25519")
    key = ring.roles["timestamp"][0]
    signed = ring.root_signed(2)
    signed["keys"]["alias"] = key.public_entry()
    signed["roles"]["timestamp"] = {"keyids": [key.keyid, "alias"], "threshold": 2}
    b = write_foundries_bundle(tmp_path / "b", ring, [target_spec(42)], version=1)
    (b / "tuf" / "2.root.json").write_bytes(sign_document(signed, ring.roles["root"]))
    edit_document(
        b / "tuf" / "timestamp.json",
        lambda d: d["signatures"].append({**d["signatures"][0], "keyid": "alias"}),
    )
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    with pytest.raises(TrustError) as err:
        run(b, store)
    assert err.value.code == 11
    assert "tuf/timestamp.json: 1 valid signature(s)" in err.value.message
    assert "2 required" in err.value.message


def test_rollback_message_names_role_and_both_versions(tmp_path: Path) -> None:
    store = DirectoryTrustStore(trusted_dir(tmp_path))
    run(bundle(tmp_path, "new", 5), store)
    result = run(bundle(tmp_path, "old", 3), store)
    assert result.from_store
    assert result.rollback == (
        "tuf/timestamp.json: version 3 is older than the trusted version 5 (rollback)"
    )
    assert not run(bundle(tmp_path, "same", 5), store).rollback


def test_device_fallback_says_the_drive_is_older(tmp_path: Path) -> None:
    """The device keeps the stored-copy fallback, and its log says why the drive was not used."""
    ring = keyring()
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    device = DeviceFacts(hardware_id=HWID, device_type="ci", tags=(TAG,))
    verify_bundle_sync(
        bundle(tmp_path, "new", 3), store=store, device=device, provisioned_roots=None
    )
    with structlog.testing.capture_logs() as logs:
        older = verify_bundle_sync(
            bundle(tmp_path, "old", 2), store=store, device=device, provisioned_roots=None
        )
    assert older.metadata.from_store and older.metadata.targets.version == 3
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    said = [entry for entry in warnings if "drive's TUF metadata is older" in entry["event"]]
    assert said, warnings
    assert said[0]["reason"] == (
        "tuf/timestamp.json: version 2 is older than the trusted version 3 (rollback)"
    )
