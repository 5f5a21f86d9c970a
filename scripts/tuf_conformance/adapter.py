"""The offline-bundle adapter's shared steps: build a bundle over HTTP, fetch targets.

Used by ``client.py`` (the tuf-conformance client CLI) with either verifier back-end
(``backend_aklited.py``, ``backend_python_tuf.py``). Nothing here verifies metadata: JSON
is parsed only to know which files a bundle carries, and the verifier judges them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib import parse

log = logging.getLogger("tuf-conformance-adapter")

KIB = 1024
MIB = 1024 * KIB
MAX_ROOT_CHAIN = 1024  # a bundle never carries more roots than this
MAX_METADATA_BYTES = 32 * MIB  # larger than any verifier accepts: the verifier decides
HTTP_TIMEOUT = 30.0
VERSIONED = re.compile(r"(?P<version>\d+)\.(?P<rest>.+)")


class AdapterError(Exception):
    """A failure of this adapter's own steps (bundle building, target download)."""


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What the verified metadata says about one target."""

    path: str
    length: int
    hashes: Mapping[str, str]


# --------------------------------------------------------------------------- HTTP


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def http_get(url: str, *, limit: int) -> bytes | None:
    """GET ``url``: its body, or None on 403/404 (the repository has no such file).

    Raises:
        AdapterError: Any other failure, or a body over ``limit`` bytes.
    """
    if not url.startswith(("http://", "https://")):
        raise AdapterError(f"{url}: only http(s) URLs are fetched")
    try:
        with _OPENER.open(url, timeout=HTTP_TIMEOUT) as response:
            data: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as e:
        if e.code in (403, 404):
            log.info("GET %s -> %d", url, e.code)
            return None
        raise AdapterError(f"{url}: HTTP {e.code}") from e
    except (urllib.error.URLError, OSError) as e:
        raise AdapterError(f"{url}: {e}") from e
    if len(data) > limit:
        raise AdapterError(f"{url}: more than {limit} bytes")
    log.info("GET %s -> %d bytes", url, len(data))
    return data


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else f"{url}/"


# --------------------------------------------------------------------------- bundle


def _signed(raw: bytes | None) -> dict[str, Any] | None:
    """The ``signed`` object of a metadata file, or None when it has none (not verified)."""
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    signed = document.get("signed") if isinstance(document, dict) else None
    return signed if isinstance(signed, dict) else None


def _meta_version(signed: dict[str, Any] | None, name: str) -> int | None:
    meta = signed.get("meta") if signed is not None else None
    entry = meta.get(name) if isinstance(meta, dict) else None
    version = entry.get("version") if isinstance(entry, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def role_filename(role: str) -> str:
    """File name of a role's metadata in a bundle and in the trusted directory."""
    return f"{parse.quote(role, '')}.json"


class BundleBuilder:
    """Downloads what an offline bundle carries into a ``tuf/`` directory.

    It trusts nothing it reads: JSON is parsed only to know which files to ask for, and
    a file that cannot be parsed ends the bundle there (the verifier judges the files).
    """

    def __init__(self, metadata_url: str, tuf_dir: Path) -> None:
        """Args:
        metadata_url: The repository's metadata URL.
        tuf_dir: The (empty) bundle directory to fill.
        """
        self.base = _with_slash(metadata_url)
        self.tuf_dir = tuf_dir

    def _get(self, name: str) -> bytes | None:
        return http_get(self.base + name, limit=MAX_METADATA_BYTES)

    def _save(self, name: str, data: bytes) -> None:
        (self.tuf_dir / name).write_bytes(data)

    def build(self, trusted_root_version: int, *, trusted_consistent: bool) -> None:
        """Fetch the root chain, then timestamp, snapshot, targets and delegated roles.

        Args:
            trusted_root_version: The device's root version; the chain starts above it.
            trusted_consistent: The trusted root's ``consistent_snapshot`` (used when the
                repository has no newer root).
        """
        consistent = self._roots(trusted_root_version, trusted_consistent)
        timestamp = self._get("timestamp.json")
        if timestamp is None:
            return
        self._save("timestamp.json", timestamp)
        snapshot_version = _meta_version(_signed(timestamp), "snapshot.json")
        if snapshot_version is None:
            return
        snapshot = self._get(f"{snapshot_version}.snapshot.json" if consistent else "snapshot.json")
        if snapshot is None:
            return
        self._save("snapshot.json", snapshot)
        snapshot_signed = _signed(snapshot)
        meta = snapshot_signed.get("meta") if snapshot_signed is not None else None
        if not isinstance(meta, dict):
            return
        # Top-level targets first, then the delegated roles in the snapshot's order.
        for name in sorted(meta, key=lambda name: name != "targets.json"):
            role = name.removesuffix(".json")
            if role == name or role in ("root", "timestamp", "snapshot"):
                continue
            if role.endswith(".root") and VERSIONED.fullmatch(role):
                continue  # its file would shadow a root of the chain
            version = _meta_version(snapshot_signed, name)
            if version is None:
                continue
            quoted = parse.quote(role, "")
            data = self._get(f"{version}.{quoted}.json" if consistent else f"{quoted}.json")
            if data is not None:
                self._save(role_filename(role), data)

    def _roots(self, trusted_version: int, consistent: bool) -> bool:
        """Fetch ``N.root.json`` upward until a 404; the newest root's consistent_snapshot."""
        for version in range(trusted_version + 1, trusted_version + 1 + MAX_ROOT_CHAIN):
            raw = self._get(f"{version}.root.json")
            if raw is None:
                break
            self._save(f"{version}.root.json", raw)
            signed = _signed(raw)
            if signed is not None:
                consistent = signed.get("consistent_snapshot") is True
        return consistent


