"""TUF delegations (spec 5.6.7): ours and python-tuf's Updater resolve the same targets.

Each repository is written by python-tuf; the same bytes go through our workflow and
through ``tuf.ngclient.Updater`` (``oracle_targets``), which searches delegations per
target path. Our workflow resolves every target name at once; both must agree on which
names exist and on the entry (length, hashes) each resolves to, and must refuse the
same broken repositories.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.formats import encode_canonical
from tuf.api.metadata import DelegatedRole, Snapshot

from aklited.engine.journal import Journal
from aklited.errors import TrustError
from aklited.trust.delegations import find_target
from aklited.trust.metadata import delegated_filename, path_matches
from aklited.trust.source import DirectorySource, SizeLimits
from aklited.trust.storage import DirectoryTrustStore, OverlayTrustStore, TrustStore, delegated_key
from aklited.trust.workflow import TrustWorkflow, VerifiedMetadata
from tests.helpers.tuf_repo import (
    TufRepo,
    delegated_file,
    keyring,
    oracle_targets,
    oracle_verdict,
    signer,
    target_spec,
    write_files,
    write_foundries_bundle,
)

PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def run_ours(
    files: dict[str, bytes],
    tmp_path: Path,
    *,
    store: TrustStore | None = None,
    trusted_root: bytes | None = None,
    **kw: object,
) -> VerifiedMetadata:
    tuf = write_files(tmp_path / "bundle" / "tuf", files)
    if store is None:
        store = OverlayTrustStore(None)
        root = trusted_root or files["1.root.json"]
        store.tuf_save("root", json.loads(root)["signed"]["version"], root)
    workflow = TrustWorkflow(
        source=DirectorySource(tuf),
        store=store,
        fallback_to_store=False,
        label_prefix="tuf/",
        **kw,  # type: ignore[arg-type]
    )
    return workflow.refresh()


def refused(files: dict[str, bytes], tmp_path: Path, **kw: object) -> TrustError:
    with pytest.raises(TrustError) as err:
        run_ours(files, tmp_path, **kw)
    assert "\n" not in err.value.message
    return err.value


def listed_paths(repo: TufRepo) -> list[str]:
    """Every name any role lists, plus names no role lists."""
    names = list(repo.targets.signed.targets)
    for md in repo.delegated.values():
        names.extend(n for n in md.signed.targets if n not in names)
    return [*names, "nobody/lists.this", "nope"]


# ---- repositories both resolve the same way -------------------------------------------


@dataclass
class Resolution:
    repo: TufRepo
    roles: dict[str, str]  # the name -> role resolution we expect (others: absent)
    absent: list[str] = field(default_factory=list)  # listed by some role, yet not offered


def paths_and_order() -> Resolution:
    repo = TufRepo()
    repo.add_target("top.bin", {"v": "top"})
    repo.delegate("targets", "A", paths=["fw/*"])
    repo.delegate("targets", "B", paths=["fw/*", "x/?.bin"])
    repo.add_target("fw/a.bin", {}, b"a", role="A")
    repo.add_target("fw/shared.bin", {}, b"from A", role="A")
    repo.add_target("top.bin", {}, b"A's top", role="A")  # the top-level entry wins
    repo.add_target("x/y.bin", {}, b"A", role="A")  # A is not trusted for x/
    repo.add_target("fw/sub/deep.bin", {}, role="A")  # "*" does not cross "/"
    repo.add_target("fw/shared.bin", {}, b"from B", role="B")  # A comes first
    repo.add_target("x/y.bin", {}, b"B", role="B")
    repo.add_target("x/yy.bin", {}, role="B")  # "?" is one character
    roles = {"top.bin": "targets", "fw/a.bin": "A", "fw/shared.bin": "A", "x/y.bin": "B"}
    return Resolution(repo, roles, ["fw/sub/deep.bin", "x/yy.bin"])


def terminating() -> Resolution:
    repo = TufRepo()
    repo.delegate("targets", "T", paths=["t/*"], terminating=True)
    repo.delegate("targets", "C", paths=["*/*"])
    repo.add_target("t/1", {}, role="T")
    repo.add_target("t/2", {}, role="C")  # T is terminating for t/*: C is never asked
    repo.add_target("c/3", {}, role="C")
    return Resolution(repo, {"t/1": "T", "c/3": "C"}, ["t/2"])


def terminating_keeps_earlier_siblings() -> Resolution:
    """python-tuf still visits the matching siblings listed before a terminating one."""
    repo = TufRepo()
    repo.delegate("targets", "E", paths=["t/*"])
    repo.delegate("targets", "T", paths=["t/*"], terminating=True)
    repo.delegate("targets", "C", paths=["t/*"])
    repo.add_target("t/e", {}, b"E", role="E")
    repo.add_target("t/e", {}, b"C", role="C")
    repo.add_target("t/c", {}, role="C")
    return Resolution(repo, {"t/e": "E"}, ["t/c"])


def nested_terminating_cuts_off_top_level_siblings() -> Resolution:
    repo = TufRepo()
    repo.delegate("targets", "P", paths=["*/*"])
    repo.delegate("P", "Q", paths=["q/*"], terminating=True)
    repo.delegate("targets", "R", paths=["*/*"])
    repo.add_target("q/r", {}, role="R")  # Q's terminating delegation drops R for q/*
    repo.add_target("r/r", {}, role="R")
    repo.add_target("q/q", {}, role="Q")
    return Resolution(repo, {"r/r": "R", "q/q": "Q"}, ["q/r"])


def nested_chain() -> Resolution:
    repo = TufRepo()
    repo.delegate("targets", "A", paths=["a/*"])
    repo.delegate("A", "B", paths=["*/*"], signers=[signer("ed25519", 6)])
    repo.add_target("a/x", {}, role="B")
    repo.add_target("c/d", {}, role="B")  # B may sign c/d for A, but A may not
    return Resolution(repo, {"a/x": "B"}, ["c/d"])


def _other_prefix(prefix: str) -> str:
    n = 0
    while hashlib.sha256(f"h/out{n}".encode()).hexdigest().startswith(prefix):
        n += 1
    return f"h/out{n}"


def hash_prefixes() -> Resolution:
    repo = TufRepo()
    prefix = hashlib.sha256(b"h/in").hexdigest()[:2]
    repo.delegate("targets", "H", path_hash_prefixes=[prefix])
    repo.add_target("h/in", {}, role="H")
    outside = _other_prefix(prefix)
    repo.add_target(outside, {}, role="H")
    return Resolution(repo, {"h/in": "H"}, [outside])


def cycle() -> Resolution:
    repo = TufRepo()
    repo.delegate("targets", "A")
    repo.delegate("A", "B")
    repo.delegate("B", "A")
    repo.add_target("a.bin", {}, role="A")
    repo.add_target("b.bin", {}, role="B")
    return Resolution(repo, {"a.bin": "A", "b.bin": "B"})


def diamond() -> Resolution:
    repo = TufRepo()
    repo.delegate("targets", "A", paths=["a*"])
    repo.delegate("targets", "B", paths=["b*"])
    repo.delegate("A", "C", paths=["*"])
    repo.delegate("B", "C", paths=["*"])
    repo.add_target("a1", {}, role="C")
    repo.add_target("b1", {}, role="C")
    repo.add_target("c1", {}, role="C")  # neither A nor B may delegate c*
    return Resolution(repo, {"a1": "C", "b1": "C"}, ["c1"])


def hash_bins() -> Resolution:
    repo = TufRepo()
    succinct = repo.delegate_bins(2)
    roles = {
        name: repo.add_binned_target(succinct, name, {"n": name})
        for name in ("fw-1", "fw-2", "apps/x", "apps/y", "z", "zz")
    }
    return Resolution(repo, roles)


def odd_role_names() -> Resolution:
    repo = TufRepo()
    roles = {}
    for index, name in enumerate(["../up", "a/b", "ü ñ", "%2e%2e", ".", "..", "x\ny"]):
        repo.delegate("targets", name, paths=[f"{index}/*"])
        repo.add_target(f"{index}/t", {}, role=name)
        roles[f"{index}/t"] = name
    return Resolution(repo, roles)


RESOLUTIONS = [
    paths_and_order,
    terminating,
    terminating_keeps_earlier_siblings,
    nested_terminating_cuts_off_top_level_siblings,
    nested_chain,
    hash_prefixes,
    cycle,
    diamond,
    hash_bins,
    odd_role_names,
]


@pytest.mark.parametrize("make", RESOLUTIONS, ids=lambda f: f.__name__)
def test_resolution_agrees_with_python_tuf(make: Callable[[], Resolution], tmp_path: Path) -> None:
    case = make()
    files = case.repo.files()
    ours = run_ours(files, tmp_path)
    assert dict(ours.target_roles) == case.roles
    paths = listed_paths(case.repo)
    oracle = oracle_targets(files["1.root.json"], files, paths, tmp_path / "oracle")
    assert oracle is not None, "python-tuf refuses the repository"
    assert {p for p, t in oracle.items() if t is not None} == set(ours.all_targets)
    for path, target in ours.all_targets.items():
        expected = oracle[path]
        assert expected is not None
        assert (target.length, dict(target.hashes)) == (expected.length, expected.hashes), path
    for path in case.absent:
        assert path not in ours.all_targets
    # Only the top-level entries stay in ``targets``; delegated roles are all loaded.
    assert dict(ours.targets.signed.targets).keys() == case.repo.targets.signed.targets.keys()
    assert set(ours.delegated) == set(case.repo.delegated)


# ---- broken delegated metadata is refused, naming the file ------------------------------


@dataclass
class Broken:
    files: dict[str, bytes]
    code: int
    names_file: str
    path: str  # a target whose search reaches the broken role (python-tuf must refuse it)


def _fw_repo(**kw: object) -> TufRepo:
    repo = TufRepo(**kw)  # type: ignore[arg-type]
    repo.add_target("top.bin", {})
    repo.delegate("targets", "fw", paths=["fw/*"])
    repo.add_target("fw/a.bin", {}, role="fw")
    return repo


def wrong_key() -> Broken:
    repo = _fw_repo()
    repo.delegated_signers["fw"] = [signer("ed25519", 6)]
    return Broken(repo.files(), 11, "tuf/fw.json", "fw/a.bin")


def signed_by_top_level_targets_key() -> Broken:
    repo = _fw_repo()
    repo.delegated_signers["fw"] = repo.signers["targets"]
    return Broken(repo.files(), 11, "tuf/fw.json", "fw/a.bin")


def below_threshold() -> Broken:
    repo = TufRepo()
    two = [signer("ed25519", 5), signer("ed25519", 6)]
    repo.delegate("targets", "fw", paths=["fw/*"], signers=two, threshold=2)
    repo.add_target("fw/a.bin", {}, role="fw")
    repo.delegated_signers["fw"] = two[:1]
    return Broken(repo.files(), 11, "tuf/fw.json", "fw/a.bin")


def file_missing() -> Broken:
    files = _fw_repo().files()
    del files["fw.json"]
    return Broken(files, 14, "tuf/fw.json", "fw/a.bin")


def version_differs_from_snapshot() -> Broken:
    def bump(snapshot: Snapshot) -> None:
        snapshot.meta["fw.json"].version += 1

    return Broken(_fw_repo().files(tamper_snapshot=bump), 11, "tuf/fw.json", "fw/a.bin")


def hash_differs_from_snapshot() -> Broken:
    def wrong(snapshot: Snapshot) -> None:
        snapshot.meta["fw.json"].hashes = {"sha256": "00" * 32}

    return Broken(_fw_repo().files(tamper_snapshot=wrong), 11, "tuf/fw.json", "fw/a.bin")


def length_differs_from_snapshot() -> Broken:
    def longer(snapshot: Snapshot) -> None:
        length = snapshot.meta["fw.json"].length
        assert length is not None
        snapshot.meta["fw.json"].length = length + 1

    return Broken(_fw_repo().files(tamper_snapshot=longer), 11, "tuf/fw.json", "fw/a.bin")


def expired() -> Broken:
    repo = _fw_repo()
    repo.delegated["fw"].signed.expires = PAST
    return Broken(repo.files(), 12, "tuf/fw.json", "fw/a.bin")


def nested_role_broken() -> Broken:
    repo = _fw_repo()
    repo.delegate("fw", "deep", paths=["fw/*"], signers=[signer("ed25519", 7)])
    repo.add_target("fw/deep.bin", {}, role="deep")
    repo.delegated_signers["deep"] = [signer("ed25519", 5)]
    return Broken(repo.files(), 11, "tuf/deep.json", "fw/deep.bin")


def wrong_type() -> Broken:
    repo = _fw_repo(hash_targets=False)
    files = repo.files()
    files["fw.json"] = files["fw.json"].replace(b'"_type": "targets"', b'"_type": "snapshot"')
    return Broken(files, 11, "tuf/fw.json", "fw/a.bin")


def top_level_name_delegated() -> Broken:
    repo = _fw_repo()
    delegations = repo.targets.signed.delegations
    assert delegations is not None and delegations.roles is not None
    role = delegations.roles.pop("fw")
    role.name = "snapshot"  # python-tuf's Delegations() refuses this; its parser too
    delegations.roles["snapshot"] = role
    del repo.delegated["fw"]
    return Broken(repo.files(), 11, "tuf/targets.json", "fw/a.bin")


BROKEN = [
    wrong_key,
    signed_by_top_level_targets_key,
    below_threshold,
    file_missing,
    version_differs_from_snapshot,
    hash_differs_from_snapshot,
    length_differs_from_snapshot,
    expired,
    nested_role_broken,
    wrong_type,
    top_level_name_delegated,
]


@pytest.mark.parametrize("make", BROKEN, ids=lambda f: f.__name__)
def test_broken_delegation_refused_like_python_tuf(
    make: Callable[[], Broken], tmp_path: Path
) -> None:
    case = make()
    error = refused(case.files, tmp_path)
    assert error.code == case.code, error.message
    assert case.names_file in error.message
    oracle = oracle_targets(case.files["1.root.json"], case.files, [case.path], tmp_path / "oracle")
    assert oracle is None, "python-tuf accepts it"


@pytest.mark.parametrize(
    "name", ["Targets", "ROOT", "bundle-targets", "12.root", "", "a" * 300, "x%" * 100]
)
def test_unsafe_role_names_refused(name: str, tmp_path: Path) -> None:
    """Names that would be another file on the drive (or too long for one) are refused."""
    repo = _fw_repo()
    delegations = repo.targets.signed.delegations
    assert delegations is not None and delegations.roles is not None
    role = delegations.roles.pop("fw")
    role.name = name
    delegations.roles[name] = role
    repo.delegated[name] = repo.delegated.pop("fw")
    repo.delegated_signers[name] = repo.delegated_signers.pop("fw")
    files = repo.files()
    del files[delegated_file(name)]  # refused before it is looked for (some cannot exist)
    error = refused(files, tmp_path)
    assert error.code == 11
    assert error.message.startswith("tuf/targets.json: delegations.roles[0].name")
    with pytest.raises(ValueError, match="delegated role name"):
        delegated_filename(name)


def test_role_names_are_percent_encoded_as_python_tuf_does() -> None:
    assert delegated_filename("../up") == "..%2Fup.json"
    assert delegated_filename("a/b") == "a%2Fb.json"
    assert delegated_filename("%2F") == "%252F.json"
    assert delegated_filename("ü") == "%C3%BC.json" == delegated_file("ü")
    assert delegated_filename("..") == "...json"


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("fw/*", "fw/a.bin", True),
        ("fw/*", "fw/sub/a.bin", False),
        ("*", "a/b", False),
        ("*/*", "a/b", True),
        ("x/?.bin", "x/y.bin", True),
        ("x/?.bin", "x/yy.bin", False),
        ("x/[ab]", "x/b", True),
        ("FW/*", "fw/a", False),
        ("", "", True),
        ("a/", "a/", True),
    ],
)
def test_path_patterns_match_component_wise(pattern: str, path: str, expected: bool) -> None:
    oracle = DelegatedRole("r", [], 1, False, paths=[pattern]).is_delegated_path(path)
    assert path_matches(pattern, path) is expected is oracle


# ---- rollback, persistence, the stored copy --------------------------------------------


def test_delegated_role_rollback_refused(tmp_path: Path) -> None:
    repo = _fw_repo()
    repo.bump()
    repo.delegated["fw"].signed.version = 2
    stored = repo.files()
    repo.timestamp.signed.version += 1
    repo.snapshot.signed.version += 1
    repo.delegated["fw"].signed.version = 1
    offered = repo.files()
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, stored["1.root.json"])
    store.tuf_save("timestamp", 2, stored["timestamp.json"])
    store.tuf_save("snapshot", 2, stored["snapshot.json"])
    error = refused(offered, tmp_path, store=store)
    assert error.code == 11
    assert "tuf/snapshot.json: lists fw.json version 1, older than the trusted 2" in error.message
    seeds = {"timestamp": stored["timestamp.json"], "snapshot": stored["snapshot.json"]}
    assert not oracle_verdict(stored["1.root.json"], offered, stored=seeds)


def _odd_repo() -> tuple[TufRepo, str]:
    repo = TufRepo()
    name = "../../escape/ü"
    repo.delegate("targets", name, paths=["fw/*"])
    repo.add_target("fw/a.bin", {}, role=name)
    return repo, name


def test_directory_store_keeps_delegated_roles_inside_it(tmp_path: Path) -> None:
    repo, name = _odd_repo()
    files = repo.files()
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "root.json").write_bytes(files["1.root.json"])
    result = run_ours(files, tmp_path, store=DirectoryTrustStore(trusted))
    assert result.target_roles == {"fw/a.bin": name}
    encoded = delegated_filename(name)
    assert "/" not in encoded
    assert sorted(p.name for p in trusted.iterdir()) == sorted(
        [encoded, "root.json", "snapshot.json", "targets.json", "timestamp.json"]
    )
    assert (trusted / encoded).read_bytes() == files[delegated_file(name)]
    assert not (tmp_path / "escape").exists()

    # The stored copy still matches the snapshot: the drive's copy is not needed.
    (tmp_path / "bundle" / "tuf" / encoded).unlink()
    again = run_ours(files, tmp_path / "again", store=DirectoryTrustStore(trusted))
    assert again.target_roles == {"fw/a.bin": name}


def test_sqlite_store_keeps_delegated_roles(tmp_path: Path) -> None:
    repo, name = _odd_repo()
    files = repo.files()
    with Journal.open(tmp_path / "db" / "sql.db") as store:
        store.tuf_save("root", 1, files["1.root.json"])
        run_ours(files, tmp_path, store=store)
        assert store.tuf_latest(delegated_key(name)) == files[delegated_file(name)]
        assert store.tuf_latest(delegated_key("other")) is None
        with pytest.raises(ValueError, match="unknown TUF role"):
            store.tuf_save(name, 1, b"x")  # only ever under its namespaced key


def test_failed_delegated_role_not_persisted(tmp_path: Path) -> None:
    case = wrong_key()
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "root.json").write_bytes(case.files["1.root.json"])
    refused(case.files, tmp_path, store=DirectoryTrustStore(trusted))
    assert (trusted / "targets.json").exists()  # proven before the failure
    assert not (trusted / "fw.json").exists()


def test_rollback_fallback_keeps_delegated_targets(tmp_path: Path) -> None:
    repo = _fw_repo()
    old = repo.files()
    repo.bump()
    repo.delegated["fw"].signed.version += 1
    repo.add_target("fw/new.bin", {}, role="fw")
    new = repo.files()
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, old["1.root.json"])
    run_ours(new, tmp_path / "new", store=store)
    tuf = write_files(tmp_path / "old" / "bundle" / "tuf", old)
    result = TrustWorkflow(source=DirectorySource(tuf), store=store, label_prefix="tuf/").refresh()
    assert result.from_store and result.targets.version == 2
    assert set(result.all_targets) == {"top.bin", "fw/a.bin", "fw/new.bin"}
    assert result.delegated["fw"].version == 2
    assert (
        result.rollback
        == "tuf/timestamp.json: version 1 is older than the trusted version 2 (rollback)"
    )


# ---- the limit on delegated roles ------------------------------------------------------


def test_at_most_32_delegated_roles_like_python_tuf(tmp_path: Path) -> None:
    repo = TufRepo()
    for index in range(33):
        repo.delegate("targets", f"r{index}")
        repo.add_target(f"t{index}", {}, role=f"r{index}")
    files = repo.files()
    ours = run_ours(files, tmp_path)
    assert ours.delegations_truncated and len(ours.delegated) == 32
    assert set(ours.all_targets) == {f"t{i}" for i in range(32)}
    oracle = oracle_targets(files["1.root.json"], files, ["t31", "t32"], tmp_path / "oracle")
    assert oracle is not None and oracle["t31"] is not None and oracle["t32"] is None


def test_search_stops_at_a_role_beyond_the_limit(tmp_path: Path) -> None:
    """A role that was not loaded must not let a later, less trusted role answer."""
    repo = TufRepo()
    repo.delegate("targets", "A", paths=["a*"])
    repo.delegate("targets", "B")
    repo.delegate("A", "S")
    repo.delegate("B", "R")  # beyond the limit of 3: A, S (through A), B
    repo.delegate("B", "S")
    repo.add_target("zzz", {}, b"from R", role="R")  # python-tuf would answer with this one
    repo.add_target("zzz", {}, b"from S", role="S")
    repo.add_target("a1", {}, role="S")
    result = run_ours(repo.files(), tmp_path, max_delegations=3)
    assert result.delegations_truncated and list(result.delegated) == ["A", "S", "B"]
    assert dict(result.target_roles) == {"a1": "S"}
    loaded = {name: role.signed for name, role in result.delegated.items()}
    assert find_target("zzz", result.targets.signed, loaded, max_delegations=32) is None


def test_edges_skipped_by_the_limit_are_still_verified(tmp_path: Path) -> None:
    repo = TufRepo()
    repo.delegate("targets", "A")
    repo.delegate("targets", "B")
    repo.delegate("B", "C")  # never loaded: the limit is 2
    repo.delegate("B", "A", signers=[signer("ed25519", 7)])  # A is not signed by key 7
    repo.add_target("a", {}, role="A")
    error = refused(repo.files(), tmp_path, max_delegations=2)
    assert error.code == 11 and "tuf/A.json" in error.message
    assert "keys B delegates it to" in error.message


# ---- the Foundries dialect has no delegations ------------------------------------------


def test_foundries_targets_delegations_field_is_ignored(tmp_path: Path) -> None:
    ring = keyring()
    bundle = write_foundries_bundle(
        tmp_path / "b",
        ring,
        [target_spec(42)],
        mutate={"targets": lambda s: s.update(delegations={"keys": {}, "roles": "junk"})},
    )
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    result = TrustWorkflow(
        source=DirectorySource(bundle / "tuf"), store=store, label_prefix="tuf/"
    ).refresh()
    assert result.targets.signed.delegations is None
    assert list(result.all_targets) == [target_spec(42).name]
    assert not result.delegated


def _resigned_targets(change: Callable[[dict[str, Any]], None]) -> dict[str, bytes]:
    """The ``fw`` repository with ``change`` applied to the targets' delegations (re-signed)."""
    files = _fw_repo(hash_targets=False).files()
    document = json.loads(files["targets.json"])
    change(document["signed"]["delegations"])
    payload = encode_canonical(document["signed"]).encode()
    document["signatures"] = [signer("ed25519", 3).sign(payload).to_dict()]
    files["targets.json"] = json.dumps(document).encode()
    return files


