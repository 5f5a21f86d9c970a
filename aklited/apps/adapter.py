"""The Compose Apps adapter the engine drives: verify, fetch, load, install, start, check, stop,
remove, prune.

It is built from explicit keyword options (no configuration import) and owns one aiodocker client.
The engine never sees aiodocker: it calls these verbs and gets :class:`App` descriptions,
:class:`AppStatus` values and :class:`AppsError` failures with a StatusCode.

This is the seam where foreign exceptions stop: whatever aiodocker, aiohttp, the file system or
the drive reader raised that the parts below did not already turn into an :class:`AppsError`
leaf becomes the one each verb names (see :func:`_seam`), once, ``from`` the original.
Cancellation is never caught.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, TypeVar

import aiodocker
import aiohttp
import structlog

from aklited.apps.blobs import drive_refusal, io_failure
from aklited.apps.compose import AppStatus, ComposeProjects
from aklited.apps.composecli import DEFAULT_COMPOSE_BIN, ComposeCli
from aklited.apps.loader import ImageLoader
from aklited.apps.localstore import SPACE_RESERVE, CopyProgress, LocalStore
from aklited.apps.model import App
from aklited.apps.platforms import Platform
from aklited.apps.store import StoreReader
from aklited.drivefs import DriveEntryError
from aklited.errors import AppsCopyError, AppsEngineMissingError, AppsError, AppsRunError

log = structlog.get_logger(__name__)

DEFAULT_STORE_ROOT = Path("/var/sota/reset-apps")
DEFAULT_COMPOSE_ROOT = Path("/var/sota/compose-apps")
ENGINE_PROBE_S = 10.0  # how long the engine may take to say its version

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _seam(
    error: type[AppsError], doing: str
) -> Callable[[Callable[_P, Awaitable[_T]]], Callable[_P, Awaitable[_T]]]:
    """Make a verb raise ``error`` (60 for a full device) for what a foreign library raised.

    TimeoutError is an OSError. An :class:`AppsError` and cancellation pass untouched.
    """

    def decorate(verb: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
        @functools.wraps(verb)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            try:
                return await verb(*args, **kwargs)
            except aiodocker.DockerError as e:
                raise error(f"{doing}: Docker engine error {e.status}: {e.message}") from e
            except aiohttp.ClientError as e:
                raise error(f"{doing}: Docker connection failed: {e}") from e
            except DriveEntryError as e:
                raise drive_refusal(e, doing) from e
            except OSError as e:
                raise io_failure(doing, e, error=error) from e

        return wrapper

    return decorate


class ComposeApps:
    """Compose Apps on one device: its local app store, compose root and Docker engine."""

    def __init__(
        self,
        *,
        store_root: Path = DEFAULT_STORE_ROOT,
        compose_root: Path = DEFAULT_COMPOSE_ROOT,
        docker_host: str | None = None,
        compose_bin: Path = DEFAULT_COMPOSE_BIN,
        platform: Platform | None = None,
        settle_s: float = 2.0,
        start_timeout_s: float = 120.0,
        work_dir: Path | None = None,
        space_reserve: int = SPACE_RESERVE,
    ) -> None:
        """Describe the device's apps setup; nothing is touched until a verb is called.

        Args:
            store_root: the device's app store (``pacman.reset_apps_root``).
            compose_root: where projects are installed (``pacman.compose_apps_root``).
            docker_host: the engine's address (``unix:///...``); None: the default socket.
            compose_bin: the ``docker`` CLI that has the compose v2 plugin, or a compose v2
                binary itself (see :class:`~aklited.apps.composecli.ComposeCli`).
            platform: the device platform images are chosen for (default: this machine's).
            settle_s: how long every service must stay up after ``up`` to count as started.
            start_timeout_s: how long services may take to come up.
            work_dir: where bundles are unpacked for reading (default: the system temp dir).
            space_reserve: bytes that must stay free in the store's filesystem after a fetch.
        """
        self.store_root = store_root
        self.compose_root = compose_root
        self.docker_host = docker_host
        self.platform = platform or Platform.host()
        self._compose = ComposeCli(bin=compose_bin, docker_host=docker_host)
        self._settle_s = settle_s
        self._start_timeout_s = start_timeout_s
        self._work_dir = work_dir
        self._local = LocalStore(store_root, space_reserve=space_reserve)
        self._docker: aiodocker.Docker | None = None
        self._loader: ImageLoader | None = None
        self._projects: ComposeProjects | None = None

    async def __aenter__(self) -> ComposeApps:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the engine connection (if one was opened)."""
        if self._docker is not None:
            await self._docker.close()
        self._docker = self._loader = self._projects = None

    # -- verify and fetch: no engine needed --------------------------------------------------

    def reader(self, store_root: Path, *, quick: bool = False) -> StoreReader:
        """A verifier for any store (a bundle's ``apps/`` or the local one) on this device."""
        return StoreReader(
            store_root,
            platform=self.platform,
            compose=self._compose,
            work_dir=self._work_dir,
            quick=quick,
        )

    @_seam(AppsCopyError, "verifying apps")
    async def verify(
        self,
        source_root: Path,
        target_apps: Mapping[str, str],
        *,
        shortlist: tuple[str, ...] | None = None,
        quick: bool = False,
    ) -> tuple[App, ...]:
        """Verify a target's apps (``name -> uri``) in a store, e.g. a bundle's ``apps/``.

        Args:
            source_root: the store root.
            target_apps: the target's ``docker_compose_apps`` as name -> uri.
            shortlist: ``pacman.compose_apps``; None means every app of the target.
            quick: hash the metadata blobs (manifests, indexes) and check the large ones
                (configs, layers, compose bundles) by size only: for a :meth:`fetch` that
                hashes every byte it copies before the blob may be used.

        Raises:
            AppsError: 8 if an app or blob is missing, 70 if any content fails verification.
        """
        reader = self.reader(source_root, quick=quick)
        return await reader.read_apps(target_apps, shortlist=shortlist)

    @_seam(AppsCopyError, "verifying the device's apps")
    async def verify_local(
        self,
        target_apps: Mapping[str, str],
        *,
        shortlist: tuple[str, ...] | None = None,
        quick: bool = False,
    ) -> tuple[App, ...]:
        """Verify the target's apps in the device's own store (boot-time finalize, rollback).

        Args:
            target_apps: the target's ``docker_compose_apps`` as name -> uri.
            shortlist: ``pacman.compose_apps``; None means every app of the target.
            quick: check large blobs by size only (they were hashed when fetched, and a load
                hashes them again as it streams them).
        """
        reader = self.reader(self.store_root, quick=quick)
        return await reader.read_apps(target_apps, shortlist=shortlist)

    @_seam(AppsCopyError, "copying apps to the device")
    async def fetch(
        self,
        source_root: Path,
        apps: Sequence[App],
        *,
        progress: CopyProgress | None = None,
        on_app_copied: Callable[[App], None] | None = None,
    ) -> None:
        """Copy verified apps into the local store, verifying every blob again while copying.

        ``progress`` is called after each blob with (bytes copied, bytes to copy, message),
        ``on_app_copied`` with each app once all its blobs are in the store.

        Raises:
            AppsError: 60 if they do not fit (nothing copied), 70 if a blob changed, 50 on I/O.
        """
        plan = await self._local.copy_in(
            source_root, apps, progress=progress, on_app_copied=on_app_copied
        )
        log.info("apps fetched", apps=[a.name for a in apps], bytes=plan.bytes_needed)

    # -- engine verbs ------------------------------------------------------------------------

    @_seam(AppsRunError, "loading app images")
    async def load(self, apps: Sequence[App], *, rehash: bool = True) -> None:
        """Load the apps' images from the local store into Docker (present ones are skipped).

        ``rehash=False`` when the blobs were hashed as :meth:`fetch` copied them a moment
        before: they are streamed as they are (sizes still checked; Docker checks the layers
        against each image's config).

        Raises:
            AppsError: 80 if the engine refuses an image; a failed app leaves no image behind.
        """
        loader = self._get_loader()
        for app in apps:
            await loader.load(app.images, what=f"app {app.name}", rehash=rehash)

    @_seam(AppsRunError, "installing apps")
    async def install(self, apps: Sequence[App]) -> None:
        """Install the apps' compose projects from the local store."""
        projects = self._get_projects()
        for app in apps:
            await projects.install(app)

    @_seam(AppsRunError, "starting apps")
    async def start(self, apps: Sequence[App]) -> None:
        """``compose up`` each app and wait until all its services run and stay up.

        A failed app is taken down and its images removed; the error carries its services'
        states and the tail of their logs.

        Raises:
            AppsError: 80 naming the first app that failed.
        """
        for app in apps:
            try:
                await self._start_one(app)
            except AppsError as e:
                await self._take_down(app, apps, e)
                raise

    async def _take_down(self, app: App, apps: Sequence[App], failure: AppsError) -> None:
        """Take a failed app down and remove the images only it used.

        The failing service's logs are the rollback's reason: a clean-up that fails too is
        noted on them, never put in their place.
        """
        others = {i.config.hex for a in apps if a.name != app.name for i in a.images}
        unused = [i for i in app.images if i.config.hex not in others]
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (
                "taking the app down",
                functools.partial(self._get_projects().down, app.name, timeout_s=0),
            ),
            ("removing its images", functools.partial(self._get_loader().remove_images, unused)),
        ]
        for step, action in steps:
            try:
                await action()
            except Exception as e:
                log.warning(f"{step} failed", app=app.name, error=str(e))
                failure.add_note(f"{step} failed too: {e}")

    @_seam(AppsRunError, "checking apps")
    async def check_running(self, apps: Sequence[App]) -> dict[str, AppStatus]:
        """Each app's running status, matched by compose labels as composectl does."""
        projects = self._get_projects()
        return {app.name: await projects.status(app) for app in apps}

    @_seam(AppsRunError, "stopping apps")
    async def stop(self, names: Sequence[str]) -> None:
        """Stop apps' containers (kept, so a later start is quick)."""
        for name in names:
            await self._get_projects().stop(name)

    @_seam(AppsRunError, "removing apps")
    async def remove(self, names: Sequence[str]) -> None:
        """Take apps down and delete their project dirs (images stay until ``prune``)."""
        for name in names:
            await self._get_projects().uninstall(name)

    @_seam(AppsRunError, "listing installed apps")
    async def installed(self) -> tuple[str, ...]:
        """Names of the apps whose projects are installed (to find apps dropped by a target)."""
        return await self._get_projects().installed_projects()

    @_seam(AppsRunError, "pruning apps")
    async def prune(self, keep: Sequence[App]) -> None:
        """Remove images and store content that no app in ``keep`` (the target's apps) uses.

        Images are untagged tag by tag: an image still used by a container stays.
        """
        keep_versions = {(a.name, a.hex) for a in keep}
        keep_tags = {t for a in keep for i in a.images for t in i.tags}
        drop: dict[str, None] = {}
        for stored in await self._local.list_apps():
            if (stored.name, stored.hex) not in keep_versions:
                drop.update(dict.fromkeys(await self._local.image_tags(stored)))
        docker = self._get_docker()
        for tag in drop:
            if tag in keep_tags:
                continue
            try:
                await docker.images.delete(tag)
                log.info("image removed", tag=tag)
            except aiodocker.DockerError as e:
                if e.status != 404:
                    log.warning("image kept", tag=tag, reason=e.message)
        await self._local.prune(keep)

    async def engine_ready(self) -> str:
        """The Docker engine's version, once it answers.

        Raises:
            AppsEngineMissingError: no engine answers at :attr:`docker_host` (80).
        """
        where = self.docker_host or "the default socket"
        try:
            # An engine that accepts the connection and never answers must not hold up the
            # daemon's start or an install.
            async with asyncio.timeout(ENGINE_PROBE_S):
                version = await self._get_docker().version()
        except TimeoutError as e:
            raise AppsEngineMissingError(
                f"no Docker engine answers at {where} within {ENGINE_PROBE_S:g} s"
            ) from e
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, ValueError) as e:
            # ValueError: a docker_host aiodocker cannot use (no scheme, say).
            reason = e.message if isinstance(e, aiodocker.DockerError) else str(e)
            raise AppsEngineMissingError(f"no Docker engine answers at {where}: {reason}") from e
        return str(version.get("Version", "unknown"))

    # -- internals ---------------------------------------------------------------------------

    @_seam(AppsRunError, "starting apps")
    async def _start_one(self, app: App) -> None:
        await self._get_projects().up(app)
        await self._wait_running(app)

    async def _wait_running(self, app: App) -> None:
        projects = self._get_projects()
        deadline = time.monotonic() + self._start_timeout_s
        up_since: float | None = None
        while True:
            status = await projects.status(app)
            now = time.monotonic()
            if status.failed:
                raise AppsRunError(await self._failure_message(app, status))
            if status.running:
                up_since = up_since if up_since is not None else now
                if now - up_since >= self._settle_s:
                    return
            else:
                up_since = None
            if now > deadline:
                raise AppsRunError(await self._failure_message(app, status, timed_out=True))
            await asyncio.sleep(0.2)

    async def _failure_message(
        self, app: App, status: AppStatus, *, timed_out: bool = False
    ) -> str:
        parts = []
        for service in status.services:
            if service.ok and not timed_out:
                continue
            if service.container is None:
                parts.append(f"service {service.service} has no container")
                continue
            state = (
                service.state
                if service.exit_code in (None, 0)
                else (f"{service.state} with status {service.exit_code}")
            )
            logs = await self._get_projects().logs_tail(service.container)
            parts.append(f"service {service.service} {state}; log: {logs or '(empty)'}")
        reason = "; ".join(parts) or "services did not stay up"
        prefix = "did not start in time" if timed_out else "failed to start"
        return f"app {app.name} {prefix}: {reason}"

    def _get_docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.docker_host)
        return self._docker

    def _get_loader(self) -> ImageLoader:
        if self._loader is None:
            self._loader = ImageLoader(self._get_docker(), store_root=self.store_root)
        return self._loader

    def _get_projects(self) -> ComposeProjects:
        if self._projects is None:
            self._projects = ComposeProjects(
                compose_root=self.compose_root,
                compose=self._compose,
                docker=self._get_docker(),
                store_root=self.store_root,
            )
        return self._projects
