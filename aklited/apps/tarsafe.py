"""Extract a compose bundle (.tgz) without letting it write outside its directory.

Blocking; run it in a worker thread. The archive is read as a stream (gzip, bzip2, xz or plain,
as composectl's reader accepts), so a bundle is never held in memory.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aklited.apps.blobs import CHUNK
from aklited.errors import AppsError

COMPOSE_FILE = "docker-compose.yml"
COMPOSE_MAX_SIZE = 1024 * 1024  # composeapp AppComposeMaxSize
BUNDLE_MAX_SIZE = 1024 * 1024 * 1024  # AppBundleMaxSize: total of the files
FILE_MAX_SIZE = BUNDLE_MAX_SIZE - COMPOSE_MAX_SIZE  # AppBundleFileMaxSize


@dataclass(frozen=True, slots=True)
class ExtractedBundle:
    """What a bundle held: its directory and the relative names of its regular files."""

    root: Path
    files: tuple[str, ...]


def extract_bundle(archive: Path, dest: Path, *, what: str) -> ExtractedBundle:
    """Extract ``archive`` into the empty or absent directory ``dest`` and check it.

    Refuses absolute names, ``..`` components, links that resolve outside ``dest``, device nodes
    and FIFOs, files over the format's size limits, and a bundle without a top-level regular
    ``docker-compose.yml``.

    Raises:
        AppsError: 70 naming the offending entry.
    """
    dest.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    total = 0
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = _check_name(member.name, what=what)
                if name is None:
                    continue
                _check_type(member, name, what=what)
                if member.isfile():
                    total += member.size
                    _check_sizes(member, name, total, what=what)
                    files.append(name)
                elif name == COMPOSE_FILE:
                    raise AppsError(f"{what}: {COMPOSE_FILE} is not a regular file in the bundle")
                _extract_member(tar, member, name, dest, what=what)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise AppsError(f"{what}: bundle archive cannot be extracted: {e}") from e
    if COMPOSE_FILE not in files:
        raise AppsError(f"{what}: bundle has no top-level {COMPOSE_FILE}")
    _check_links(dest, what=what)
    return ExtractedBundle(root=dest, files=tuple(files))


def _check_name(raw: str, *, what: str) -> str | None:
    if raw.startswith("/"):
        raise AppsError(f"{what}: bundle entry {raw!r} has an absolute name")
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if ".." in parts:
        raise AppsError(f"{what}: bundle entry {raw!r} climbs out of the app dir")
    return "/".join(parts) if parts else None


def _check_type(member: tarfile.TarInfo, name: str, *, what: str) -> None:
    if member.isfile() or member.isdir():
        return
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/"):
            raise AppsError(f"{what}: bundle link {name!r} points to absolute {target!r}")
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise AppsError(f"{what}: bundle link {name!r} points outside the app dir")
        return
    raise AppsError(f"{what}: bundle entry {name!r} is a device node or FIFO")


def _check_sizes(member: tarfile.TarInfo, name: str, total: int, *, what: str) -> None:
    if name == COMPOSE_FILE and member.size > COMPOSE_MAX_SIZE:
        raise AppsError(f"{what}: {COMPOSE_FILE} is {member.size} bytes, over the 1 MiB limit")
    if member.size > FILE_MAX_SIZE:
        raise AppsError(f"{what}: bundle file {name!r} is over the per-file size limit")
    if total > BUNDLE_MAX_SIZE:
        raise AppsError(f"{what}: bundle files total more than 1 GiB")


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, dest: Path, *, what: str
) -> None:
    target = dest / name
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    # Earlier entries may have made a parent a symlink: resolve it before writing through it.
    if not parent.resolve().is_relative_to(dest.resolve()):
        raise AppsError(f"{what}: bundle entry {name!r} would be written outside the app dir")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    if member.isdir():
        target.mkdir(mode=0o755, exist_ok=True)
    elif member.issym():
        target.symlink_to(member.linkname)
    elif member.islnk():
        link_name = _check_name(member.linkname, what=what)
        source = dest / (link_name or ".")
        if not source.resolve().is_relative_to(dest.resolve()) or not source.is_file():
            raise AppsError(f"{what}: bundle hard link {name!r} has no file to link to")
        target.hardlink_to(source)
    else:
        data = tar.extractfile(member)
        if data is None:
            raise AppsError(f"{what}: bundle entry {name!r} has no data")
        # Permissions only: no set-id bits, no ownership from the archive.
        mode = 0o755 if member.mode & 0o111 else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(data, out, CHUNK)


def _check_links(dest: Path, *, what: str) -> None:
    # Links were checked one by one as they were made, but a later link can change where an
    # earlier one leads (a -> c/.., then c -> .): check where every link ends up in the result.
    root = dest.resolve()
    for directory, dirnames, filenames in os.walk(dest):
        for name in (*dirnames, *filenames):
            path = Path(directory, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                relative = path.relative_to(dest).as_posix()
                raise AppsError(f"{what}: bundle link {relative!r} points outside the app dir")