SHAPE_ERRORS: dict[str, Callable[[dict[str, Any]], None]] = {
    "no_terminating": lambda d: d["roles"][0].pop("terminating"),
    "paths_and_prefixes": lambda d: d["roles"][0].update(path_hash_prefixes=["ab"]),
    "neither_paths_nor_prefixes": lambda d: d["roles"][0].pop("paths"),
    "threshold_zero": lambda d: d["roles"][0].update(threshold=0),
    "role_twice": lambda d: d["roles"].append(dict(d["roles"][0])),
    "roles_and_succinct": lambda d: d.update(
        succinct_roles={"keyids": [], "threshold": 1, "bit_length": 1, "name_prefix": "b"}
    ),
    "keyid_twice": lambda d: d["roles"][0].update(keyids=["k", "k"]),
    "bit_length_33": lambda d: (
        d.pop("roles"),
        d.update(
            succinct_roles={"keyids": [], "threshold": 1, "bit_length": 33, "name_prefix": "b"}
        ),
    ),
}


@pytest.mark.parametrize("change", SHAPE_ERRORS.values(), ids=SHAPE_ERRORS.keys())
def test_malformed_delegations_refused_like_python_tuf(
    change: Callable[[dict[str, Any]], None], tmp_path: Path
) -> None:
    files = _resigned_targets(change)
    error = refused(files, tmp_path)
    assert error.code == 11
    assert error.message.startswith("tuf/targets.json: delegations"), error.message
    assert oracle_targets(files["1.root.json"], files, ["fw/a.bin"], tmp_path / "o") is None


