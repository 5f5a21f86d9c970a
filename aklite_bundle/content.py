"""Verify every byte of one target's content in a bundle, as an install would, writing nothing.

Serves ``aklite-bundle verify --content`` on a workstation, with the checks a device's
``aklite-offline check --deep`` makes through the engine's ports: the OSTree commit object
by object, then every app blob, manifest and archive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from aklited.engine.model import ContentReport
from aklited.rootfs.sysroot import verify_bundle_commit

if TYPE_CHECKING:
    from aklited.apps.adapter import ComposeApps


async def verify_target_content(
    bundle: Path,
    commit: str,
    apps: Mapping[str, str],
    *,
    apps_reader: Callable[[], ComposeApps],
    shortlist: tuple[str, ...] | None = None,
) -> ContentReport:
    """Verify ``commit`` in ``bundle/ostree_repo`` and ``apps`` (name -> URI) in
    ``bundle/apps``.

    Args:
        bundle: the bundle root; nothing outside it is read.
        commit: the target's OSTree commit.
        apps: the apps to verify (none: the rootfs only).
        apps_reader: makes the apps verifier (only called when there are apps, so a
            rootfs-only check never loads the Docker client libraries).
        shortlist: ``pacman.compose_apps``; None means every app.

    Raises:
        AkliteError: 8 content missing, 50 the drive cannot be read, 70 content unsafe or
            not matching, as an install would answer.
    """
    objects = await verify_bundle_commit(bundle / "ostree_repo", commit, boundary=bundle)
    if not apps:
        return ContentReport(objects=objects)
    verified = await apps_reader().verify(bundle / "apps", apps, shortlist=shortlist)
    blobs = sum(len(app.blobs()) for app in verified)
    return ContentReport(objects=objects, apps=len(verified), blobs=blobs)
