"""Content-addressed blobs: digests, paths, verified reads and verified copies.

Everything here is blocking file I/O meant to run in a worker thread (``asyncio.to_thread``).
Large blobs are streamed in chunks; nothing reads a layer into memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aklited.drivefs import (
    BundleFiles,
    DriveEntryError,
    DriveIOError,
    MissingEntryError,
    describe_mode,
)
from aklited.errors import (
    AppsContentMissingError,
    AppsCopyError,
    AppsCorruptError,
    AppsError,
    AppsNoSpaceError,
)
from aklited.host.files import fsync_dir

CHUNK = 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{64}")
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True, slots=True)
class Blob:
    """One node of an app's Merkle tree: sha256 hex, exact size and the media type it was given."""

    hex: str
    size: int
    media_type: str = ""

    @property
    def digest(self) -> str:
        return f"sha256:{self.hex}"


def parse_digest(value: object, *, what: str) -> str:
    """Return the hex of a ``sha256:<64 hex>`` digest or raise 70 naming ``what``."""
    if not isinstance(value, str) or not value.startswith("sha256:"):
        raise AppsCorruptError(f"{what}: digest {value!r} is not a sha256 digest")
    hex_ = value.removeprefix("sha256:")
    if not _HEX.fullmatch(hex_):
        raise AppsCorruptError(f"{what}: digest {value!r} is malformed")
    return hex_


def is_hex_digest(name: str) -> bool:
    """True if ``name`` is a bare 64-character lowercase sha256 hex string."""
    return _HEX.fullmatch(name) is not None


def blobs_dir(store_root: Path) -> Path:
    """``<store>/blobs/sha256``: where a composectl store keeps its blobs."""
    return store_root / "blobs" / "sha256"


def blob_path(store_root: Path, hex_: str) -> Path:
    return blobs_dir(store_root) / hex_


def store_files(store_root: Path) -> BundleFiles:
    """Confined read access to a store: nothing read may leave the directory holding it
    (the bundle, for a bundle's ``apps/``)."""
    return BundleFiles.for_subdir(store_root)


def _relative(hex_: str) -> str:
    return f"blobs/sha256/{hex_}"


def io_failure(message: str, e: OSError, *, error: type[AppsError]) -> AppsError:
    """An OSError writing on the device as an apps outcome: 60 when it is full, else ``error``.

    The message is ``message`` followed by the system's reason.
    """
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    reason = e.strerror or str(e) or type(e).__name__
    return (AppsNoSpaceError if full else error)(f"{message}: {reason}")


def drive_refusal(e: DriveEntryError, what: str) -> AppsError:
    """A refusal of the confined reader as an apps outcome: absent 8, I/O 50, unsafe 70."""
    if isinstance(e, MissingEntryError):
        return AppsContentMissingError(f"{what}: blob {e.path} is missing")
    if isinstance(e, DriveIOError):
        return AppsCopyError(f"{what}: {e}; check the drive")
    return AppsCorruptError(f"{what}: {e}")


def open_blob(files: BundleFiles, hex_: str, *, what: str) -> BinaryIO:
    """Open a blob of a store for reading (a regular file inside the store's bundle).

    Raises:
        AppsError: 8 if absent, 70 if it is not a regular file or leads out, 50 on I/O.
    """
    try:
        return files.open(_relative(hex_))
    except DriveEntryError as e:
        raise drive_refusal(e, what) from e


def read_small_blob(
    files: BundleFiles, hex_: str, *, what: str, limit: int, size: int | None = None
) -> bytes:
    """Read a metadata blob (manifest, index, config) whole and check digest, size and limit.

    Args:
        files: the app store.
        hex_: expected sha256 hex; also the blob's file name.
        what: names the node in error messages.
        limit: reading this many bytes or more is an error (composectl's convention).
        size: the exact size the parent declared, when it declared one.

    Raises:
        AppsError: 8 if the blob is absent, 70 if it is too large, unsafe or does not match,
            50 on an I/O error.
    """
    cap = limit if size is None else min(limit, size + 1)
    with open_blob(files, hex_, what=what) as f:
        try:
            data = f.read(cap)
        except OSError as e:
            raise AppsCopyError(
                f"{what}: cannot read blob {hex_[:12]}: {e.strerror}; check the drive"
            ) from e
    if len(data) >= limit:
        raise AppsCorruptError(
            f"{what}: blob {hex_[:12]} is {limit} bytes or larger, over its limit"
        )
    if size is not None and len(data) != size:
        raise AppsCorruptError(
            f"{what}: blob {hex_[:12]} size differs from the {size} bytes declared"
        )
    if hashlib.sha256(data).hexdigest() != hex_:
        raise AppsCorruptError(f"{what}: blob {hex_[:12]} content does not match its sha256 digest")
    return data


