"""Writing an offline bundle in fioctl's layout.

```
<dst>/tuf/          N.root.json..., timestamp.json, snapshot.json, targets.json, bundle-targets.json
<dst>/ostree_repo/  an archive-mode OSTree repo holding each target's commit
<dst>/apps/         apps/<app>/<digest-hex>/uri (+ the app's files) and blobs/sha256/<hex>
```
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from aklite_bundle.signing import (
    Keyring,
    bundle_targets_signed,
    expires_in,
    publish_top_level,
    sign_document,
)

log = structlog.get_logger(__name__)


class BuildError(RuntimeError):
    """A bundle could not be written (bad input or a failing ostree command)."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """What ``targets.json`` says about one LmP target.

    Attributes:
        name: Target name, usually ``<hwid>-lmp-<version>``.
        version: ``custom.version`` (written as a string, as the backend does).
        hardware_id: The single ``custom.hardwareIds`` entry.
        ostree_commit: sha256 of the OSTree commit (``hashes.sha256``).
        tags: ``custom.tags``.
        apps: ``{app: uri}`` for ``custom.docker_compose_apps``.
        custom: Extra ``custom`` fields (override the generated ones).
    """

    name: str
    version: int | str
    hardware_id: str
    ostree_commit: str
    tags: tuple[str, ...] = ()
    apps: Mapping[str, str] = field(default_factory=dict)
    custom: Mapping[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        """The ``targets.json`` entry for this target."""
        custom: dict[str, Any] = {
            "targetFormat": "OSTREE",
            "version": str(self.version),
            "hardwareIds": [self.hardware_id],
            "tags": list(self.tags),
            "name": self.name.rsplit("-", 1)[0],
            "docker_compose_apps": {app: {"uri": uri} for app, uri in self.apps.items()},
        }
        custom.update(self.custom)
        return {"custom": custom, "hashes": {"sha256": self.ostree_commit}, "length": 0}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TargetSpec:
        """Read ``{"name", "version", "hwid", "ostree_commit", "tags", "apps", "custom"}``.

        Raises:
            BuildError: A required field is missing or has the wrong type.
        """
        try:
            return cls(
                name=str(obj["name"]),
                version=obj["version"],
                hardware_id=str(obj["hwid"]),
                ostree_commit=str(obj["ostree_commit"]),
                tags=tuple(str(t) for t in obj.get("tags", ())),
                apps={str(k): str(v) for k, v in dict(obj.get("apps", {})).items()},
                custom=dict(obj.get("custom", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BuildError(f"target description lacks or mistypes {e}") from e


@dataclass(frozen=True, slots=True)
class BundleOptions:
    """Metadata choices for :func:`write_tuf`."""

    bundle_type: str = "ci"
    tag: str = ""
    metadata_version: int = 1
    expires: str = field(default_factory=lambda: expires_in(30))
    bundle_names: Sequence[str] | None = None  # default: every target
    roots_from: int | None = None  # first N.root.json to include (default: all recorded)


def write_tuf(
    dst: Path, ring: Keyring, targets: Sequence[TargetSpec], options: BundleOptions
) -> Path:
    """Sign and write ``<dst>/tuf``; returns that directory."""
    tuf_dir = dst / "tuf"
    tuf_dir.mkdir(parents=True, exist_ok=True)
    first = ring.first_root_version()
    start = options.roots_from if options.roots_from is not None else first
    for offset, raw in enumerate(ring.roots):
        version = first + offset
        if version >= start:
            (tuf_dir / f"{version}.root.json").write_bytes(raw)
    top = publish_top_level(
        ring,
        {t.name: t.entry() for t in targets},
        version=options.metadata_version,
        expires=options.expires,
    )
    (tuf_dir / "timestamp.json").write_bytes(top.timestamp)
    (tuf_dir / "snapshot.json").write_bytes(top.snapshot)
    (tuf_dir / "targets.json").write_bytes(top.targets)
    names = options.bundle_names if options.bundle_names is not None else [t.name for t in targets]
    bundle_meta = bundle_targets_signed(
        names=names,
        bundle_type=options.bundle_type,
        tag=options.tag,
        version=options.metadata_version,
        expires=options.expires,
    )
    (tuf_dir / "bundle-targets.json").write_bytes(sign_document(bundle_meta, ring.roles["targets"]))
    return tuf_dir


async def _run(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip().splitlines()
        raise BuildError(f"{' '.join(args[:3])} failed: {message[-1] if message else 'no output'}")


async def copy_ostree_commits(dst: Path, source_repo: Path, commits: Sequence[str]) -> Path:
    """``ostree init --mode=archive`` + ``pull-local`` each commit into ``<dst>/ostree_repo``."""
    repo = dst / "ostree_repo"
    if not await asyncio.to_thread((repo / "config").exists):
        await _run("ostree", f"--repo={repo}", "init", "--mode=archive")
    for commit in commits:
        await _run("ostree", f"--repo={repo}", "pull-local", str(source_repo), commit)
        log.info("ostree commit copied into bundle", commit=commit, repo=str(repo))
    return repo


def app_digest(uri: str) -> str:
    """The manifest digest hex of an app URI (``...@sha256:<hex>``).

    Raises:
        BuildError: The URI has no ``@sha256:`` digest.
    """
    _, sep, digest = uri.rpartition("@sha256:")
    if not sep or not digest:
        raise BuildError(f"app URI {uri!r} has no @sha256: digest")
    return digest


def write_app_uris(dst: Path, apps: Mapping[str, str]) -> None:
    """Write ``<dst>/apps/apps/<app>/<hex>/uri`` for each app (the index aklite reads)."""
    for app, uri in apps.items():
        app_dir = dst / "apps" / "apps" / app / app_digest(uri)
        app_dir.mkdir(parents=True, exist_ok=True)
        (app_dir / "uri").write_text(uri)


def _copy_apps(dst: Path, app_store: Path, apps: Mapping[str, str]) -> None:
    for app, uri in apps.items():
        source = app_store / "apps" / app / app_digest(uri)
        if not (source / "uri").is_file():
            raise BuildError(f"app store {app_store} lacks {app} ({uri})")
        shutil.copytree(source, dst / "apps" / "apps" / app / source.name, dirs_exist_ok=True)
    blobs = app_store / "blobs"
    if blobs.is_dir():
        shutil.copytree(blobs, dst / "apps" / "blobs", dirs_exist_ok=True)


async def copy_apps(dst: Path, app_store: Path, apps: Mapping[str, str]) -> None:
    """Copy the apps' directories and the store's blobs into ``<dst>/apps``."""
    await asyncio.to_thread(_copy_apps, dst, app_store, apps)


async def create_bundle(
    dst: Path,
    *,
    ring: Keyring,
    targets: Sequence[TargetSpec],
    options: BundleOptions,
    ostree_repo: Path | None = None,
    app_store: Path | None = None,
) -> Path:
    """Write a whole bundle: signed ``tuf/``, OSTree commits and apps.

    Args:
        dst: Bundle directory (created).
        ring: Keys that sign the metadata.
        targets: Targets to list in ``targets.json``.
        options: Bundle type, tag, versions and expiry.
        ostree_repo: Repo to copy the targets' commits from (None: no ``ostree_repo``).
        app_store: composectl store to copy apps from (None: no apps).

    Returns:
        ``dst``.
    """
    await asyncio.to_thread(write_tuf, dst, ring, targets, options)
    if ostree_repo is not None:
        await copy_ostree_commits(dst, ostree_repo, [t.ostree_commit for t in targets])
    if app_store is not None:
        apps: dict[str, str] = {}
        for target in targets:
            apps.update(target.apps)
        await copy_apps(dst, app_store, apps)
    log.info("bundle written", path=str(dst), targets=[t.name for t in targets])
    return dst
