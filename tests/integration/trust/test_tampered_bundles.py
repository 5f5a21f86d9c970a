"""Foundries-dialect bundles with one attack each: ``aklite-offline check`` refuses every one
with its code and a message naming the file, and leaves the device's files byte-identical."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aklite_bundle.signing import expires_in, sign_document
from aklited.cli.offline_check import check
from aklited.engine.journal import Journal
from tests.helpers.tuf_repo import (
    edit_document,
    fresh_key,
    resign,
    target_spec,
    write_foundries_bundle,
)

from .conftest import Device

SECURITY, EXPIRED, NOT_FOUND, BUNDLE_META = 11, 12, 14, 15
NO_MATCH, NO_CONTENT, NOT_FOUND_TARGET = 6, 8, 20
PAST = expires_in(-1)


def good(device: Device, dst: Path, **kw: Any) -> Path:
    """A valid bundle (metadata version 2, target 42) for the device."""
    targets = kw.pop("targets", [target_spec(42)])
    return write_foundries_bundle(dst, device.ring, targets, version=2, **kw)


def mutate(role: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Device, Path], None]:
    def build(d: Device, dst: Path) -> None:
        good(d, dst, mutate={role: change})

    return build


def signed_by(role: str, keys: Callable[[Device], list[Any]]) -> Callable[[Device, Path], None]:
    def build(d: Device, dst: Path) -> None:
        good(d, dst, signers={role: keys(d)})

    return build


def post(change: Callable[[Device, Path], None]) -> Callable[[Device, Path], None]:
    def build(d: Device, dst: Path) -> None:
        good(d, dst)
        change(d, dst)

    return build


def tuf(dst: Path, name: str) -> Path:
    return dst / "tuf" / name


def write_root_v3(
    d: Device,
    dst: Path,
    *,
    change: Callable[[dict[str, Any]], None] | None = None,
    signers: list[Any] | None = None,
    number: int = 3,
) -> None:
    signed = d.ring.root_signed(3)
    if change:
        change(signed)
    tuf(dst, f"{number}.root.json").write_bytes(
        sign_document(signed, signers if signers is not None else d.ring.roles["root"])
    )


def root_attack(**kw: Any) -> Callable[[Device, Path], None]:
    return post(lambda d, dst: write_root_v3(d, dst, **kw))


def new_root_key(signed: dict[str, Any], key: Any) -> None:
    signed["keys"][key.keyid] = key.public_entry()
    signed["roles"]["root"]["keyids"] = [key.keyid]


NEW_KEY = fresh_key()


def ec_key(signed: dict[str, Any]) -> None:
    signed["keys"]["ec"] = {"keytype": "ECPRIME256V1", "keyval": {"public": "3059" + "00" * 89}}


def flip(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


def duplicate_signature(path: Path) -> None:
    edit_document(path, lambda doc: doc["signatures"].append(dict(doc["signatures"][0])))


def bad_base64(path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["signatures"][0]["sig"] = "@@not-base64@@"

    edit_document(path, change)


def unknown_method(path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["signatures"][0]["method"] = "rsassa-pkcs1v15"

    edit_document(path, change)


def seed_store(change: Callable[[Journal, Device], None]) -> Callable[[Device, Path], None]:
    def build(d: Device, dst: Path) -> None:
        good(d, dst)
        store = Journal.open(d.db_path)
        try:
            change(store, d)
        finally:
            store.close()

    return build


def stored_newer_timestamp_only(store: Journal, d: Device) -> None:
    newer = write_foundries_bundle(d.root / "newer", d.ring, [target_spec(43)], version=5)
    store.tuf_save("timestamp", 5, (newer / "tuf" / "timestamp.json").read_bytes())
    store.tuf_forget("snapshot")
    store.tuf_forget("targets")


def stored_snapshot_lists_newer_targets(store: Journal, d: Device) -> None:
    """The device trusts snapshot 1 listing targets version 7 (and no targets file)."""

    def newer_targets(signed: dict[str, Any]) -> None:
        signed["meta"]["targets.json"]["version"] = 7

    older = write_foundries_bundle(
        d.root / "older", d.ring, [target_spec(41)], version=1, mutate={"snapshot": newer_targets}
    )
    store.tuf_save("snapshot", 1, (older / "tuf" / "snapshot.json").read_bytes())
    store.tuf_forget("targets")


def oversize(path: Path, size: int) -> None:
    with path.open("r+b") as stream:
        stream.truncate(size)  # sparse: the reader must refuse on size, not read it all


def symlink_out(d: Device, dst: Path) -> None:
    target = tuf(dst, "targets.json")
    outside = d.root / "outside-targets.json"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)


def replace_with_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def remove(path: Path) -> None:
    path.unlink()


@dataclass(frozen=True)
class Attack:
    name: str
    code: int
    names: str
    build: Callable[[Device, Path], None]


def _on(name: str, action: Callable[[Path], None]) -> Callable[[Device, Path], None]:
    return post(lambda d, dst: action(tuf(dst, name)))


ATTACKS = [
    # -- root chain ---------------------------------------------------------------------
    Attack(
        "root-skips-version",
        SECURITY,
        "3.root.json",
        root_attack(change=lambda s: s.update(version=4)),
    ),
    Attack(
        "root-not-signed-by-old",
        SECURITY,
        "3.root.json",
        root_attack(change=lambda s: new_root_key(s, NEW_KEY), signers=[NEW_KEY]),
    ),
    Attack(
        "root-not-signed-by-new",
        SECURITY,
        "3.root.json",
        post(lambda d, dst: write_root_v3(d, dst, change=lambda s: new_root_key(s, NEW_KEY))),
    ),
    Attack("root-unsupported-key-type", SECURITY, "3.root.json", root_attack(change=ec_key)),
    Attack(
        "root-threshold-zero",
        SECURITY,
        "3.root.json",
        root_attack(change=lambda s: s["roles"]["targets"].update(threshold=0)),
    ),
    Attack(
        "root-expired", EXPIRED, "3.root.json", root_attack(change=lambda s: s.update(expires=PAST))
    ),
    Attack(
        "root-malformed",
        SECURITY,
        "3.root.json",
        post(lambda d, dst: tuf(dst, "3.root.json").write_bytes(b'{"signed": {')),
    ),
    Attack(
        "root-byte-flipped",
        SECURITY,
        "3.root.json",
        post(
            lambda d, dst: (
                write_root_v3(d, dst),
                flip(tuf(dst, "3.root.json"), b'"version":3', b'"version":4'),
            )
        ),
    ),
    # -- timestamp ------------------------------------------------------------------------
    Attack(
        "timestamp-wrong-key",
        SECURITY,
        "timestamp.json",
        signed_by("timestamp", lambda d: d.ring.roles["snapshot"]),
    ),
    Attack(
        "timestamp-unknown-key",
        SECURITY,
        "timestamp.json",
        signed_by("timestamp", lambda d: [NEW_KEY]),
    ),
    Attack("timestamp-unsigned", SECURITY, "timestamp.json", signed_by("timestamp", lambda d: [])),
    Attack(
        "timestamp-duplicate-signature",
        SECURITY,
        "timestamp.json",
        _on("timestamp.json", duplicate_signature),
    ),
    Attack("timestamp-bad-base64", SECURITY, "timestamp.json", _on("timestamp.json", bad_base64)),
    Attack(
        "timestamp-unknown-method",
        SECURITY,
        "timestamp.json",
        _on("timestamp.json", unknown_method),
    ),
    Attack(
        "timestamp-byte-flipped",
        SECURITY,
        "timestamp.json",
        _on("timestamp.json", lambda p: flip(p, b'"version":2}', b'"version":3}')),
    ),
    Attack(
        "timestamp-expired",
        EXPIRED,
        "timestamp.json",
        mutate("timestamp", lambda s: s.update(expires=PAST)),
    ),
    Attack(
        "timestamp-bad-expires",
        SECURITY,
        "timestamp.json",
        mutate("timestamp", lambda s: s.update(expires="next tuesday")),
    ),
    Attack(
        "timestamp-wrong-type",
        SECURITY,
        "timestamp.json",
        mutate("timestamp", lambda s: s.update(_type="Snapshot")),
    ),
    Attack(
        "timestamp-lowercase-type",
        SECURITY,
        "timestamp.json",
        mutate("timestamp", lambda s: s.update(_type="timestamp")),
    ),
    Attack(
        "timestamp-no-snapshot-hash",
        SECURITY,
        "timestamp.json",
        mutate("timestamp", lambda s: s["meta"]["snapshot.json"].pop("hashes")),
    ),
    Attack(
        "timestamp-rollback", SECURITY, "timestamp.json", seed_store(stored_newer_timestamp_only)
    ),
    Attack("timestamp-missing", NOT_FOUND, "timestamp.json", _on("timestamp.json", remove)),
    Attack(
        "timestamp-oversized",
        SECURITY,
        "timestamp.json",
        _on("timestamp.json", lambda p: oversize(p, 64 * 1024 + 1)),
    ),
    Attack(
        "timestamp-deep-nesting",
        SECURITY,
        "timestamp.json",
        _on("timestamp.json", lambda p: p.write_bytes(b"[" * 30000 + b"]" * 30000)),
    ),
    Attack(
        "timestamp-is-directory",
        SECURITY,
        "timestamp.json",
        _on("timestamp.json", replace_with_dir),
    ),
    Attack(
        "timestamp-nan",
        SECURITY,
        "timestamp.json",
        _on("timestamp.json", lambda p: p.write_bytes(b'{"signed": NaN, "signatures": []}')),
    ),
    # -- snapshot -------------------------------------------------------------------------
    Attack(
        "snapshot-wrong-hash",
        SECURITY,
        "snapshot.json",
        mutate(
            "timestamp", lambda s: s["meta"]["snapshot.json"].update(hashes={"sha256": "0" * 64})
        ),
    ),
    Attack(
        "snapshot-wrong-length",
        SECURITY,
        "snapshot.json",
        mutate("timestamp", lambda s: s["meta"]["snapshot.json"].update(length=3)),
    ),
    Attack(
        "snapshot-version-mismatch",
        SECURITY,
        "snapshot.json",
        mutate("timestamp", lambda s: s["meta"]["snapshot.json"].update(version=3)),
    ),
    Attack(
        "snapshot-wrong-key",
        SECURITY,
        "snapshot.json",
        signed_by("snapshot", lambda d: d.ring.roles["timestamp"]),
    ),
    Attack(
        "snapshot-expired",
        EXPIRED,
        "snapshot.json",
        mutate("snapshot", lambda s: s.update(expires=PAST)),
    ),
    Attack(
        "snapshot-targets-rollback",
        SECURITY,
        "snapshot.json",
        seed_store(stored_snapshot_lists_newer_targets),
    ),
    Attack("snapshot-missing", NOT_FOUND, "snapshot.json", _on("snapshot.json", remove)),
    Attack(
        "snapshot-not-utf8",
        SECURITY,
        "snapshot.json",
        _on("snapshot.json", lambda p: p.write_bytes(b'{"signed": "\xff\xfe"}')),
    ),
    Attack("snapshot-fifo", SECURITY, "snapshot.json", _on("snapshot.json", replace_with_fifo)),
    # -- targets --------------------------------------------------------------------------
    Attack(
        "targets-byte-flipped",
        SECURITY,
        "targets.json",
        _on("targets.json", lambda p: flip(p, b'"version":"42"', b'"version":"99"')),
    ),
    Attack(
        "targets-wrong-key",
        SECURITY,
        "targets.json",
        signed_by("targets", lambda d: d.ring.roles["snapshot"]),
    ),
    Attack(
        "targets-expired",
        EXPIRED,
        "targets.json",
        mutate("targets", lambda s: s.update(expires=PAST)),
    ),
    Attack(
        "targets-version-mismatch",
        SECURITY,
        "targets.json",
        mutate("snapshot", lambda s: s["meta"].update({"targets.json": {"version": 3}})),
    ),
    Attack("targets-missing", NOT_FOUND, "targets.json", _on("targets.json", remove)),
    Attack(
        "targets-oversized",
        SECURITY,
        "targets.json",
        _on("targets.json", lambda p: oversize(p, 16 * 1024 * 1024 + 1)),
    ),
    Attack(
        "targets-malformed",
        SECURITY,
        "targets.json",
        _on("targets.json", lambda p: p.write_bytes(b'{"signed": {"_type": "Targets",')),
    ),
    Attack(
        "targets-duplicate-key",
        SECURITY,
        "targets.json",
        _on(
            "targets.json",
            lambda p: p.write_bytes(b'{"signed": {}, "signed": {}, "signatures": []}'),
        ),
    ),
    Attack("targets-symlink-outside", SECURITY, "targets.json", post(symlink_out)),
    # -- bundle-targets.json --------------------------------------------------------------
    Attack("bundle-missing", NOT_FOUND, "bundle-targets.json", _on("bundle-targets.json", remove)),
    Attack(
        "bundle-wrong-key",
        BUNDLE_META,
        "bundle-targets.json",
        signed_by("bundle-targets", lambda d: d.ring.roles["snapshot"]),
    ),
    Attack(
        "bundle-unsigned",
        BUNDLE_META,
        "bundle-targets.json",
        signed_by("bundle-targets", lambda d: []),
    ),
    Attack(
        "bundle-byte-flipped",
        BUNDLE_META,
        "bundle-targets.json",
        _on("bundle-targets.json", lambda p: flip(p, b'"tag":"main"', b'"tag":"mainx"')),
    ),
    Attack(
        "bundle-expired",
        EXPIRED,
        "bundle-targets.json",
        mutate("bundle-targets", lambda s: s.update(expires=PAST)),
    ),
    Attack(
        "bundle-type-prod",
        BUNDLE_META,
        "bundle-targets.json",
        post(lambda d, dst: good(d, dst, bundle_type="prod")),
    ),
    Attack(
        "bundle-wrong-tag",
        BUNDLE_META,
        "bundle-targets.json",
        post(lambda d, dst: good(d, dst, tag="devel")),
    ),
    Attack(
        "bundle-wrong-type-field",
        BUNDLE_META,
        "bundle-targets.json",
        mutate("bundle-targets", lambda s: s.update(_type="Snapshot")),
    ),
    Attack(
        "bundle-no-offline-object",
        BUNDLE_META,
        "bundle-targets.json",
        mutate("bundle-targets", lambda s: s.pop("x-fio-offline-bundle")),
    ),
    Attack(
        "bundle-malformed",
        BUNDLE_META,
        "bundle-targets.json",
        _on("bundle-targets.json", lambda p: p.write_bytes(b"not json")),
    ),
    Attack(
        "bundle-oversized",
        SECURITY,  # refused by the drive reader, as every metadata file over its limit
        "bundle-targets.json",
        _on("bundle-targets.json", lambda p: oversize(p, 1024 * 1024 + 1)),
    ),
    # -- selection and content ------------------------------------------------------------
    Attack(
        "target-wrong-hwid",
        NO_MATCH,
        "bundle-targets.json",
        post(lambda d, dst: good(d, dst, targets=[target_spec(42, hwid="imx8mm-lpddr4")])),
    ),
    Attack(
        "target-wrong-tags",
        NO_MATCH,
        "bundle-targets.json",
        post(lambda d, dst: good(d, dst, targets=[target_spec(42, tags=("devel",))])),
    ),
    Attack(
        "target-not-in-bundle-list",
        NO_MATCH,
        "bundle-targets.json",
        post(lambda d, dst: good(d, dst, bundle_names=["other-lmp-1"])),
    ),
    Attack(
        "target-not-ostree",
        NO_MATCH,
        "bundle-targets.json",
        post(
            lambda d, dst: good(
                d, dst, targets=[target_spec(42, custom={"targetFormat": "BINARY"})]
            )
        ),
    ),
    Attack(
        "ostree-commit-missing",
        NO_CONTENT,
        "ostree_repo/objects",
        post(lambda d, dst: shutil.rmtree(dst / "ostree_repo")),
    ),
    Attack(
        "app-missing",
        NO_CONTENT,
        "apps/",
        post(lambda d, dst: [p.unlink() for p in dst.glob("apps/apps/*/*/uri")]),
    ),
    Attack(
        "tuf-dir-missing",
        NOT_FOUND,
        "tuf",
        post(
            lambda d, dst: [p.unlink() for p in (dst / "tuf").iterdir()] and (dst / "tuf").rmdir()
        ),
    ),
]


def test_enough_distinct_attacks() -> None:
    assert len({a.name for a in ATTACKS}) == len(ATTACKS) >= 40


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
async def test_attack_refused(
    attack: Attack, device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    await asyncio.to_thread(attack.build, device, bundle)
    capsys.readouterr()
    before = device.state()
    code = await check(device.config, bundle)
    out = capsys.readouterr()
    assert code == attack.code, out.err
    assert attack.names in out.err
    assert REASONS[attack.name] in out.err
    assert out.err.startswith("aklite-offline: error: ") and out.err.count("\n") == 1
    assert device.state() == before


async def test_good_bundle_offers_update(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = good(device, tmp_path / "bundle")
    before = device.state()
    assert await check(device.config, bundle) == 16
    out = capsys.readouterr().out
    assert "Target: raspberrypi4-64-lmp-42" in out and "Version: 42" in out
    assert device.state() == before


def test_base64_signature_is_what_fioctl_writes(device: Device, tmp_path: Path) -> None:
    bundle = good(device, tmp_path / "bundle")
    doc = json.loads(tuf(bundle, "targets.json").read_bytes())
    sig = doc["signatures"][0]
    assert sig["method"] == "ed25519"
    assert len(base64.b64decode(sig["sig"], validate=True)) == 64
    assert doc["signed"]["_type"] == "Targets"
    # resigning with the right key makes a flipped file valid again: the flip was the attack
    resign(tuf(bundle, "targets.json"), lambda s: None, device.ring.roles["targets"])


# The reason each attack must be refused for (a refusal for another reason would hide a gap).
REASONS = {
    "root-skips-version": "expected 3",
    "root-not-signed-by-old": "root keys of root v2",
    "root-not-signed-by-new": "root keys of root v3",
    "root-unsupported-key-type": "unsupported key type",
    "root-threshold-zero": "threshold",
    "root-expired": "expired",
    "root-malformed": "not valid JSON",
    "root-byte-flipped": "valid signature",
    "timestamp-wrong-key": "valid signature",
    "timestamp-unknown-key": "valid signature",
    "timestamp-unsigned": "valid signature",
    "timestamp-duplicate-signature": "more than once",
    "timestamp-bad-base64": "valid signature",
    "timestamp-unknown-method": "unsupported method",
    "timestamp-byte-flipped": "valid signature",
    "timestamp-expired": "expired",
    "timestamp-bad-expires": "expires",
    "timestamp-wrong-type": "_type",
    "timestamp-lowercase-type": "_type",
    "timestamp-no-snapshot-hash": "hashes",
    "timestamp-rollback": "rollback",
    "timestamp-missing": "missing",
    "timestamp-oversized": "limit",
    "timestamp-deep-nesting": "nested",
    "timestamp-is-directory": "not a regular file",
    "timestamp-nan": "NaN",
    "snapshot-wrong-hash": "hash differs",
    "snapshot-wrong-length": "length differs",
    "snapshot-version-mismatch": "timestamp.json lists 3",
    "snapshot-wrong-key": "valid signature",
    "snapshot-expired": "expired",
    "snapshot-targets-rollback": "rollback",
    "snapshot-missing": "missing",
    "snapshot-not-utf8": "UTF-8",
    "snapshot-fifo": "not a regular file",
    "targets-byte-flipped": "hash differs",
    "targets-wrong-key": "valid signature",
    "targets-expired": "expired",
    "targets-version-mismatch": "snapshot.json lists 3",
    "targets-missing": "missing",
    "targets-oversized": "limit",
    "targets-malformed": "not valid JSON",
    "targets-duplicate-key": "duplicate key",
    "targets-symlink-outside": "outside",
    "bundle-missing": "missing",
    "bundle-wrong-key": "valid signature",
    "bundle-unsigned": "valid signature",
    "bundle-byte-flipped": "valid signature",
    "bundle-expired": "expired",
    "bundle-type-prod": "bundle type 'prod'",
    "bundle-wrong-tag": "bundle tag 'devel'",
    "bundle-wrong-type-field": "_type",
    "bundle-no-offline-object": "x-fio-offline-bundle",
    "bundle-malformed": "not valid JSON",
    "bundle-oversized": "limit",
    "target-wrong-hwid": "hardware id",
    "target-wrong-tags": "hardware id",
    "target-not-in-bundle-list": "none of the bundle's targets",
    "target-not-ostree": "hardware id",
    "ostree-commit-missing": "OSTree commit",
    "app-missing": "app shellhttpd",
    "tuf-dir-missing": "not an offline update bundle",
}


def test_every_attack_has_a_reason() -> None:
    assert set(REASONS) == {a.name for a in ATTACKS}
