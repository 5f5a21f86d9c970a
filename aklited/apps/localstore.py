"""The device's own app store (``reset_apps_root``): copy verified apps in, prune what is unused.

Same layout as a bundle's store (``apps/<app>/<hex>/uri`` + ``blobs/sha256/<hex>``), so the
device can verify, load and start apps after the drive is gone, and a rollback finds its apps.
A blob is written under a temp name, fsynced and renamed; an app's ``uri`` is written last, so
an app dir only exists once all of its blobs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from aklited.apps import blobs as blobstore
from aklited.apps.blobs import Blob
from aklited.apps.model import App
from aklited.apps.store import app_dir
from aklited.errors import AppsCopyError, AppsNoSpaceError
from aklited.host.files import atomic_write

# Called with (bytes copied, bytes to copy, what was copied) after each blob.
CopyProgress = Callable[[int, int, str], None]

log = structlog.get_logger(__name__)

# Keep this much free after the copy: a full /var starves the journal and dockerd.
SPACE_RESERVE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """Blobs a copy must write, and how many bytes they take."""

    missing: tuple[Blob, ...]
    bytes_needed: int


@dataclass(frozen=True, slots=True)
class StoredApp:
    """An app version present in a store: ``apps/<name>/<hex>``."""

    name: str
    hex: str


def _descriptor(blob: Blob) -> dict[str, object]:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


class LocalStore:
    """The device-side app store."""

    def __init__(self, root: Path, *, space_reserve: int = SPACE_RESERVE) -> None:
        self.root = root
        self._space_reserve = space_reserve

    def has_blob(self, blob: Blob) -> bool:
        """True if a blob of the right size is present (its digest was checked when copied)."""
        try:
            return blobstore.blob_path(self.root, blob.hex).stat().st_size == blob.size
        except FileNotFoundError:
            return False

    async def plan(self, apps: Sequence[App]) -> CopyPlan:
        """Work out which blobs of ``apps`` the store lacks."""

        def scan() -> CopyPlan:
            wanted = {b.hex: b for app in apps for b in app.blobs()}
            missing = tuple(b for b in wanted.values() if not self.has_blob(b))
            return CopyPlan(missing=missing, bytes_needed=sum(b.size for b in missing))

        return await asyncio.to_thread(scan)

    async def copy_in(
        self,
        source_root: Path,
        apps: Sequence[App],
        *,
        progress: CopyProgress | None = None,
        on_app_copied: Callable[[App], None] | None = None,
    ) -> CopyPlan:
        """Copy ``apps`` from a verified source store, verifying every blob again as it is copied.

        App by app, in their order: ``on_app_copied`` is called with each app as soon as all
        of its blobs (and its directory) are in the store.

        Raises:
            AppsError: 60 before anything is copied if the missing blobs do not fit, 70 if a
                blob no longer matches (the drive changed since it was verified), 50 on a write
                error.
        """
        plan = await self.plan(apps)
        await asyncio.to_thread(blobstore.blobs_dir(self.root).mkdir, parents=True, exist_ok=True)
        free = (await asyncio.to_thread(shutil.disk_usage, self.root)).free
        if plan.bytes_needed + self._space_reserve > free:
            raise AppsNoSpaceError(
                f"app store {self.root}: {plan.bytes_needed} bytes of app blobs to copy, "
                f"{free} bytes free ({self._space_reserve} kept in reserve)"
            )
        log.info(
            "copying app blobs",
            store=str(self.root),
            blobs=len(plan.missing),
            bytes=plan.bytes_needed,
        )
        owner = {b.hex: app.name for app in apps for b in app.blobs()}
        missing = {b.hex for b in plan.missing}
        # What each app still lacks; the plan lists the blobs app by app.
        lacking = [(app, {b.hex for b in app.blobs()} & missing) for app in apps]

        async def settle() -> None:
            while lacking and not lacking[0][1]:
                app = lacking.pop(0)[0]
                await asyncio.to_thread(self._write_app_dir, app)
                if on_app_copied is not None:
                    on_app_copied(app)

        with blobstore.store_files(source_root) as source:
            copied = 0
            await settle()
            for blob in plan.missing:
                await asyncio.to_thread(
                    blobstore.copy_blob, source, self.root, blob, what=f"app {owner[blob.hex]}"
                )
                copied += blob.size
                if progress is not None:
                    progress(copied, plan.bytes_needed, f"copied app {owner[blob.hex]} blobs")
                for _, needs in lacking:
                    needs.discard(blob.hex)
                await settle()
        return plan

    def _write_app_dir(self, app: App) -> None:
        directory = app_dir(self.root, app.name, app.hex)
        # composectl's per-image index (images/<locator>/<root hex>/index.json): it records
        # which images an app version loaded, so a later prune can find their tags.
        for image in app.images:
            index = {"schemaVersion": 2, "manifests": [_descriptor(image.manifest)]}
            path = directory / "images" / image.locator / image.root.hex / "index.json"
            atomic_write(path, json.dumps(index).encode())
        atomic_write(directory / "uri", app.uri.encode())

    async def image_tags(self, stored: StoredApp) -> tuple[str, ...]:
        """The engine tags of the images an app version in the store loaded.

        Each image index gives the tag its directory names (the image root); the manifest tag
        comes from the index's content. An index that is gone, or damaged (not JSON, or no
        ``manifests[0].digest`` string), gives only the first tag; a damaged one is logged.

        Raises:
            AppsCopyError: 50 when an index exists but cannot be read (EACCES, EIO, ...).
        """

        def scan() -> tuple[str, ...]:
            images = app_dir(self.root, stored.name, stored.hex) / "images"
            tags: list[str] = []
            for index in sorted(images.glob("**/index.json")) if images.is_dir() else []:
                root_hex = index.parent.name
                locator = index.parent.parent.relative_to(images).as_posix()
                tags.append(f"{locator}:{root_hex[:7]}")
                manifest = self._manifest_digest(index)
                if manifest is not None:
                    tags.append(f"{locator}:{manifest.removeprefix('sha256:')[:7]}")
            return tuple(dict.fromkeys(tags))

        return await asyncio.to_thread(scan)

    def _manifest_digest(self, index: Path) -> str | None:
        """Blocking: the manifest digest an image index records, None if gone or damaged."""
        try:
            raw = index.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AppsCopyError(
                f"app store {self.root}: cannot read {index}: {e.strerror or e}"
            ) from e
        try:
            digest = json.loads(raw)["manifests"][0]["digest"]
        except (ValueError, LookupError, TypeError) as e:  # not JSON, or not an image index
            log.warning("damaged image index ignored", index=str(index), reason=repr(e))
            return None
        if not isinstance(digest, str):
            log.warning(
                "damaged image index ignored", index=str(index), reason=f"digest {digest!r}"
            )
            return None
        return digest

    async def list_apps(self) -> tuple[StoredApp, ...]:
        """Every app version in the store (dirs holding a ``uri`` file)."""

        def scan() -> tuple[StoredApp, ...]:
            found = []
            apps_dir = self.root / "apps"
            if not apps_dir.is_dir():
                return ()
            for uri in sorted(apps_dir.glob("*/*/uri")):
                found.append(StoredApp(name=uri.parent.parent.name, hex=uri.parent.name))
            return tuple(found)

        return await asyncio.to_thread(scan)

    async def prune(self, keep: Iterable[App]) -> tuple[int, int]:
        """Delete app dirs and blobs that no app in ``keep`` uses.

        Returns:
            (app versions removed, blobs removed).
        """
        keep = tuple(keep)
        keep_dirs = {(a.name, a.hex) for a in keep}
        keep_blobs = {b.hex for a in keep for b in a.blobs()}

        def sweep() -> tuple[int, int]:
            dirs = 0
            apps_dir = self.root / "apps"
            for uri in sorted(apps_dir.glob("*/*/uri")) if apps_dir.is_dir() else []:
                version = uri.parent
                if (version.parent.name, version.name) not in keep_dirs:
                    # The uri goes first: a half-deleted dir is then no longer an app.
                    uri.unlink()
                    shutil.rmtree(version, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        version.parent.rmdir()
                    dirs += 1
            count = 0
            directory = blobstore.blobs_dir(self.root)
            for path in directory.iterdir() if directory.is_dir() else []:
                if path.name not in keep_blobs and path.is_file():
                    path.unlink()
                    count += 1
            return dirs, count

        removed = await asyncio.to_thread(sweep)
        log.info("app store pruned", store=str(self.root), apps=removed[0], blobs=removed[1])
        return removed
