"""Integers in signed metadata are range-checked (11, naming the file), never a crash later.

Ranges: any JSON integer within signed 64 bits; versions 1..2**31-1; lengths 0..2**63-1;
thresholds 1..1000; succinct bit_length 1..32; ``custom.version`` within stoi's int.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Snapshot

from aklited.bundle.device import DeviceFacts
from aklited.bundle.select import parse_version, select_target_sync
from aklited.bundle.verify import verify_bundle_sync
from aklited.engine.journal import Journal
from aklited.errors import TrustError
from aklited.outcomes import StatusCode
from aklited.trust.metadata import MAX_VERSION, load_json
from aklited.trust.source import DirectorySource
from aklited.trust.storage import OverlayTrustStore
from aklited.trust.workflow import TrustWorkflow, VerifiedMetadata
from tests.helpers.tuf_repo import (
    HWID,
    TAG,
    TufRepo,
    keyring,
    target_spec,
    write_files,
    write_foundries_bundle,
)


def run(files: dict[str, bytes], tmp_path: Path, store: Any = None) -> VerifiedMetadata:
    tuf = write_files(tmp_path / "bundle" / "tuf", files)
    if store is None:
        store = OverlayTrustStore(None)
        store.tuf_save("root", 1, files["1.root.json"])
    return TrustWorkflow(source=DirectorySource(tuf), store=store, label_prefix="tuf/").refresh()


def refused(files: dict[str, bytes], tmp_path: Path, store: Any = None) -> TrustError:
    with pytest.raises(TrustError) as err:
        run(files, tmp_path, store)
    assert err.value.code == StatusCode.SECURITY_ERROR, err.value.message
    assert "\n" not in err.value.message
    return err.value


# ---- JSON numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("1" * 5000, "holds an integer of 5000 digits, beyond 64 bits"),
        ("-" + "9" * 4400, "holds an integer of 4400 digits, beyond 64 bits"),
        (str(2**63), "holds the integer 9223372036854775808, beyond 64 bits"),
        (str(-(2**63) - 1), "holds the integer -9223372036854775809, beyond 64 bits"),
    ],
)
def test_json_integers_beyond_64_bits_are_11(number: str, reason: str) -> None:
    with pytest.raises(TrustError) as err:
        load_json(f'{{"signed": {{"version": {number}}}}}'.encode(), "tuf/timestamp.json")
    assert err.value.code == StatusCode.SECURITY_ERROR
    assert err.value.message == f"tuf/timestamp.json: {reason}"


def test_json_integers_at_the_64_bit_edges_load() -> None:
    raw = f"[{2**63 - 1}, {-(2**63)}, 0, -0, 1.5e400]".encode()
    assert load_json(raw, "x.json")[:4] == [2**63 - 1, -(2**63), 0, 0]


# ---- signed TUF-dialect fields (python-tuf signs the huge values happily) -------------


def _repo() -> TufRepo:
    repo = TufRepo(hash_targets=False)
    repo.add_target("fw.bin", {})
    return repo


def _set(role: str, field: str, value: int) -> Callable[[TufRepo], None]:
    def change(repo: TufRepo) -> None:
        setattr(getattr(repo, role).signed, field, value)

    return change


def _target_length(value: int) -> Callable[[TufRepo], None]:
    def change(repo: TufRepo) -> None:
        repo.targets.signed.targets["fw.bin"].length = value

    return change


def _delegation_threshold(value: int) -> Callable[[TufRepo], None]:
    def change(repo: TufRepo) -> None:
        repo.delegate("targets", "fw", threshold=1)
        delegations = repo.targets.signed.delegations
        assert delegations is not None and delegations.roles is not None
        delegations.roles["fw"].threshold = value

    return change


CHANGES: dict[str, tuple[Callable[[TufRepo], None], str]] = {
    "timestamp_version_10**400": (
        _set("timestamp", "version", 10**400),
        "tuf/timestamp.json: holds an integer of 401 digits, beyond 64 bits",
    ),
    "timestamp_version_2**31": (
        _set("timestamp", "version", 2**31),
        "tuf/timestamp.json: version 2147483648 is outside 1..2147483647",
    ),
    "snapshot_version_2**40": (
        _set("snapshot", "version", 2**40),
        "tuf/timestamp.json: meta.snapshot.json.version 1099511627776 is outside 1..2147483647",
    ),
    "targets_version_2**62": (
        _set("targets", "version", 2**62),
        "tuf/snapshot.json: meta.targets.json.version 4611686018427387904 is outside",
    ),
    "target_length_10**30": (
        _target_length(10**30),
        "tuf/targets.json: holds an integer of 31 digits, beyond 64 bits",
    ),
    "delegation_threshold_1001": (
        _delegation_threshold(1001),
        "tuf/targets.json: delegations.roles[0].threshold 1001 is outside 1..1000",
    ),
    "delegation_threshold_2**63-1": (
        _delegation_threshold(2**63 - 1),
        "tuf/targets.json: delegations.roles[0].threshold 9223372036854775807 is outside",
    ),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_signed_integers_out_of_range_are_11(
    change: tuple[Callable[[TufRepo], None], str], tmp_path: Path
) -> None:
    edit, message = change
    repo = _repo()
    edit(repo)
    error = refused(repo.files(), tmp_path)
    assert error.message.startswith(message), error.message


def test_snapshot_length_beyond_64_bits_is_11(tmp_path: Path) -> None:
    repo = TufRepo()

    def huge(snapshot: Snapshot) -> None:
        snapshot.meta["targets.json"].length = 2**63

    error = refused(repo.files(tamper_snapshot=huge), tmp_path)
    assert (
        error.message == "tuf/snapshot.json: holds the integer 9223372036854775808, beyond 64 bits"
    )


def test_root_threshold_out_of_range_is_11(tmp_path: Path) -> None:
    repo = _repo()
    trusted = repo.roots[0]
    repo.root.signed.roles["timestamp"].threshold = 10**30
    repo.root.signed.version += 1
    repo._sign(repo.root)
    repo.roots.append(repo._serialize(repo.root))
    files = repo.files()
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, trusted)
    error = refused(files, tmp_path, store)
    assert error.message == "tuf/2.root.json: holds an integer of 31 digits, beyond 64 bits"


def test_largest_version_is_accepted_and_stored(tmp_path: Path) -> None:
    repo = _repo()
    repo.timestamp.signed.version = MAX_VERSION
    files = repo.files()
    with Journal.open(tmp_path / "db" / "sql.db") as store:
        store.tuf_save("root", 1, files["1.root.json"])
        assert run(files, tmp_path, store).timestamp.version == MAX_VERSION
        assert store.tuf_latest("timestamp") == files["timestamp.json"]


# ---- Foundries dialect into the SQLite journal ---------------------------------------


@pytest.mark.parametrize(
    ("role", "value", "reason"),
    [
        ("targets", 10**30, "holds an integer of 31 digits, beyond 64 bits"),
        ("timestamp", 2**31, "version 2147483648 is outside 1..2147483647"),
        ("snapshot", 0, "version 0 is outside 1..2147483647"),
    ],
)
def test_foundries_versions_out_of_range_are_11(
    role: str, value: int, reason: str, tmp_path: Path
) -> None:
    ring = keyring()
    bundle = write_foundries_bundle(
        tmp_path / "b", ring, [target_spec(42)], mutate={role: lambda s: s.update(version=value)}
    )
    files = {p.name: p.read_bytes() for p in (bundle / "tuf").iterdir()}
    with Journal.open(tmp_path / "db" / "sql.db") as store:
        store.tuf_save("root", 1, ring.roots[0])
        error = refused(files, tmp_path, store)
    assert error.message == f"tuf/{role}.json: {reason}"


def test_control_characters_in_names_stay_on_one_line(tmp_path: Path) -> None:
    ring = keyring()

    def evil(signed: dict[str, Any]) -> None:
        signed["targets"]["evil\nname"] = {"length": -1, "hashes": {"sha256": "00"}}

    bundle = write_foundries_bundle(
        tmp_path / "b", ring, [target_spec(42)], mutate={"targets": evil}
    )
    files = {p.name: p.read_bytes() for p in (bundle / "tuf").iterdir()}
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    error = refused(files, tmp_path, store)
    assert error.message == (
        "tuf/targets.json: targets.'evil\\nname'.length -1 is outside 0..9223372036854775807"
    )


# ---- custom.version (aklited/bundle.py) ----------------------------------------------

DEVICE = DeviceFacts(hardware_id=HWID, device_type="ci", tags=(TAG,))


@pytest.mark.parametrize(
    "text",
    [
        "1" + "0" * 30,
        "9" * 5000,  # int() would refuse it with a ValueError
        "0x" + "f" * 5000,
        "0" + "7" * 12,
        "2147483648",
        "-2147483649",
        2**40,
    ],
)
def test_custom_version_out_of_range_is_11(text: object) -> None:
    with pytest.raises(TrustError) as err:
        parse_version(text, target="rpi-lmp-1")
    assert err.value.code == StatusCode.SECURITY_ERROR
    assert err.value.message.startswith("tuf/targets.json: target rpi-lmp-1: custom.version ")
    assert "outside -2147483648..2147483647" in err.value.message
    assert len(err.value.message) < 200


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2147483647", 2**31 - 1),
        ("-2147483648", -(2**31)),
        ("0x7fffffff", 2**31 - 1),
        ("0x" + "0" * 5000 + "2a", 42),
        ("0" * 5000, 0),
        ("0" + "0" * 100 + "17", 15),
        ("1" * 10 + "abc", 1111111111),
    ],
)
def test_custom_version_edges_in_range(text: str, value: int) -> None:
    assert parse_version(text) == value


def _verified(tmp_path: Path, targets: list[Any]) -> Any:
    ring = keyring()
    bundle = write_foundries_bundle(tmp_path / "bundle", ring, targets)
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    return verify_bundle_sync(bundle, store=store, device=DEVICE, provisioned_roots=None)


def test_selection_refuses_a_target_whose_version_is_out_of_range(tmp_path: Path) -> None:
    targets = [target_spec(41), target_spec(42, custom={"version": "1" + "0" * 30})]
    with pytest.raises(TrustError) as err:
        select_target_sync(_verified(tmp_path, targets), DEVICE)
    assert err.value.code == StatusCode.SECURITY_ERROR
    assert f"target {HWID}-lmp-42: custom.version" in err.value.message


def test_other_devices_targets_are_not_judged(tmp_path: Path) -> None:
    other = target_spec(99, hwid="other-board", custom={"version": "9" * 40})
    chosen = select_target_sync(_verified(tmp_path, [target_spec(41), other]), DEVICE)
    assert chosen.version == 41
