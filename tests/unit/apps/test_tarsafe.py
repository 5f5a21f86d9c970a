from __future__ import annotations

import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest

from aklited.apps.tarsafe import COMPOSE_FILE, extract_bundle
from aklited.errors import AppsError
from aklited.outcomes import StatusCode

COMPOSE = b"services: {}\n"


def _member(
    name: str, data: bytes | None = None, **attrs: object
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    if data is not None:
        info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _tgz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_regular_bundle_is_extracted(tmp_path: Path) -> None:
    archive = _tgz(
        tmp_path / "b.tgz",
        [
            _member(COMPOSE_FILE, COMPOSE),
            _member("conf", type=tarfile.DIRTYPE, mode=0o755),
            _member("conf/app.ini", b"x=1\n", mode=0o4755),
            _member("./.env", b"A=1\n"),
            _member("conf/link", type=tarfile.SYMTYPE, linkname="app.ini"),
            _member("conf/hard", type=tarfile.LNKTYPE, linkname="conf/app.ini"),
        ],
    )
    dest = tmp_path / "out"
    result = extract_bundle(archive, dest, what="app a")
    assert result.files == (COMPOSE_FILE, "conf/app.ini", ".env")
    assert (dest / COMPOSE_FILE).read_bytes() == COMPOSE
    assert (dest / "conf/link").read_bytes() == b"x=1\n"
    assert (dest / "conf/hard").read_bytes() == b"x=1\n"
    # No set-id bit survives extraction.
    assert (dest / "conf/app.ini").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([_member("/etc/evil", b"x")], "absolute name"),
        ([_member("../evil", b"x")], "climbs out"),
        ([_member("a/../../evil", b"x")], "climbs out"),
        ([_member("l", type=tarfile.SYMTYPE, linkname="/etc/passwd")], "absolute"),
        ([_member("l", type=tarfile.SYMTYPE, linkname="../../etc")], "outside the app dir"),
        ([_member("d/l", type=tarfile.SYMTYPE, linkname="../../x")], "outside the app dir"),
        ([_member("h", type=tarfile.LNKTYPE, linkname="../x")], "outside the app dir"),
        (
            [
                _member("a", type=tarfile.SYMTYPE, linkname="c/.."),
                _member("c", type=tarfile.SYMTYPE, linkname="."),
            ],
            "outside the app dir",
        ),
        ([_member("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)], "device node"),
        ([_member("fifo", type=tarfile.FIFOTYPE)], "device node"),
        ([_member(COMPOSE_FILE, type=tarfile.SYMTYPE, linkname="other")], "not a regular file"),
        ([_member("other.yml", COMPOSE)], f"no top-level {COMPOSE_FILE}"),
        ([_member(COMPOSE_FILE, b"#" * (1024 * 1024 + 1))], "over the 1 MiB limit"),
    ],
)
def test_unsafe_or_incomplete_bundles_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], reason: str
) -> None:
    archive = _tgz(tmp_path / "b.tgz", [_member(COMPOSE_FILE, COMPOSE), *members])
    if reason.startswith("no top-level"):
        archive = _tgz(tmp_path / "b.tgz", members)
    outside = tmp_path / "evil"
    with pytest.raises(AppsError) as err:
        extract_bundle(archive, tmp_path / "out" / "app", what="app a")
    assert err.value.code == StatusCode.VERIFICATION_FAILED
    assert reason in err.value.message
    assert err.value.message.startswith("app a: ")
    assert not outside.exists()


def test_write_through_an_inner_symlink_that_leads_out_is_refused(tmp_path: Path) -> None:
    # "d" is a link that stays inside; a file below "d" after "d" is re-pointed must not escape.
    (tmp_path / "outside").mkdir()
    archive = _tgz(
        tmp_path / "b.tgz",
        [
            _member(COMPOSE_FILE, COMPOSE),
            _member("sub", type=tarfile.DIRTYPE, mode=0o755),
            _member("sub/d", type=tarfile.SYMTYPE, linkname=".."),
            _member("sub/d/d2", type=tarfile.SYMTYPE, linkname=".."),
            _member("sub/d/d2/x", b"x"),
        ],
    )
    with pytest.raises(AppsError, match="outside the app dir"):
        extract_bundle(archive, tmp_path / "out", what="app a")
    assert not (tmp_path / "x").exists()


