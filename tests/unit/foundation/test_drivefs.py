"""The one reader for files on a drive: confined to the bundle, regular files only, bounded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aklited.drivefs import (
    BundleFiles,
    DriveIOError,
    MissingEntryError,
    UnsafeEntryError,
)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "repo" / "objects" / "ab").mkdir(parents=True)
    (root / "repo" / "config").write_bytes(b"[core]\nmode=archive-z2\n")
    (root / "repo" / "objects" / "ab" / "cd.dirtree").write_bytes(b"tree")
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "copy").write_bytes(b"copied")
    (tmp_path / "host-secret").write_bytes(b"secret")
    return root


def test_reads_a_regular_file(bundle: Path) -> None:
    with BundleFiles(bundle) as files:
        assert files.read("repo/config", limit=100) == b"[core]\nmode=archive-z2\n"
        assert files.read("repo/./objects//ab/cd.dirtree", limit=4) == b"tree"


def test_follows_links_that_stay_inside(bundle: Path) -> None:
    (bundle / "repo" / "objects" / "ab" / "ef.file").symlink_to("../../../elsewhere/copy")
    (bundle / "repo" / "objects" / "01").symlink_to("ab")
    with BundleFiles(bundle) as files:
        assert files.read("repo/objects/ab/ef.file", limit=10) == b"copied"
        assert files.read("repo/objects/01/cd.dirtree", limit=10) == b"tree"
        assert files.list_dir("repo/objects/01") == ["cd.dirtree", "ef.file"]
        # lstat sees the link itself, not what it names
        assert stat.S_ISLNK(files.lstat("repo/objects/ab/ef.file").st_mode)


@pytest.mark.parametrize(
    "target",
    ["HOST", "../../../../host-secret", "../../../../../../../../host-secret", "/dev/zero"],
    ids=["absolute", "dotdot", "far-dotdot", "dev-zero"],
)
def test_refuses_links_out_of_the_bundle(bundle: Path, target: str) -> None:
    secret = bundle.parent / "host-secret"
    link = bundle / "repo" / "objects" / "ab" / "00.dirtree"
    link.symlink_to(str(secret) if target == "HOST" else target)
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError) as caught:
        files.read("repo/objects/ab/00.dirtree", limit=1 << 20)
    assert caught.value.path == "repo/objects/ab/00.dirtree"
    assert "outside the bundle" in str(caught.value)


def test_refuses_a_directory_link_out_of_the_bundle(bundle: Path) -> None:
    outside = bundle.parent / "outside-dir"
    outside.mkdir()
    (outside / "cd.dirtree").write_bytes(b"x")
    (bundle / "repo" / "objects" / "02").symlink_to(outside)
    with BundleFiles(bundle) as files:
        with pytest.raises(UnsafeEntryError, match="outside the bundle"):
            files.list_dir("repo/objects/02")
        with pytest.raises(UnsafeEntryError, match="outside the bundle"):
            files.read("repo/objects/02/cd.dirtree", limit=10)


def test_a_base_that_is_a_link_out_is_refused(bundle: Path) -> None:
    outside = bundle.parent / "apps-elsewhere"
    (outside / "blobs").mkdir(parents=True)
    (bundle / "apps").symlink_to(outside)
    files = BundleFiles.for_subdir(bundle / "apps")
    with files, pytest.raises(UnsafeEntryError) as caught:
        files.list_dir("blobs")
    assert caught.value.path == "apps/blobs"


def test_refuses_a_symlink_loop(bundle: Path) -> None:
    objects = bundle / "repo" / "objects" / "ab"
    (objects / "a.file").symlink_to("b.file")
    (objects / "b.file").symlink_to("a.file")
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError, match="loop"):
        files.read("repo/objects/ab/a.file", limit=10)


def test_refuses_a_fifo_without_blocking(bundle: Path) -> None:
    os.mkfifo(bundle / "repo" / "objects" / "ab" / "ff.dirtree")
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError, match="FIFO"):
        files.read("repo/objects/ab/ff.dirtree", limit=10)


@pytest.mark.root
def test_refuses_a_device_node(bundle: Path) -> None:
    os.mknod(bundle / "repo" / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError, match="character device"):
        files.read("repo/zero", limit=10)


def test_refuses_a_directory_for_a_file(bundle: Path) -> None:
    (bundle / "repo" / "objects" / "ab" / "dd.file").mkdir()
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError, match="directory"):
        files.read("repo/objects/ab/dd.file", limit=10)


def test_refuses_a_file_for_a_directory(bundle: Path) -> None:
    (bundle / "repo" / "objects" / "cc").write_bytes(b"")
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError, match="not a directory"):
        files.read("repo/objects/cc/x.file", limit=10)


def test_bounds_the_read(bundle: Path) -> None:
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError, match="limit"):
        files.read("repo/config", limit=4)


def test_missing_and_dangling_links_are_absent(bundle: Path) -> None:
    (bundle / "repo" / "dangling").symlink_to("nothing-here")
    with BundleFiles(bundle) as files:
        with pytest.raises(MissingEntryError):
            files.read("repo/nope", limit=10)
        with pytest.raises(MissingEntryError):
            files.read("repo/dangling", limit=10)
        assert not files.exists("repo/nope")
        assert not files.is_dir("repo/nope")


def test_walks_a_pattern(bundle: Path) -> None:
    apps = bundle / "apps" / "apps"
    for app, digest in (("one", "11"), ("two", "22")):
        (apps / app / digest).mkdir(parents=True)
        (apps / app / digest / "uri").write_text(f"{app}@{digest}")
    (apps / "three" / "33").mkdir(parents=True)  # no uri: skipped
    with BundleFiles.for_subdir(bundle / "apps") as files:
        assert list(files.walk_files("apps", ("*", "*", "uri"))) == [
            "apps/one/11/uri",
            "apps/two/22/uri",
        ]


def test_io_errors_are_not_refusals() -> None:
    err = DriveIOError("tuf/targets.json", OSError(5, "Input/output error"))
    assert str(err) == "tuf/targets.json: cannot be read: Input/output error"
    assert not isinstance(err, UnsafeEntryError)


def test_listing_is_bounded(bundle: Path) -> None:
    many = bundle / "many"
    many.mkdir()
    for i in range(11):
        (many / str(i)).touch()
    with BundleFiles(bundle) as files:
        assert len(files.list_dir("many", limit=11)) == 11
        with pytest.raises(UnsafeEntryError, match="more than 10 entries"):
            files.list_dir("many", limit=10)


def test_a_directory_looks_entries_up_by_name_without_following_links(bundle: Path) -> None:
    fan_out = bundle / "repo" / "objects" / "ab"
    (fan_out / "ef.file").symlink_to("../../../elsewhere/copy")
    os.mkfifo(fan_out / "ff.dirtree")
    (bundle / "repo" / "objects" / "01").symlink_to("ab")  # the directory itself may be one
    with BundleFiles(bundle) as files, files.directory("repo/objects/01") as directory:
        assert directory.read("cd.dirtree", limit=4) == b"tree"
        assert directory.read_head("cd.dirtree", 2) == b"tr"
        assert stat.S_ISLNK(directory.lstat("ef.file").st_mode)
        with pytest.raises(UnsafeEntryError, match="symlink") as link:
            directory.read("ef.file", limit=10)
        assert link.value.path == "repo/objects/01/ef.file"
        with pytest.raises(UnsafeEntryError, match="FIFO"):
            directory.read_head("ff.dirtree", 1)
        with pytest.raises(UnsafeEntryError, match="limit"):
            directory.read("cd.dirtree", limit=3)
        with pytest.raises(MissingEntryError):
            directory.lstat("00.file")
        with pytest.raises(ValueError, match="not a name"):
            directory.lstat("../config")


def test_a_directory_out_of_the_bundle_is_refused(bundle: Path) -> None:
    (bundle / "repo" / "objects" / "02").symlink_to(bundle.parent)
    with BundleFiles(bundle) as files, pytest.raises(UnsafeEntryError, match="outside"):
        files.directory("repo/objects/02")


def test_without_following_links_every_link_is_refused(bundle: Path) -> None:
    (bundle / "repo" / "objects" / "ab" / "ef.file").symlink_to("../../../elsewhere/copy")
    (bundle / "repo" / "objects" / "01").symlink_to("ab")
    with BundleFiles(bundle, follow_links=False) as files:
        assert files.read("repo/objects/ab/cd.dirtree", limit=4) == b"tree"
        with pytest.raises(UnsafeEntryError, match="is a symlink where none may be"):
            files.read("repo/objects/ab/ef.file", limit=10)
        with pytest.raises(UnsafeEntryError, match="has repo/objects/01 as a symlink"):
            files.read("repo/objects/01/cd.dirtree", limit=10)
        with pytest.raises(UnsafeEntryError, match="symlink"):
            files.directory("repo/objects/01")
        # lstat still reports a link as itself: nothing is followed.
        assert stat.S_ISLNK(files.lstat("repo/objects/ab/ef.file").st_mode)
