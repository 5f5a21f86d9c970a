"""``aklite-bundle`` end to end: real keys, a real OSTree commit, then the device's check."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aklite_bundle.signing import Keyring
from aklited.cli.offline_check import check
from aklited.engine.journal import Journal
from tests.helpers.tuf_repo import (
    HWID,
    TAG,
    TufRepo,
    app_uri,
    keyring,
    signer,
    target_spec,
    write_files,
    write_foundries_bundle,
)

from .conftest import Device, make_device

pytestmark = pytest.mark.ostree

BUNDLE_CLI = [sys.executable, "-m", "aklite_bundle.cli"]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BUNDLE_CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def ostree_commit(
    tmp_path: Path, *, os_release: str = "ID=lmp\nPRETTY_NAME=LmP 42\n"
) -> tuple[Path, str]:
    repo = tmp_path / "src-repo"
    tree = tmp_path / "tree"
    (tree / "usr" / "lib").mkdir(parents=True)
    (tree / "usr" / "lib" / "os-release").write_text(os_release)
    subprocess.run(["ostree", f"--repo={repo}", "init", "--mode=archive"], check=True)
    done = subprocess.run(
        ["ostree", f"--repo={repo}", "commit", "-b", "lmp", f"--tree=dir={tree}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return repo, done.stdout.strip()


def app_store(tmp_path: Path, name: str, uri: str) -> Path:
    store = tmp_path / "app-store"
    digest = uri.rpartition("@sha256:")[2]
    app_dir = store / "apps" / name / digest
    app_dir.mkdir(parents=True)
    (app_dir / "uri").write_text(uri)
    (app_dir / "manifest.json").write_text("{}")
    blobs = store / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / digest).write_text("{}")
    return store


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path, str]:
    """keys init + create with a real OSTree commit and an app store."""
    keys = tmp_path / "keys"
    done = cli("keys", "init", keys, "--threshold", "targets=2")
    assert done.returncode == 0, done.stderr
    repo, commit = ostree_commit(tmp_path)
    uri = app_uri("shellhttpd")
    done = cli(
        "create", tmp_path / "bundle", "--keys", keys, "--name", f"{HWID}-lmp-42",
        "--version", "42", "--hwid", HWID, "--ostree-commit", commit, "--tag", TAG,
        "--app", f"shellhttpd={uri}", "--ostree-repo", repo,
        "--app-store", app_store(tmp_path, "shellhttpd", uri),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return keys, tmp_path / "bundle", commit


def device_trusting(tmp_path: Path, keys: Path) -> Device:
    return make_device(tmp_path / "device", ring=Keyring.load(keys))


async def test_created_bundle_is_accepted_by_a_device(
    made: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, bundle, commit = made
    assert (bundle / "ostree_repo" / "objects" / commit[:2] / f"{commit[2:]}.commit").is_file()
    assert list((bundle / "apps" / "blobs" / "sha256").iterdir())
    done = await asyncio.create_subprocess_exec(
        "ostree", f"--repo={bundle / 'ostree_repo'}", "fsck", stdout=asyncio.subprocess.DEVNULL
    )
    assert await done.wait() == 0
    (tmp_path / "device").mkdir()
    device = await asyncio.to_thread(device_trusting, tmp_path, keys)
    assert not device.db_path.exists()
    assert await check(device.config, bundle) == 16  # first use: provisioned root, no journal
    assert not device.db_path.exists()
    assert f"OSTree commit: {commit}" in capsys.readouterr().out

    def record_current() -> None:
        store = Journal.open(device.db_path)
        record = store.begin_install(
            target_name=f"{HWID}-lmp-42", version=42, ostree_commit=commit, apps={}
        )
        store.finish_install(
            record.id, state="done", result_code=0, result_message="", make_current=True
        )
        store.close()

    await asyncio.to_thread(record_current)
    assert await check(device.config, bundle) == 0
    assert "already runs" in capsys.readouterr().out


def test_verify_and_sign_threshold(made: tuple[Path, Path, str], tmp_path: Path) -> None:
    keys, bundle, _ = made
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    done = cli("verify", bundle / "tuf", "--trusted", trusted)
    assert done.returncode == 14 and "root.json" in done.stderr
    shutil.copy(keys / "1.root.json", trusted / "root.json")
    done = cli("verify", bundle / "tuf", "--trusted", trusted)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert list(summary["targets"]) == [f"{HWID}-lmp-42"]
    assert summary["bundle"]["targets"] == [f"{HWID}-lmp-42"] and summary["dialect"] == "foundries"

    # A second person holds the other targets key: strip its signature, then sign again.
    path = bundle / "tuf" / "bundle-targets.json"
    document = json.loads(path.read_bytes())
    removed = document["signatures"].pop()
    path.write_text(json.dumps(document))
    done = cli("verify", bundle / "tuf", "--trusted", trusted)
    assert done.returncode == 15 and "bundle-targets.json" in done.stderr
    other = tmp_path / "other-keys"
    (other / "keys").mkdir(parents=True)
    shutil.copy(keys / "keys" / f"{removed['keyid']}.pem", other / "keys")
    shutil.copy(keys / "1.root.json", other / "1.root.json")
    done = cli("sign", bundle, "--keys", other)
    assert done.returncode == 0, done.stderr
    assert "2 signature(s)" in done.stdout
    assert cli("verify", bundle / "tuf", "--trusted", trusted).returncode == 0


def test_verify_refuses_tampering_and_keeps_trusted_dir(
    made: tuple[Path, Path, str], tmp_path: Path
) -> None:
    keys, bundle, _ = made
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(keys / "1.root.json", trusted / "root.json")
    targets = bundle / "tuf" / "targets.json"
    targets.write_bytes(targets.read_bytes().replace(b'"version":"42"', b'"version":"43"'))
    done = cli("verify", bundle / "tuf", "--trusted", trusted)
    assert done.returncode == 11
    assert "tuf/targets.json" in done.stderr and done.stderr.count("\n") == 1
    assert not (trusted / "targets.json").exists()
    assert (trusted / "timestamp.json").exists()  # proven before the failure


def test_show_and_rotate(made: tuple[Path, Path, str]) -> None:
    keys, bundle, commit = made
    done = cli("show", bundle)
    assert done.returncode == 0
    summary = json.loads(done.stdout)
    assert summary["targets"]["targets"][f"{HWID}-lmp-42"]["ostree_commit"] == commit
    assert summary["roots"] == [1] and summary["ostree_repo"] is True
    done = cli("keys", "rotate", keys)
    assert done.returncode == 0 and (keys / "2.root.json").is_file()


def test_help_speaks_to_field_engineers() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for word in ("keys", "create", "sign", "show", "verify", "1.root.json"):
        assert word in done.stdout
    done = cli("create", "x", "--keys", "/nonexistent")
    assert done.returncode == 1 and done.stderr.startswith("aklite-bundle: error: ")


def test_verify_reads_python_tuf_metadata(tmp_path: Path) -> None:
    repo = TufRepo(key_type="ecdsa")
    repo.add_target("fw.bin", {"hardwareIds": [HWID]})
    repo.rotate_root(signer("ecdsa", 5))
    files = repo.files()
    tuf = write_files(tmp_path / "bundle" / "tuf", files)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "root.json").write_bytes(files["1.root.json"])
    done = cli("verify", tuf, "--trusted", trusted)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["dialect"] == "tuf" and summary["root_version"] == 2
    assert summary["bundle"] is None and list(summary["targets"]) == ["fw.bin"]
    assert (trusted / "root.json").read_bytes() == files["2.root.json"]


def test_create_from_target_json(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli("keys", "init", keys).returncode == 0
    description = [
        {"name": f"{HWID}-lmp-{v}", "version": v, "hwid": HWID, "ostree_commit": f"{v:064x}",
         "tags": ["main"], "apps": {"a": app_uri("a", str(v))}}
        for v in (41, 42)
    ]  # fmt: skip
    (tmp_path / "targets.json").write_text(json.dumps(description))
    done = cli(
        "create", tmp_path / "bundle", "--keys", keys, "--target-json", tmp_path / "targets.json",
        "--prod", "--tag", "main",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(cli("show", tmp_path / "bundle").stdout)
    assert summary["bundle-targets"]["bundle"]["type"] == "prod"
    assert sorted(summary["targets"]["targets"]) == [f"{HWID}-lmp-41", f"{HWID}-lmp-42"]
    assert summary["targets"]["targets"][f"{HWID}-lmp-42"]["apps"] == {"a": app_uri("a", "42")}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x"}]))
    done = cli("create", tmp_path / "b2", "--keys", keys, "--target-json", bad)
    assert done.returncode == 1 and "target description" in done.stderr


def _seeded(tmp_path: Path, root: bytes) -> Path:
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "root.json").write_bytes(root)
    return trusted


def test_verify_reports_rollback_and_allow_stored_falls_back(tmp_path: Path) -> None:
    ring = keyring()
    new = write_foundries_bundle(tmp_path / "new", ring, [target_spec(45)], version=5)
    old = write_foundries_bundle(tmp_path / "old", ring, [target_spec(43)], version=3)
    trusted = _seeded(tmp_path, ring.roots[0])
    assert cli("verify", new / "tuf", "--trusted", trusted).returncode == 0
    before = {p.name: p.read_bytes() for p in trusted.iterdir()}

    done = cli("verify", old / "tuf", "--trusted", trusted)
    assert done.returncode == 11 and done.stdout == ""
    assert done.stderr == (
        "aklite-bundle: error: tuf/timestamp.json: "
        "version 3 is older than the trusted version 5 (rollback)\n"
    )
    assert {p.name: p.read_bytes() for p in trusted.iterdir()} == before

    done = cli("verify", old / "tuf", "--trusted", trusted, "--allow-stored")
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "note: tuf/timestamp.json: version 3 is older than the trusted version 5 (rollback); "
        "the trusted directory's metadata was used instead (--allow-stored)\n"
    )
    summary = json.loads(done.stdout)
    assert summary["from_store"] is True and summary["targets_version"] == 5
    assert summary["rollback"].startswith("tuf/timestamp.json: version 3")
    assert list(summary["targets"]) == [target_spec(45).name]
    assert summary["bundle"]["targets"] == [target_spec(43).name]
    assert {p.name: p.read_bytes() for p in trusted.iterdir()} == before

    done = cli("verify", new / "tuf", "--trusted", trusted)
    assert done.returncode == 0 and json.loads(done.stdout)["rollback"] is None


def test_verify_resolves_python_tuf_delegations(tmp_path: Path) -> None:
    repo = TufRepo()
    repo.add_target("top.bin", {"hardwareIds": [HWID]})
    repo.delegate("targets", "team/fw", paths=["fw/*"])
    repo.add_target("fw/a.bin", {"hardwareIds": [HWID]}, role="team/fw")
    repo.add_target("apps/b.bin", {}, role="team/fw")  # team/fw may not sign apps/
    files = repo.files()
    tuf = write_files(tmp_path / "bundle" / "tuf", files)
    trusted = _seeded(tmp_path, files["1.root.json"])
    done = cli("verify", tuf, "--trusted", trusted)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert {name: t["role"] for name, t in summary["targets"].items()} == {
        "top.bin": "targets",
        "fw/a.bin": "team/fw",
    }
    assert summary["delegated_roles"] == {"team/fw": 1}
    assert summary["delegations_truncated"] is False
    assert (trusted / "team%2Ffw.json").read_bytes() == files["team%2Ffw.json"]

    (tuf / "team%2Ffw.json").write_bytes(files["team%2Ffw.json"] + b" ")
    (trusted / "team%2Ffw.json").unlink()
    done = cli("verify", tuf, "--trusted", trusted)
    assert done.returncode == 11 and done.stderr.count("\n") == 1
    assert "tuf/team%2Ffw.json" in done.stderr


def test_verify_refuses_out_of_range_integers(tmp_path: Path) -> None:
    repo = TufRepo()
    repo.timestamp.signed.version = 10**400
    files = repo.files()
    tuf = write_files(tmp_path / "bundle" / "tuf", files)
    done = cli("verify", tuf, "--trusted", _seeded(tmp_path, files["1.root.json"]))
    assert done.returncode == 11
    assert (
        done.stderr == "aklite-bundle: error: tuf/timestamp.json: "
        "holds an integer of 401 digits, beyond 64 bits\n"
    )


def test_verify_content_proves_every_object_of_the_commit(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli("keys", "init", keys).returncode == 0
    repo, commit = ostree_commit(tmp_path)
    bundle = tmp_path / "bundle"
    done = cli(
        "create", bundle, "--keys", keys, "--name", f"{HWID}-lmp-42", "--version", "42",
        "--hwid", HWID, "--ostree-commit", commit, "--tag", TAG, "--ostree-repo", repo,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(keys / "1.root.json", trusted / "root.json")

    plain = cli("verify", bundle / "tuf", "--trusted", trusted)
    assert plain.returncode == 0, plain.stderr
    assert "content" not in json.loads(plain.stdout)
    done = cli("verify", bundle / "tuf", "--trusted", trusted, "--content")
    assert done.returncode == 0, done.stderr
    objects = sorted((bundle / "ostree_repo" / "objects").glob("*/*.filez"))
    assert json.loads(done.stdout)["content"] == {
        f"{HWID}-lmp-42": f"OSTree commit {commit[:12]}: {len(objects)} file objects verified"
    }

    # os-release swapped for another file's object: well-formed, but not the commit's bytes
    other_repo, _ = ostree_commit(tmp_path / "other", os_release="ID=lmp\nPRETTY_NAME=Other\n")
    (victim,) = objects
    victim.write_bytes(next(other_repo.glob("objects/*/*.filez")).read_bytes())
    assert cli("verify", bundle / "tuf", "--trusted", trusted).returncode == 0  # metadata only
    done = cli("verify", bundle / "tuf", "--trusted", trusted, "--content")
    assert done.returncode == 70, done.stderr
    assert victim.name in done.stderr and done.stderr.count("\n") == 1
