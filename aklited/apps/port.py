"""The engine's apps port over :class:`~aklited.apps.adapter.ComposeApps`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from aklited.apps.adapter import ComposeApps
from aklited.apps.model import App
from aklited.engine.ports import ByteProgress
from aklited.errors import AppsError

log = structlog.get_logger(__name__)

# A target's apps (name -> uri), as a key.
_Apps = tuple[tuple[str, str], ...]


class ComposeAppsPort:
    """AppsPort over :class:`~aklited.apps.adapter.ComposeApps`."""

    def __init__(self, apps: ComposeApps) -> None:
        self._apps = apps
        # The apps of the install under way, as read from its drive by stage_size(), for
        # copy() to use: reading them runs `docker compose config` once per app.
        self._read: tuple[Path, _Apps, tuple[App, ...]] | None = None
        # The apps copy() has just put in the device store (each blob hashed as it was
        # copied in, now or by an earlier copy), by (name, uri), for load() to stream
        # without hashing.
        self._copied: dict[tuple[str, str], App] = {}

    async def _read_quick(self, src_store: Path, apps: Mapping[str, str]) -> tuple[App, ...]:
        if self._read is not None and self._read[:2] == (src_store, _key(apps)):
            return self._read[2]
        verified = await self._apps.verify(src_store, apps, quick=True)
        self._read = (src_store, _key(apps), verified)
        return verified

    async def stage_size(self, src_store: Path, apps: Mapping[str, str]) -> int:
        # Only weighs the progress: whatever is wrong with the apps, copy() finds and says
        # it with the whole verification behind it.
        # An install that failed before its copy or load left its read here.
        self._read = None
        self._copied = {}
        try:
            return _blob_bytes(await self._read_quick(src_store, apps))
        except AppsError as e:
            log.info("app sizes unknown before staging", error=str(e))
            return 0

    async def copy(
        self,
        src_store: Path,
        apps: Mapping[str, str],
        *,
        progress: ByteProgress | None = None,
        on_copied: Callable[[str], None] | None = None,
    ) -> None:
        # Each byte off the drive is read and hashed once: the metadata here, every large
        # blob as fetch() copies it (a blob becomes usable in the store only once it matched).
        self._copied = {}
        try:
            verified = await self._read_quick(src_store, apps)
        finally:
            self._read = None  # the next install reads its own drive afresh
        total = _blob_bytes(verified)

        def copied(done: int, needed: int, message: str) -> None:
            # Blobs already in the device store count as done from the start.
            if progress is not None:
                progress(total - needed + done, total, message)

        def app_copied(app: App) -> None:
            self._copied[(app.name, app.uri)] = app
            if on_copied is not None:
                on_copied(app.name)

        await self._apps.fetch(src_store, verified, progress=copied, on_app_copied=app_copied)

    async def load(self, apps: Mapping[str, str], *, progress: ByteProgress | None = None) -> None:
        just_copied = [self._copied.pop(item, None) for item in apps.items()]
        if all(app is not None for app in just_copied):
            # In the store as copy() checked them a moment ago: streamed as they are.
            verified, rehash = tuple(app for app in just_copied if app is not None), False
        else:
            verified, rehash = await self._apps.verify_local(apps), True
        total = _blob_bytes(verified)
        names = ", ".join(app.name for app in verified)
        if progress is not None:
            progress(total, total, f"loading the images of {names}")
        await self._apps.load(verified, rehash=rehash)
        if progress is not None:
            progress(total, total, f"loaded the images of {names}")

    async def ready(self) -> None:
        version = await self._apps.engine_ready()
        log.debug("Docker engine answers", version=version)

    async def verify_content(self, src_store: Path, apps: Mapping[str, str]) -> tuple[int, int]:
        verified = await self._apps.verify(src_store, apps)
        return len(verified), sum(len(app.blobs()) for app in verified)

    async def start(self, apps: Mapping[str, str]) -> None:
        verified = await self._apps.verify_local(apps)
        # Images may be gone (a dockerd with a fresh data root): loading skips present ones.
        await self._apps.load(verified)
        await self._apps.install(verified)
        await self._apps.start(verified)

    async def in_place(self, apps: Mapping[str, str]) -> bool:
        # An app the target no longer lists still installed: the target is not in place
        # until an install retires it.
        if set(await self._apps.installed()) - set(apps):
            return False
        if not apps:
            return True
        try:
            verified = await self._apps.verify_local(apps, quick=True)
        except AppsError:  # absent or damaged: not in place, install again
            return False
        statuses = await self._apps.check_running(verified)
        return all(status.running for status in statuses.values())

    async def retire(self, keep: Mapping[str, str]) -> None:
        dropped = [name for name in await self._apps.installed() if name not in keep]
        if dropped:
            await self._apps.remove(dropped)
        verified = await self._apps.verify_local(keep, quick=True) if keep else ()
        await self._apps.prune(verified)

    async def states(self, apps: Mapping[str, str]) -> dict[str, str]:
        try:
            verified = await self._apps.verify_local(apps, quick=True)
        except AppsError as e:  # reported as the app's state
            return dict.fromkeys(apps, f"not installed ({e})")
        statuses = await self._apps.check_running(verified)
        return {
            name: "running" if status.running else "not running"
            for name, status in statuses.items()
        }


def _key(apps: Mapping[str, str]) -> _Apps:
    return tuple(sorted(apps.items()))


def _blob_bytes(apps: Sequence[App]) -> int:
    unique = {blob.hex: blob.size for app in apps for blob in app.blobs()}
    return sum(unique.values())
