"""Where an OSTree repo keeps its objects, read directly for cheap checks. All blocking.

``objects/<first two hex digits>/<other 62>.<type>``; a pull left half-way marks its commit
with ``state/<commit>.commitpartial``. Metadata objects (commit, dirtree, dirmeta) are stored
as their exact serialized bytes in every repo mode, so a commit object's file hashes to the
commit's name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def object_relpath(checksum: str, objtype: str) -> str:
    """Where an object lies inside its repo, ``objtype`` one of commit, commitmeta, dirtree,
    dirmeta, file, filez."""
    return f"objects/{checksum[:2]}/{checksum[2:]}.{objtype}"


def object_path(repo: Path, checksum: str, objtype: str) -> Path:
    """Path of an object in ``repo``."""
    return repo / object_relpath(checksum, objtype)


def commit_path(repo: Path, commit: str) -> Path:
    """Path of a commit object."""
    return object_path(repo, commit, "commit")


def has_commit(repo: Path, commit: str) -> bool:
    """The commit object exists and no pull of it was left half-way."""
    partial = repo / "state" / f"{commit}.commitpartial"
    return commit_path(repo, commit).is_file() and not partial.exists()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def mark_partial(repo: Path, commit: str) -> None:
    """Mark ``commit`` as pulled half-way, as ostree does: :func:`has_commit` is then
    False, and the next pull of it checks every object again."""
    state = repo / "state"
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    marker = os.open(state / f"{commit}.commitpartial", flags, 0o644)
    try:
        os.fsync(marker)
    finally:
        os.close(marker)
    directory = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)  # a power cut must not make it count as pulled again
    finally:
        os.close(directory)