def test_paths_must_be_a_list(tmp_path: Path) -> None:
    """Stricter than python-tuf, which iterates a string's characters as patterns."""
    files = _resigned_targets(lambda d: d["roles"][0].update(paths="fw/*"))
    error = refused(files, tmp_path)
    assert error.code == 11
    assert "delegations.roles[0].paths must be a list of strings" in error.message


def test_resigning_helper_keeps_valid_delegations_valid(tmp_path: Path) -> None:
    files = _resigned_targets(lambda d: None)
    assert run_ours(files, tmp_path).target_roles == {"top.bin": "targets", "fw/a.bin": "fw"}


def test_delegated_files_are_size_bound_like_targets(tmp_path: Path) -> None:
    repo = _fw_repo()
    for index in range(20):
        repo.add_target(f"fw/{index}.bin", {}, role="fw")
    files = repo.files()
    tuf = write_files(tmp_path / "bundle" / "tuf", files)
    limit = len(files["targets.json"])
    assert len(files["fw.json"]) > limit
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, files["1.root.json"])
    source = DirectorySource(tuf, limits=SizeLimits(targets=limit))
    with pytest.raises(TrustError) as err:
        TrustWorkflow(source=source, store=store, label_prefix="tuf/").refresh()
    assert err.value.code == 11
    assert err.value.message.startswith("tuf/fw.json: ") and "limit" in err.value.message


def test_a_role_the_snapshot_does_not_list_offers_nothing_and_breaks_nothing(
    tmp_path: Path,
) -> None:
    """As python-tuf's lazy search: the refresh succeeds, the other targets stay usable, and
    no target of the unlisted role is offered (python-tuf refuses to look it up)."""

    def drop(snapshot: Snapshot) -> None:
        del snapshot.meta["fw.json"]

    files = _fw_repo().files(tamper_snapshot=drop)
    verified = run_ours(files, tmp_path)
    assert "top.bin" in verified.all_targets
    assert "fw/a.bin" not in verified.all_targets
    assert "fw" not in verified.delegated
    oracle = oracle_targets(files["1.root.json"], files, ["top.bin"], tmp_path / "ok")
    assert oracle is not None and "top.bin" in oracle
    assert oracle_targets(files["1.root.json"], files, ["fw/a.bin"], tmp_path / "no") is None
