"""Where metadata comes from: a pluggable source, and a bounded reader for directories.

A source answers ``fetch_root(v)``, ``fetch_timestamp()``, ``fetch_snapshot(v)``,
``fetch_targets(v)`` and ``fetch_delegated(role, v)`` with the file's bytes, or None when
it has no such file. The methods are synchronous and may block: the workflow runs in a
worker thread.

Files on removable media are untrusted: :func:`read_bounded` never reads more than the
role's limit + 1 bytes, refuses anything that is not a regular file, and refuses symlinks
that lead outside the bundle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aklited.drivefs import BundleFiles, DriveEntryError, MissingEntryError
from aklited.trust.errors import drive_error, security_error
from aklited.trust.metadata import delegated_filename

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """Largest accepted size of each metadata file, in bytes."""

    root: int = 512 * KIB
    timestamp: int = 64 * KIB
    snapshot: int = 2 * MIB
    targets: int = 16 * MIB  # twice aktualizr's 8 MiB, so the largest factories fit
    bundle_targets: int = 1 * MIB


DEFAULT_LIMITS = SizeLimits()


class MetadataSource(Protocol):
    """Where the workflow fetches new metadata from."""

    def fetch_root(self, version: int) -> bytes | None:
        """Return ``<version>.root.json`` or None when absent."""
        ...

    def fetch_timestamp(self) -> bytes | None:
        """Return ``timestamp.json`` or None when absent."""
        ...

    def fetch_snapshot(self, version: int) -> bytes | None:
        """Return the snapshot the timestamp names (``version``), or None when absent."""
        ...

    def fetch_targets(self, version: int) -> bytes | None:
        """Return the targets the snapshot names (``version``), or None when absent."""
        ...

    def fetch_delegated(self, role: str, version: int) -> bytes | None:
        """Return delegated targets role ``role`` at ``version``, or None when absent."""
        ...


def read_bounded(
    path: Path, *, limit: int, boundary: Path, label: str | None = None
) -> bytes | None:
    """Read a regular file of at most ``limit`` bytes that lies inside ``boundary``.

    Args:
        path: The file to read.
        limit: Largest accepted size in bytes.
        boundary: Directory the file (after following symlinks) must be inside.
        label: Name used in messages; defaults to the path relative to ``boundary``.

    Returns:
        The bytes, or None when the file does not exist.

    Raises:
        TrustError: 11 for a symlink leaving ``boundary``, a non-regular file or an
            oversized file; 4 for an I/O error.
    """
    name = label or _relative_name(path, boundary)
    relative = _inside(path, boundary)
    if relative is None:
        raise security_error(name, f"lies outside {boundary}")
    try:
        with BundleFiles(boundary) as files:
            return files.read(relative, limit=limit)
    except MissingEntryError:
        return None
    except DriveEntryError as e:
        raise drive_error(e, name) from e


def _inside(path: Path, boundary: Path) -> str | None:
    """``path`` relative to ``boundary``; the caller may spell either through links."""
    for candidate, base in (
        (path, boundary),
        (Path(os.path.realpath(path.parent)) / path.name, Path(os.path.realpath(boundary))),
    ):
        if candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
    return None


def _relative_name(path: Path, boundary: Path) -> str:
    try:
        return str(path.relative_to(boundary))
    except ValueError:
        return str(path)


class DirectorySource:
    """Metadata in a directory, named as in an offline bundle's ``tuf/``.

    Roots are versioned (``N.root.json``); timestamp, snapshot and targets are not.
    """

    def __init__(
        self, directory: Path, *, boundary: Path | None = None, limits: SizeLimits = DEFAULT_LIMITS
    ) -> None:
        """Args:
        directory: The ``tuf/`` directory.
        boundary: Symlinks may not lead outside it (default: ``directory``'s parent,
            the bundle).
        limits: Size limits per role.
        """
        self.directory = directory
        self.boundary = boundary if boundary is not None else directory.parent
        self.limits = limits

    def _read(self, name: str, limit: int) -> bytes | None:
        label = _relative_name(self.directory / name, self.boundary)
        return read_bounded(self.directory / name, limit=limit, boundary=self.boundary, label=label)

    def fetch_root(self, version: int) -> bytes | None:
        """Return ``<version>.root.json`` or None."""
        return self._read(f"{version}.root.json", self.limits.root)

    def fetch_timestamp(self) -> bytes | None:
        """Return ``timestamp.json`` or None."""
        return self._read("timestamp.json", self.limits.timestamp)

    def fetch_snapshot(self, version: int) -> bytes | None:
        """Return ``snapshot.json`` (unversioned in bundles) or None."""
        del version
        return self._read("snapshot.json", self.limits.snapshot)

    def fetch_targets(self, version: int) -> bytes | None:
        """Return ``targets.json`` (unversioned in bundles) or None."""
        del version
        return self._read("targets.json", self.limits.targets)

    def fetch_delegated(self, role: str, version: int) -> bytes | None:
        """Return ``<quote(role)>.json`` (unversioned, like targets.json) or None.

        Raises:
            TrustError: 11 when ``role`` cannot be a file name safely.
        """
        del version
        try:
            name = delegated_filename(role)
        except ValueError as e:
            raise security_error(_relative_name(self.directory, self.boundary), str(e)) from e
        return self._read(name, self.limits.targets)

    def fetch_bundle_targets(self) -> bytes | None:
        """Return ``bundle-targets.json`` or None."""
        return self._read("bundle-targets.json", self.limits.bundle_targets)

    def root_versions(self) -> list[int]:
        """Versions of the ``N.root.json`` files present, ascending."""
        versions: list[int] = []
        label = _relative_name(self.directory, self.boundary)
        try:
            with BundleFiles(self.boundary) as files:
                names = files.list_dir(self.directory.relative_to(self.boundary).as_posix())
        except MissingEntryError:
            return []
        except DriveEntryError as e:
            raise drive_error(e, label) from e
        except ValueError as e:
            raise security_error(label, str(e)) from e
        for name in names:
            stem = name.removesuffix(".root.json")
            if stem != name and stem.isdigit() and stem.isascii():
                versions.append(int(stem))
        return sorted(versions)