def test_garbage_archive_is_a_verification_failure(tmp_path: Path) -> None:
    archive = tmp_path / "b.tgz"
    archive.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(AppsError) as err:
        extract_bundle(archive, tmp_path / "out", what="app a")
    assert err.value.code == StatusCode.VERIFICATION_FAILED


# A chain of links, each harmless on its own ("l1 -> l0/.." stays inside if l0 were a
# directory), that together climb out of the destination one level per link.


def _chain(length: int) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """``l0 -> .``, ``l1 -> l0/..``, ...: ``l<n>`` leads ``n`` levels above the destination."""
    links = [_member("l0", type=tarfile.SYMTYPE, linkname=".")]
    links += [
        _member(f"l{i}", type=tarfile.SYMTYPE, linkname=f"l{i - 1}/..") for i in range(1, length)
    ]
    return links


def _snapshot(root: Path, *, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``root`` but ``skip``'s subtree: (mode, size, mtime) by path.

    The mtime of ``skip``'s parent changes when ``skip`` is made; it is left out.
    """
    found: dict[str, tuple[int, int, int]] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(directory, d) != skip]
        for name in (*dirnames, *filenames):
            path = Path(directory, name)
            info = path.lstat()
            mtime = 0 if path == skip.parent else info.st_mtime_ns
            found[str(path.relative_to(root))] = (info.st_mode, info.st_size, mtime)
    return found


@pytest.mark.parametrize(
    "escape",
    [
        # a file below the chain: its parents would be made outside before any check
        _member("l3/escaped/deeper/file", b"x"),
        # a directory below the chain
        _member("l3/escaped-dir/sub", type=tarfile.DIRTYPE, mode=0o755),
        # a file right below a link that leads out
        _member("l1/file-beside-dest", b"x"),
        # a link below the chain
        _member("l3/escaped-link", type=tarfile.SYMTYPE, linkname="elsewhere"),
        # a hard link to a file outside, named through the chain
        _member("stolen", type=tarfile.LNKTYPE, linkname="l3/sentinel/secret"),
        # nothing below it: the chain alone leads out
        None,
    ],
    ids=["file", "directory", "file-beside", "symlink", "hardlink", "chain-only"],
)
def test_link_chain_out_of_the_destination_is_refused_before_writing_outside(
    tmp_path: Path, escape: tuple[tarfile.TarInfo, bytes | None] | None
) -> None:
    # dest is three levels below tmp_path: l3 leads to tmp_path itself
    dest = tmp_path / "a1" / "a2" / "dest"
    dest.parent.mkdir(parents=True)
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "secret").write_bytes(b"outside the app dir\n")
    members = [_member(COMPOSE_FILE, COMPOSE), *_chain(4), *([escape] if escape else [])]
    archive = _tgz(tmp_path / "b.tgz", members)
    before = _snapshot(tmp_path, skip=dest)

    with pytest.raises(AppsError) as err:
        extract_bundle(archive, dest, what="app a")

    assert err.value.code == StatusCode.VERIFICATION_FAILED
    assert err.value.message.startswith("app a: ")
    assert _snapshot(tmp_path, skip=dest) == before


def test_link_chain_to_the_root_is_refused_before_writing_there(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    # enough links to climb from dest to "/" and then some ("/.." is "/")
    length = len(dest.parts) + 2
    marker = f"aklited-tarsafe-test-{uuid.uuid4().hex}"
    members = [
        _member(COMPOSE_FILE, COMPOSE),
        *_chain(length),
        _member(f"l{length - 1}/{marker}/x", type=tarfile.DIRTYPE, mode=0o755),
        _member(f"l{length - 1}/{marker}/x/file", b"x"),
    ]
    archive = _tgz(tmp_path / "b.tgz", members)
    planted = Path("/") / marker
    try:
        with pytest.raises(AppsError) as err:
            extract_bundle(archive, dest, what="app a")
        assert err.value.code == StatusCode.VERIFICATION_FAILED
        assert not planted.exists(), f"{planted} was created outside the app dir"
    finally:
        if planted.is_dir():  # a failing extractor wrote there: leave the host clean
            shutil.rmtree(planted)
