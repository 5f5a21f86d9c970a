"""The object walk behind the space estimate agrees with ``ostree ls -R -C``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import aklited_sim as sim
from aklited.drivefs import UnsafeEntryError
from aklited.rootfs.content import verify_commit_content
from aklited.rootfs.repo import commit_path, object_path
from aklited.rootfs.space import parse_tree_listing
from aklited.rootfs.walk import (
    CorruptObjectError,
    MissingObjectError,
    parse_commit_root,
    parse_commit_sizes,
    walk_missing,
)
from tests.integration.ostree.support import requirements

pytestmark = requirements


async def _ls(repo: Path, commit: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ostree", f"--repo={repo}", "ls", "-R", "-C", commit, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


async def _tree(tmp_path: Path) -> Path:
    files = {f"usr/share/many/f{i:03d}": os.urandom(i * 37) for i in range(300)}
    files |= {
        "usr/share/text/zeros": bytes(200_000),  # compresses to almost nothing
        "usr/share/text/same-as-zeros": bytes(200_000),
        "usr/share/ünïcode näme": b"x",
        "usr/lib/modules/6.1.24-lmp-standard/initramfs.img": os.urandom(5000),
    }
    tree = await sim.make_tree(tmp_path / "tree", version="9", files=files)
    (tree / "usr" / "share" / "empty").mkdir()
    (tree / "usr" / "bin").mkdir()
    (tree / "usr" / "bin" / "sh").symlink_to("busybox")
    (tree / "usr" / "bin" / "busybox").write_bytes(os.urandom(1000))
    (tree / "usr" / "bin" / "busybox").chmod(0o4755)
    return tree


@pytest.mark.parametrize("mode", ["archive", "bare-user"])
async def test_walk_matches_ostree_ls(tmp_path: Path, mode: str) -> None:
    repo = await sim.init_repo(tmp_path / "repo", mode=mode)
    commit = await sim.commit_tree(repo, await _tree(tmp_path), subject="walk")
    empty = await sim.init_repo(tmp_path / "dest", mode="bare")
    expected = parse_tree_listing(await _ls(repo, commit))
    walked = await asyncio.to_thread(walk_missing, repo, commit, empty)
    assert walked.files.keys() == expected.files.keys()
    for checksum, size in expected.files.items():
        # bare-user keeps a symlink as a small regular file holding its target; ls says 0.
        assert walked.files[checksum] == size or (mode == "bare-user" and size == 0)
    assert walked.metadata == expected.metadata
    assert walked.directories == expected.directories
    assert walked.boot_bytes == expected.boot_bytes > 5000


async def test_sizes_the_commit_records_are_taken_without_reading_the_objects(
    tmp_path: Path,
) -> None:
    repo = await sim.init_repo(tmp_path / "repo")
    tree = await _tree(tmp_path)
    plain = await sim.commit_tree(repo, tree, subject="plain")
    sized = await sim.commit_tree(repo, tree, subject="sized", version="9", sizes=True)
    assert parse_commit_sizes(commit_path(repo, plain).read_bytes()) == {}
    recorded = parse_commit_sizes(commit_path(repo, sized).read_bytes())
    expected = parse_tree_listing(await _ls(repo, sized))
    # Every file object, with the size `ostree ls` reads from its header (symlinks: 0).
    assert recorded.keys() == expected.files.keys()
    assert all(recorded[c] == size for c, size in expected.files.items() if size)

    # With the sizes recorded, a file object whose header lies is not read at all.
    victim = max(repo.glob("objects/*/*.filez"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[8:16] = (1 << 40).to_bytes(8, "big")  # the header's uncompressed size
    victim.write_bytes(bytes(data))
    empty = await sim.init_repo(tmp_path / "dest", mode="bare")
    walked = await asyncio.to_thread(walk_missing, repo, sized, empty)
    assert walked.files == {c: recorded[c] for c in walked.files}
    assert max(walked.files.values()) < 1 << 40
    # Without them, the header is what the walk reads.
    walked_plain = await asyncio.to_thread(walk_missing, repo, plain, empty)
    assert max(walked_plain.files.values()) == 1 << 40


@pytest.mark.parametrize("kind", ["fifo", "outside-link", "directory"])
async def test_a_recorded_size_does_not_spare_the_object_its_check(
    tmp_path: Path, kind: str
) -> None:
    repo = await sim.init_repo(tmp_path / "bundle" / "repo")
    commit = await sim.commit_tree(repo, await _tree(tmp_path), subject="s", sizes=True)
    target = _a_file_object(repo)
    _make_unsafe(target, kind, outside=tmp_path / "host-file")
    dest = await sim.init_repo(tmp_path / "dest", mode="bare")
    with pytest.raises(UnsafeEntryError) as caught:
        await asyncio.to_thread(walk_missing, repo, commit, dest)
    assert caught.value.path == target.relative_to(tmp_path / "bundle").as_posix()


async def test_walk_skips_objects_the_destination_has(tmp_path: Path) -> None:
    repo = await sim.init_repo(tmp_path / "repo")
    commit = await sim.commit_tree(repo, await _tree(tmp_path), subject="walk")
    dest = await sim.init_repo(tmp_path / "dest", mode="bare")
    proc = await asyncio.create_subprocess_exec(
        "ostree", f"--repo={dest}", "pull-local", str(repo), commit, stdout=asyncio.subprocess.PIPE
    )
    await proc.communicate()
    walked = await asyncio.to_thread(walk_missing, repo, commit, dest)
    assert walked.files == {}
    assert walked.boot_bytes == 0


async def test_walk_reports_a_missing_dirtree(tmp_path: Path) -> None:
    repo = await sim.init_repo(tmp_path / "repo")
    commit = await sim.commit_tree(repo, await _tree(tmp_path), subject="walk")
    root_tree, _ = parse_commit_root(commit_path(repo, commit).read_bytes())
    object_path(repo, root_tree, "dirtree").unlink()
    dest = await sim.init_repo(tmp_path / "dest", mode="bare")
    with pytest.raises(MissingObjectError) as caught:
        await asyncio.to_thread(walk_missing, repo, commit, dest)
    assert caught.value.path.name.endswith(".dirtree")


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError, match=r"framing|truncated|checksum"):
        parse_commit_root(b"not a commit at all")


async def _bundle_repo(tmp_path: Path) -> tuple[Path, str]:
    """An archive repo inside a bundle directory, as on a drive."""
    repo = await sim.init_repo(tmp_path / "bundle" / "ostree_repo")
    commit = await sim.commit_tree(repo, await _tree(tmp_path), subject="walk")
    return repo, commit


def _a_dirtree(repo: Path, commit: str) -> Path:
    root_tree, _ = parse_commit_root(commit_path(repo, commit).read_bytes())
    return object_path(repo, root_tree, "dirtree")


def _a_file_object(repo: Path) -> Path:
    return max(repo.glob("objects/*/*.filez"), key=lambda p: p.stat().st_size)


def _make_unsafe(target: Path, kind: str, *, outside: Path) -> None:
    """Replace ``target`` with what ostree must never open (its bytes kept ``outside``)."""
    outside.write_bytes(target.read_bytes())
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "outside-link":
        target.symlink_to(outside)
    elif kind == "loop":
        target.symlink_to(target.name)
    else:
        target.mkdir()


@pytest.mark.parametrize("kind", ["fifo", "outside-link", "loop", "directory"])
@pytest.mark.parametrize("which", ["dirtree", "filez", "config"])
async def test_the_walk_refuses_what_ostree_must_never_open(
    tmp_path: Path, which: str, kind: str
) -> None:
    repo, commit = await _bundle_repo(tmp_path)
    target = {
        "dirtree": _a_dirtree(repo, commit),
        "filez": _a_file_object(repo),
        "config": repo / "config",
    }[which]
    _make_unsafe(target, kind, outside=tmp_path / "host-file")
    dest = await sim.init_repo(tmp_path / "dest", mode="bare")
    with pytest.raises(UnsafeEntryError) as caught:
        await asyncio.to_thread(walk_missing, repo, commit, dest)
    assert caught.value.path == target.relative_to(tmp_path / "bundle").as_posix()


async def test_a_link_inside_the_bundle_is_followed_to_a_file_object(tmp_path: Path) -> None:
    repo, commit = await _bundle_repo(tmp_path)
    victim = _a_file_object(repo)
    moved = tmp_path / "bundle" / "elsewhere" / victim.name
    moved.parent.mkdir()
    victim.rename(moved)
    victim.symlink_to(Path("../../../elsewhere") / victim.name)
    dest = await sim.init_repo(tmp_path / "dest", mode="bare")
    walked = await asyncio.to_thread(walk_missing, repo, commit, dest)
    assert victim.parent.name + victim.stem in walked.files


async def test_a_metadata_object_may_not_be_a_link_even_inside(tmp_path: Path) -> None:
    # ostree would not follow it (the object would be "missing", a dirmeta silently skipped)
    repo, commit = await _bundle_repo(tmp_path)
    tree = _a_dirtree(repo, commit)
    moved = tmp_path / "bundle" / "elsewhere" / tree.name
    moved.parent.mkdir()
    tree.rename(moved)
    tree.symlink_to(Path("../../../elsewhere") / tree.name)
    dest = await sim.init_repo(tmp_path / "dest", mode="bare")
    with pytest.raises(UnsafeEntryError, match="is a symlink"):
        await asyncio.to_thread(walk_missing, repo, commit, dest)


async def test_a_tampered_dirtree_does_not_match_its_name(tmp_path: Path) -> None:
    repo, commit = await _bundle_repo(tmp_path)
    tree = _a_dirtree(repo, commit)
    data = bytearray(tree.read_bytes())
    data[0] ^= 0x01
    tree.write_bytes(bytes(data))
    dest = await sim.init_repo(tmp_path / "dest", mode="bare")
    with pytest.raises(CorruptObjectError, match="does not match its checksum"):
        await asyncio.to_thread(walk_missing, repo, commit, dest)


async def test_deep_check_hashes_every_file_object_as_ostree_does(tmp_path: Path) -> None:
    repo, commit = await _bundle_repo(tmp_path)
    hashed = await asyncio.to_thread(verify_commit_content, repo, commit)
    # every file object of the commit, symlinks, empty and set-id files included
    assert hashed == len(list(repo.glob("objects/*/*.filez"))) > 300


async def test_deep_check_finds_content_that_differs(tmp_path: Path) -> None:
    repo, commit = await _bundle_repo(tmp_path)
    victim = _a_file_object(repo)
    other = min(repo.glob("objects/*/*.filez"), key=lambda p: p.stat().st_size)
    # a well-formed object, but another file's: only hashing the content can tell
    victim.write_bytes(other.read_bytes())
    with pytest.raises(CorruptObjectError) as caught:
        await asyncio.to_thread(verify_commit_content, repo, commit)
    assert victim.name in str(caught.value)
