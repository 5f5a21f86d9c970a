"""Where verified metadata is kept between runs.

The workflow persists a role only after it verified, through three calls that the state
journal (:class:`aklited.engine.journal.Journal`) provides too. Two small implementations live here:

* :class:`DirectoryTrustStore`: unversioned ``root.json``, ``timestamp.json``,
  ``snapshot.json``, ``targets.json`` and ``<quote(name)>.json`` per delegated role in one
  directory (python-tuf's layout), each replaced atomically with the exact bytes that
  verified (``aklite-bundle verify --trusted DIR``).
* :class:`OverlayTrustStore`: reads fall through to another store, writes stay in memory;
  it makes a check read-only.

A delegated role is stored under the key ``delegated:<name>`` (:func:`delegated_key`), so
no role name, however chosen by the repository, can stand for a top-level role.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from aklited.host.files import atomic_write, fsync_dir
from aklited.trust.errors import io_error
from aklited.trust.metadata import delegated_filename
from aklited.trust.source import DEFAULT_LIMITS, read_bounded

ROLES = ("root", "timestamp", "snapshot", "targets")
DELEGATED_PREFIX = "delegated:"


def delegated_key(name: str) -> str:
    """The store key of delegated targets role ``name``."""
    return f"{DELEGATED_PREFIX}{name}"


class TrustStore(Protocol):
    """Persistence of trusted metadata, one current copy per role (roots by version)."""

    def tuf_latest(self, role: str) -> bytes | None:
        """Return the trusted bytes of ``role`` (the highest version for root), or None."""
        ...

    def tuf_save(self, role: str, version: int, data: bytes) -> None:
        """Persist ``data`` as the trusted ``role`` at ``version``."""
        ...

    def tuf_forget(self, role: str) -> None:
        """Drop the trusted copy of ``role``."""
        ...


def _limit_for(role: str) -> int:
    if role.startswith(DELEGATED_PREFIX):
        return DEFAULT_LIMITS.targets
    return int(getattr(DEFAULT_LIMITS, role))


class DirectoryTrustStore:
    """Trusted metadata as ``<dir>/<role>.json`` files, each replaced atomically."""

    def __init__(self, directory: Path) -> None:
        """Args:
        directory: The trusted directory (seeded with a ``root.json``).
        """
        self.directory = directory

    def _path(self, role: str) -> Path:
        if role in ROLES:
            return self.directory / f"{role}.json"
        name = role.removeprefix(DELEGATED_PREFIX)
        if name == role:
            raise ValueError(f"unknown role {role!r}")
        # Raises ValueError for a name the workflow should have refused already.
        return self.directory / delegated_filename(name)

    def tuf_latest(self, role: str) -> bytes | None:
        """Return ``<role>.json`` or None."""
        path = self._path(role)
        return read_bounded(path, limit=_limit_for(role), boundary=self.directory, label=str(path))

    def tuf_save(self, role: str, version: int, data: bytes) -> None:
        """Replace ``<role>.json``: temp file, fsync, rename, fsync of the directory."""
        del version  # one file per role: the version is inside it
        path = self._path(role)
        try:
            atomic_write(path, data)
        except OSError as e:
            raise io_error(str(path), e) from e

    def tuf_forget(self, role: str) -> None:
        """Delete ``<role>.json`` if present."""
        path = self._path(role)
        try:
            path.unlink(missing_ok=True)
            fsync_dir(self.directory)
        except OSError as e:
            raise io_error(str(path), e) from e


class OverlayTrustStore:
    """A read-only view of another store: writes are kept in memory only.

    Reads see this overlay's writes first, then fall through to ``base`` (None: empty).
    """

    def __init__(self, base: TrustStore | None) -> None:
        """Args:
        base: The store to read through to; it is never written.
        """
        self._base = base
        self._written: dict[str, bytes | None] = {}

    def tuf_latest(self, role: str) -> bytes | None:
        """Return the overlay's copy, else the base store's."""
        if role in self._written:
            return self._written[role]
        return self._base.tuf_latest(role) if self._base is not None else None

    def tuf_save(self, role: str, version: int, data: bytes) -> None:
        """Keep ``data`` in memory."""
        del version
        self._written[role] = data

    def tuf_forget(self, role: str) -> None:
        """Hide the role from reads, in memory only."""
        self._written[role] = None