def root_info(metadata_dir: Path) -> tuple[int, bool]:
    """Version and consistent_snapshot of the trusted root in ``metadata_dir`` (unverified).

    Raises:
        AdapterError: It cannot be read or has no integer version.
    """
    try:
        raw = (metadata_dir / "root.json").read_bytes()
    except OSError as e:
        raise AdapterError(f"{metadata_dir}/root.json: {e}") from e
    signed = _signed(raw)
    version = signed.get("version") if signed is not None else None
    if signed is None or not isinstance(version, int) or isinstance(version, bool):
        raise AdapterError(f"{metadata_dir}/root.json: no version")
    return version, signed.get("consistent_snapshot") is True


# --------------------------------------------------------------------------- verifiers


class Verifier(Protocol):
    """One verifier back-end, for one client invocation."""

    def load_trusted_root(self) -> None:
        """Load and check the trusted root (no network): raises when it is unusable."""
        ...

    def verify(self) -> None:
        """Run the client workflow on the bundle; raises on failure."""
        ...

    def find_target(self, path: str) -> TargetInfo | None:
        """The verified target ``path``, or None when the metadata does not list it."""
        ...


def target_info(path: str, found: Any) -> TargetInfo | None:
    """Read length and hashes from whatever target object a verifier returns."""
    if found is None:
        return None
    return TargetInfo(path=path, length=int(found.length), hashes=dict(found.hashes))


# --------------------------------------------------------------------------- targets


def content_problem(data: bytes, target: TargetInfo) -> str | None:
    """Why ``data`` is not ``target`` (length, a hash, an unknown algorithm), or None."""
    if len(data) != target.length:
        return f"{len(data)} bytes, the metadata says {target.length}"
    if not target.hashes:
        return "the metadata lists no hash"
    for algorithm, expected in target.hashes.items():
        try:
            digest = hashlib.new(algorithm, data).hexdigest()
        except (ValueError, TypeError):
            return f"hash algorithm {algorithm!r} is not supported"
        if digest != expected.lower():
            return f"{algorithm} differs from the metadata"
    return None


def download_target(
    target: TargetInfo, *, base_url: str, target_dir: Path, consistent: bool
) -> None:
    """Store the verified target in ``target_dir``, downloading it unless cached.

    Raises:
        AdapterError: Not found, wrong length or hash, or a download failure.
    """
    dest = target_dir / parse.quote(target.path, "")
    if dest.is_file() and content_problem(dest.read_bytes(), target) is None:
        log.info("%s: cached copy matches, not downloading", target.path)
        return
    relative = target.path
    if consistent and target.hashes:
        directory, sep, basename = target.path.rpartition("/")
        relative = f"{directory}{sep}{next(iter(target.hashes.values()))}.{basename}"
    data = http_get(_with_slash(base_url) + relative, limit=target.length)
    if data is None:
        raise AdapterError(f"{target.path}: not found at {base_url}")
    if problem := content_problem(data, target):
        raise AdapterError(f"{target.path}: {problem}")
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(dest)
