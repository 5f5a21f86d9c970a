"""Extract a compose bundle (.tgz) without letting it write outside its directory.

Blocking; run it in a worker thread. The archive is read as a stream (gzip, bzip2, xz or plain,
as composectl's reader accepts), so a bundle is never held in memory.

Every entry is written relative to a descriptor of the destination, one directory component
at a time, opened with ``O_NOFOLLOW``: a link the archive made earlier is never written
through, so no chain of links can make it create anything outside, not even a directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from aklited.apps.blobs import CHUNK
from aklited.errors import AppsCorruptError

COMPOSE_FILE = "docker-compose.yml"
COMPOSE_MAX_SIZE = 1024 * 1024  # composeapp AppComposeMaxSize
BUNDLE_MAX_SIZE = 1024 * 1024 * 1024  # AppBundleMaxSize: total of the files
FILE_MAX_SIZE = BUNDLE_MAX_SIZE - COMPOSE_MAX_SIZE  # AppBundleFileMaxSize


@dataclass(frozen=True, slots=True)
class ExtractedBundle:
    """What a bundle held: its directory and the relative names of its regular files."""

    root: Path
    files: tuple[str, ...]


def extract_bundle(archive: BinaryIO | Path, dest: Path, *, what: str) -> ExtractedBundle:
    """Extract the ``archive`` stream into the empty or absent directory ``dest``; check it.

    Refuses absolute names, ``..`` components, links that resolve outside ``dest``, device nodes
    and FIFOs, files over the format's size limits, and a bundle without a top-level regular
    ``docker-compose.yml``.

    Raises:
        AppsError: 70 naming the offending entry.
    """
    if isinstance(archive, Path):
        with archive.open("rb") as stream:
            return extract_bundle(stream, dest, what=what)
    dest.mkdir(parents=True, exist_ok=True)
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        files = _extract_all(archive, dest_fd, what=what)
    finally:
        os.close(dest_fd)
    if COMPOSE_FILE not in files:
        raise AppsCorruptError(f"{what}: bundle has no top-level {COMPOSE_FILE}")
    _check_links(dest, what=what)
    return ExtractedBundle(root=dest, files=tuple(files))


def _extract_all(archive: BinaryIO, dest_fd: int, *, what: str) -> list[str]:
    files: list[str] = []
    total = 0
    try:
        with tarfile.open(fileobj=archive, mode="r|*") as tar:
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
                    raise AppsCorruptError(
                        f"{what}: {COMPOSE_FILE} is not a regular file in the bundle"
                    )
                _extract_member(tar, member, name, dest_fd, what=what)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise AppsCorruptError(f"{what}: bundle archive cannot be extracted: {e}") from e
    return files


def _check_name(raw: str, *, what: str) -> str | None:
    if raw.startswith("/"):
        raise AppsCorruptError(f"{what}: bundle entry {raw!r} has an absolute name")
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if ".." in parts:
        raise AppsCorruptError(f"{what}: bundle entry {raw!r} climbs out of the app dir")
    return "/".join(parts) if parts else None


def _check_type(member: tarfile.TarInfo, name: str, *, what: str) -> None:
    if member.isfile() or member.isdir():
        return
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/"):
            raise AppsCorruptError(f"{what}: bundle link {name!r} points to absolute {target!r}")
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise AppsCorruptError(f"{what}: bundle link {name!r} points outside the app dir")
        return
    raise AppsCorruptError(f"{what}: bundle entry {name!r} is a device node or FIFO")


def _check_sizes(member: tarfile.TarInfo, name: str, total: int, *, what: str) -> None:
    if name == COMPOSE_FILE and member.size > COMPOSE_MAX_SIZE:
        raise AppsCorruptError(
            f"{what}: {COMPOSE_FILE} is {member.size} bytes, over the 1 MiB limit"
        )
    if member.size > FILE_MAX_SIZE:
        raise AppsCorruptError(f"{what}: bundle file {name!r} is over the per-file size limit")
    if total > BUNDLE_MAX_SIZE:
        raise AppsCorruptError(f"{what}: bundle files total more than 1 GiB")


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, dest_fd: int, *, what: str
) -> None:
    *dirs, last = name.split("/")
    parent = _open_dirs(dest_fd, dirs, name, create=True, what=what)
    try:
        try:
            existing: os.stat_result | None = os.stat(last, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            os.unlink(last, dir_fd=parent)  # a later entry replaces an earlier one
            existing = None
        if member.isdir():
            if existing is None:
                os.mkdir(last, 0o755, dir_fd=parent)
        elif existing is not None:
            raise AppsCorruptError(f"{what}: bundle entry {name!r} would replace a directory")
        elif member.issym():
            os.symlink(member.linkname, last, dir_fd=parent)
        elif member.islnk():
            _hard_link(member, name, dest_fd, parent, last, what=what)
        else:
            data = tar.extractfile(member)
            if data is None:
                raise AppsCorruptError(f"{what}: bundle entry {name!r} has no data")
            # Permissions only: no set-id bits, no ownership from the archive.
            mode = 0o755 if member.mode & 0o111 else 0o644
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(last, flags, mode, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out, CHUNK)
    finally:
        if parent != dest_fd:
            os.close(parent)


def _hard_link(
    member: tarfile.TarInfo, name: str, dest_fd: int, parent: int, last: str, *, what: str
) -> None:
    link_name = _check_name(member.linkname, what=what)
    if link_name is None:
        raise AppsCorruptError(f"{what}: bundle hard link {name!r} has no file to link to")
    *source_dirs, source_last = link_name.split("/")
    source_parent = _open_dirs(dest_fd, source_dirs, name, create=False, what=what)
    try:
        try:
            info = os.stat(source_last, dir_fd=source_parent, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise AppsCorruptError(f"{what}: bundle hard link {name!r} has no file to link to")
        os.link(
            source_last,
            last,
            src_dir_fd=source_parent,
            dst_dir_fd=parent,
            follow_symlinks=False,
        )
    finally:
        if source_parent != dest_fd:
            os.close(source_parent)


def _open_dirs(dest_fd: int, dirs: list[str], name: str, *, create: bool, what: str) -> int:
    """A descriptor of ``dest/dirs...``, made as needed, never going through a link."""
    current = dest_fd
    try:
        for part in dirs:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                opened = os.open(part, flags, dir_fd=current)
            except FileNotFoundError:
                if not create:
                    raise AppsCorruptError(
                        f"{what}: bundle hard link {name!r} has no file to link to"
                    ) from None
                os.mkdir(part, 0o755, dir_fd=current)
                opened = os.open(part, flags, dir_fd=current)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise AppsCorruptError(
                        f"{what}: bundle entry {name!r} would be written through {part!r}, "
                        "which is a link or a file, possibly outside the app dir"
                    ) from e
                raise
            if current != dest_fd:
                os.close(current)
            current = opened
    except BaseException:
        if current != dest_fd:
            os.close(current)
        raise
    return current


def _check_links(dest: Path, *, what: str) -> None:
    # Links were checked one by one as they were made, but a later link can change where an
    # earlier one leads (a -> c/.., then c -> .): check where every link ends up in the result.
    root = dest.resolve()
    for directory, dirnames, filenames in os.walk(dest):
        for name in (*dirnames, *filenames):
            path = Path(directory, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                relative = path.relative_to(dest).as_posix()
                raise AppsCorruptError(
                    f"{what}: bundle link {relative!r} points outside the app dir"
                )
