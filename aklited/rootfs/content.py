"""Check every byte of a commit's file objects in an ``archive`` repo, as ``pull-local
--untrusted`` would, without writing anything: for ``check --deep`` on a workstation.

An archive file object (``.filez``) is a 4-byte big-endian header length, 4 bytes of
padding, the header variant ``(tuuuusa(ayay))`` (uncompressed size, uid, gid, mode, rdev,
symlink target, xattrs; integers big-endian) and the content as a raw deflate stream. Its
checksum is the sha256 of the same framing around the header without its size field,
``(uuuusa(ayay))``, followed by the uncompressed content. All blocking: run it in a thread.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from aklited.drivefs import BundleFiles, DriveIOError
from aklited.rootfs.repo import object_relpath
from aklited.rootfs.walk import (
    CorruptObjectError,
    check_commit,
    frame_ends,
    offset_size,
)

CHUNK = 1024 * 1024
_HASHERS = 4  # zlib and sha256 release the GIL
_HEADER_LIMIT = 1 << 20  # ostree bounds file headers too; xattrs are small


def checksum_header(header: bytes) -> bytes:
    """The ``(uuuusa(ayay))`` header a checksum covers, from an archive ``(tuuuusa(ayay))``.

    Raises:
        ValueError: the header does not parse.
    """
    (symlink_end,), table = frame_ends(header, 1)
    if symlink_end < 24 or not header[24:symlink_end].endswith(b"\0"):
        raise ValueError("bad file header")
    fixed = header[8:24]  # uid, gid, mode, rdev
    body = fixed + header[24:symlink_end] + header[symlink_end:table]
    new_end = symlink_end - 8
    size = offset_size(len(body) + 1)
    while offset_size(len(body) + size) != size:
        size = offset_size(len(body) + size)
    return body + new_end.to_bytes(size, "little")


def file_object_checksum(files: BundleFiles, relative: str) -> str:
    """The checksum of an archive file object, computed from its bytes.

    Raises:
        CorruptObjectError: it does not parse, or its content is not what the header says.
        aklited.drivefs.DriveEntryError: it is unsafe, missing, or the drive failed.
    """
    name = files.name(relative)
    with files.open(relative) as f:
        try:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CorruptObjectError(f"{name} is a truncated file object")
            (length,) = struct.unpack(">I", prefix[:4])
            if length > _HEADER_LIMIT:
                raise CorruptObjectError(f"{name} has a {length}-byte header, over its limit")
            header = f.read(length)
            if len(header) != length:
                raise CorruptObjectError(f"{name} is a truncated file object")
            try:
                covered = checksum_header(header)
            except ValueError as e:
                raise CorruptObjectError(f"{name} has a malformed header: {e}") from e
            (size,) = struct.unpack_from(">Q", header, 0)
            digest = hashlib.sha256()
            digest.update(struct.pack(">I", len(covered)) + b"\0" * 4 + covered)
            _inflate_into(digest, f, size=size, name=name)
        except OSError as e:
            raise DriveIOError(name, e) from e
    return digest.hexdigest()


def _inflate_into(digest: Any, f: BinaryIO, *, size: int, name: str) -> None:
    inflater = zlib.decompressobj(-15)
    seen = 0
    try:
        while chunk := f.read(CHUNK):
            data = inflater.decompress(chunk, CHUNK)
            while True:
                seen += len(data)
                if seen > size:
                    raise CorruptObjectError(f"{name} holds more than the {size} bytes it declares")
                digest.update(data)
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, CHUNK)
        tail = inflater.flush()
    except zlib.error as e:
        raise CorruptObjectError(f"{name} content does not inflate: {e}") from e
    seen += len(tail)
    digest.update(tail)
    if seen != size:
        raise CorruptObjectError(f"{name} holds {seen} bytes, its header says {size}")


def verify_commit_content(source: Path, commit: str, *, boundary: Path | None = None) -> int:
    """Check ``commit`` in the bundle repo ``source`` object by object, every byte.

    Returns:
        How many file objects were hashed (0 for a repo that is not ``archive``: its file
        objects were checked for safety and presence only, as ``pull-local`` reads them).

    Raises:
        MissingObjectError, CorruptObjectError, aklited.drivefs.DriveEntryError: as
            :func:`aklited.rootfs.walk.walk_missing`, and for a file object whose content
            does not match its name.
    """
    root = boundary if boundary is not None else source.parent
    with BundleFiles(root, base=source.relative_to(root).as_posix()) as files:
        listing, mode = check_commit(files, commit)
        if not mode.startswith("archive"):
            return 0

        def verify(checksum: str) -> None:
            relative = object_relpath(checksum, "filez")
            actual = file_object_checksum(files, relative)
            if actual != checksum:
                raise CorruptObjectError(
                    f"{files.name(relative)} does not match its checksum (content hashes to "
                    f"{actual})"
                )

        with ThreadPoolExecutor(max_workers=_HASHERS) as hashers:
            list(hashers.map(verify, listing.files))
        return len(listing.files)
