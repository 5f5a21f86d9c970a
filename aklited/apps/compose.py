"""Compose projects on the device: install from the verified bundle, up/stop/down, running status.

The verified ``docker-compose.yml`` is installed untouched. A vanilla engine cannot resolve the
pinned ``image: name@sha256:...`` references of a loaded (not pulled) image, so aklited adds an
override file that points each service at the image's local tag, and passes both files with
``-f``. Running status comes from the containers' compose labels, as composectl decides it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import structlog

from aklited.apps import blobs as blobstore
from aklited.apps.composecli import ComposeCli
from aklited.apps.model import App, Service
from aklited.apps.proc import Completed
from aklited.apps.store import CONFIG_HASH_LABEL
from aklited.apps.tarsafe import COMPOSE_FILE, extract_bundle
from aklited.errors import AppsRunError
from aklited.host.files import atomic_write, fsync_dir

log = structlog.get_logger(__name__)

OVERRIDE_FILE = "docker-compose.aklited.yml"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
LOG_TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service's container as the engine reports it."""

    service: str
    container: str | None  # container id; None when no container matches the installed version
    state: str  # engine state (running, exited, restarting, created, ...) or "missing"
    exit_code: int | None
    health: str | None

    @property
    def ok(self) -> bool:
        """Running (and not unhealthy), or finished with exit status 0 and no healthcheck."""
        if self.health is not None:
            return self.health == "healthy" or (
                self.state == "running" and self.health != "unhealthy"
            )
        return self.state == "running" or (self.state == "exited" and self.exit_code == 0)

    @property
    def failed(self) -> bool:
        """Definitely broken: exited non-zero, dead, crash-looping or unhealthy."""
        if self.health == "unhealthy" or self.state in ("dead", "removing"):
            return True
        return self.state in ("exited", "restarting") and self.exit_code not in (None, 0)


@dataclass(frozen=True, slots=True)
class AppStatus:
    """The running status of one app's services."""

    name: str
    services: tuple[ServiceStatus, ...]

    @property
    def running(self) -> bool:
        return bool(self.services) and all(s.ok for s in self.services)

    @property
    def failed(self) -> tuple[ServiceStatus, ...]:
        return tuple(s for s in self.services if s.failed)