def verify_blob_file(files: BundleFiles, blob: Blob, *, what: str) -> None:
    """Hash a blob of any size in chunks and check it against ``blob`` (digest and size).

    Raises:
        AppsError: 8 if the blob is absent, 70 if it is unsafe or its size or digest differs,
            50 on an I/O error.
    """
    with open_blob(files, blob.hex, what=what) as f:
        _hash_stream(f, blob, what=what, sink=None)


def check_blob_size(files: BundleFiles, blob: Blob, *, what: str) -> None:
    """The cheap check (composectl's ``--quick``): the blob exists with the declared size.

    Raises:
        AppsError: 8 if the blob is absent, 70 if it is unsafe or its size differs.
    """
    try:
        info = files.stat(_relative(blob.hex))
    except DriveEntryError as e:
        raise drive_refusal(e, what) from e
    if not stat.S_ISREG(info.st_mode):
        # Named by its path, as the confined reader names what it refuses.
        raise AppsCorruptError(
            f"{what}: {_relative(blob.hex)} is {describe_mode(info.st_mode)}, not a regular file"
        )
    if info.st_size != blob.size:
        raise AppsCorruptError(
            f"{what}: blob {blob.hex[:12]} is {info.st_size} bytes, {blob.size} declared"
        )


def copy_blob(src: BundleFiles, dst_root: Path, blob: Blob, *, what: str) -> None:
    """Copy one blob into another store, verifying while copying; never leave a partial blob.

    The bytes go to a temporary name in the destination dir, are fsynced, then renamed to the
    final name and the directory fsynced: after a crash the blob is either whole or absent.

    Raises:
        AppsError: 8 if the source is absent, 70 if it is unsafe or does not match, 50 on a
            read or write error, 60 when the device is full.
    """
    dst_dir = blobs_dir(dst_root)
    dst_dir.mkdir(parents=True, exist_ok=True)
    tmp = dst_dir / f"{TMP_PREFIX}{blob.hex}-{secrets.token_hex(4)}"
    try:
        with open_blob(src, blob.hex, what=what) as fin, tmp.open("wb") as fout:
            _hash_stream(fin, blob, what=what, sink=fout)
            fout.flush()
            os.fsync(fout.fileno())
        tmp.rename(dst_dir / blob.hex)
        fsync_dir(dst_dir)
    except OSError as e:
        # Reading the source raises AppsError (see _hash_stream): what is left is the write.
        raise io_failure(
            f"{what}: copying blob {blob.hex[:12]} to {dst_dir} failed", e, error=AppsCopyError
        ) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _hash_stream(f: BinaryIO, blob: Blob, *, what: str, sink: BinaryIO | None) -> None:
    # One reused buffer: memory stays flat however large the blob is.
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    seen = 0
    while True:
        try:
            count = f.readinto(buffer)  # type: ignore[attr-defined]
        except OSError as e:
            # The source failed (a drive pulled out): never "content failed verification".
            raise AppsCopyError(
                f"{what}: reading blob {blob.hex[:12]} failed: {e.strerror or e}; check the drive"
            ) from e
        if not count:
            break
        seen += count
        if seen > blob.size:
            raise AppsCorruptError(
                f"{what}: blob {blob.hex[:12]} is longer than the {blob.size} declared"
            )
        digest.update(view[:count])
        if sink is not None:
            sink.write(view[:count])
    if seen != blob.size:
        raise AppsCorruptError(
            f"{what}: blob {blob.hex[:12]} is {seen} bytes, {blob.size} declared"
        )
    if digest.hexdigest() != blob.hex:
        raise AppsCorruptError(
            f"{what}: blob {blob.hex[:12]} content does not match its sha256 digest"
        )