class ComposeProjects:
    """Installs and drives compose projects under ``compose_root/<app>``."""

    def __init__(
        self,
        *,
        compose_root: Path,
        compose: ComposeCli,
        docker: aiodocker.Docker,
        store_root: Path,
        command_timeout_s: float = 300.0,
    ) -> None:
        self._root = compose_root
        self._compose = compose
        self._docker = docker
        self._store = store_root
        self._timeout = command_timeout_s

    def project_dir(self, name: str) -> Path:
        return self._root / name

    async def install(self, app: App) -> Path:
        """Install the app's project from its verified bundle, replacing any older version.

        The new tree is extracted next to the old one and swapped in by rename, so the project
        dir is always one whole version.

        Raises:
            AppsError: 70 if the bundle changed, is unsafe or is incomplete; 80 (60 when
                the device is full) if the project dir cannot be written.
        """

        def work() -> Path:
            self._root.mkdir(parents=True, exist_ok=True)
            tag = secrets.token_hex(4)
            fresh = self._root / f".{app.name}.new-{tag}"
            old = self._root / f".{app.name}.old-{tag}"
            final = self.project_dir(app.name)
            try:
                what = f"app {app.name} bundle"
                with blobstore.store_files(self._store) as store:
                    # The store may have changed since the app was verified: check it again.
                    blobstore.verify_blob_file(store, app.bundle, what=what)
                    with blobstore.open_blob(store, app.bundle.hex, what=what) as archive:
                        extract_bundle(archive, fresh, what=f"app {app.name} compose bundle")
                atomic_write(fresh / OVERRIDE_FILE, render_override(app))
                if final.exists():
                    final.rename(old)
                fresh.rename(final)
                fsync_dir(self._root)
            finally:
                shutil.rmtree(fresh, ignore_errors=True)
                shutil.rmtree(old, ignore_errors=True)
            return final

        try:
            path = await asyncio.to_thread(work)
        except OSError as e:
            raise blobstore.io_failure(
                f"app {app.name}: installing the project in {self._root} failed",
                e,
                error=AppsRunError,
            ) from e
        log.info("app installed", app=app.name, dir=str(path))
        return path

    async def up(self, app: App) -> None:
        """``docker compose up -d --remove-orphans`` in the app's dir.

        Raises:
            AppsError: 80 if compose fails.
        """
        done = await self._run(app.name, ["up", "-d", "--remove-orphans"])
        if done.returncode != 0:
            raise AppsRunError(
                f"app {app.name}: {self._compose.name} up failed: {done.last_error_line()}"
            )
        log.info("app started", app=app.name)

    async def stop(self, name: str, *, timeout_s: int = 10) -> None:
        """Stop the app's containers (kept for a later start)."""
        if not await self._installed(name):
            return
        done = await self._run(name, ["stop", "-t", str(timeout_s)])
        if done.returncode != 0:
            raise AppsRunError(
                f"app {name}: {self._compose.name} stop failed: {done.last_error_line()}"
            )

    async def down(self, name: str, *, timeout_s: int = 10) -> None:
        """Remove the app's containers and networks; the project dir stays."""
        if await self._installed(name):
            done = await self._run(name, ["down", "--remove-orphans", "-t", str(timeout_s)])
            if done.returncode != 0:
                log.warning("compose down failed", app=name, reason=done.last_error_line())
        # Containers of a project whose files are gone (or that compose missed).
        for container in await self._containers(name):
            try:
                await container.delete(force=True)
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise AppsRunError(
                        f"app {name}: container {container.id[:12]} not removed: {e.message}"
                    ) from e

    async def uninstall(self, name: str, *, timeout_s: int = 10) -> None:
        """``down`` the app and delete its project dir."""
        await self.down(name, timeout_s=timeout_s)
        await asyncio.to_thread(shutil.rmtree, self.project_dir(name), ignore_errors=True)
        log.info("app removed", app=name)

    async def installed_projects(self) -> tuple[str, ...]:
        """Names of the projects installed under the compose root."""

        def scan() -> tuple[str, ...]:
            if not self._root.is_dir():
                return ()
            return tuple(
                sorted(
                    p.name
                    for p in self._root.iterdir()
                    if not p.name.startswith(".") and (p / COMPOSE_FILE).is_file()
                )
            )

        return await asyncio.to_thread(scan)

    async def status(self, app: App) -> AppStatus:
        """Match the app's services to containers by compose labels and report their state."""
        containers = await self._containers(app.name)
        services = []
        for service in app.services:
            services.append(await self._service_status(app, service, containers))
        return AppStatus(name=app.name, services=tuple(services))

    async def logs_tail(self, container_id: str, *, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of a container's output, one string (for error messages)."""
        try:
            output = await self._docker.containers.container(container_id).log(
                stdout=True, stderr=True, tail=lines
            )
        except aiodocker.DockerError as e:
            return f"(no logs: {e.message})"
        return " | ".join(line.rstrip() for line in output if line.strip())

    async def _service_status(
        self, app: App, service: Service, containers: Sequence[aiodocker.docker.DockerContainer]
    ) -> ServiceStatus:
        local_tag = app.image_for(service).local_tag
        candidates = []
        for container in containers:
            labels: dict[str, str] = container["Labels"] or {}
            if labels.get(SERVICE_LABEL) != service.name:
                continue
            if (
                service.config_hash is not None
                and labels.get(CONFIG_HASH_LABEL) != service.config_hash
            ):
                continue
            if container["Image"] not in (local_tag, service.image):
                continue
            candidates.append(container)
        if not candidates:
            return ServiceStatus(service.name, None, "missing", None, None)
        # Newest first: after an update an old container of the same config may linger.
        candidates.sort(key=lambda c: int(c["Created"]), reverse=True)
        chosen = candidates[0]
        try:
            info: dict[str, Any] = await self._docker.containers.container(chosen.id).show()
        except aiodocker.DockerError as e:
            if e.status == 404:
                return ServiceStatus(service.name, None, "missing", None, None)
            raise AppsRunError(
                f"app {app.name}: container {chosen.id[:12]} cannot be inspected: {e.message}"
            ) from e
        state = info.get("State") or {}
        health = state.get("Health")
        return ServiceStatus(
            service=service.name,
            container=chosen.id,
            state=str(state.get("Status", "unknown")),
            exit_code=state.get("ExitCode"),
            health=str(health.get("Status")) if isinstance(health, dict) else None,
        )

    async def _containers(self, name: str) -> list[aiodocker.docker.DockerContainer]:
        try:
            return await self._docker.containers.list(
                all=True, filters=json.dumps({"label": [f"{PROJECT_LABEL}={name}"]})
            )
        except aiodocker.DockerError as e:
            raise AppsRunError(f"app {name}: cannot list containers: {e.message}") from e

    async def _installed(self, name: str) -> bool:
        return await asyncio.to_thread((self.project_dir(name) / COMPOSE_FILE).is_file)

    async def _run(self, name: str, args: Sequence[str]) -> Completed:
        project = self.project_dir(name)
        files = ["-f", COMPOSE_FILE]
        if await asyncio.to_thread((project / OVERRIDE_FILE).is_file):
            files += ["-f", OVERRIDE_FILE]
        try:
            return await self._compose.run(
                ["-p", name, *files, *args], cwd=project, timeout_s=self._timeout
            )
        except (OSError, TimeoutError) as e:
            raise AppsRunError(
                f"app {name}: {self._compose.name} {args[0]} did not complete: {e!r}"
            ) from e


def render_override(app: App) -> bytes:
    """The override file: each service's ``image`` set to the loaded image's local tag.

    ``pull_policy: never`` makes a missing image fail at once instead of trying a registry.
    JSON is valid YAML, so no YAML writer is needed.
    """
    services = {
        s.name: {"image": app.image_for(s).local_tag, "pull_policy": "never"} for s in app.services
    }
    return (json.dumps({"services": services}, indent=2) + "\n").encode()
