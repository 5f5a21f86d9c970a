"""Install, start, update, remove and prune Compose Apps on a real (isolated) Docker engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiodocker
import compose
import pytest
from structlog.testing import capture_logs

from aklited.apps.blobs import blob_path
from aklited.apps.compose import OVERRIDE_FILE
from aklited.apps.composecli import DEFAULT_COMPOSE_BIN
from aklited.apps.port import ComposeAppsPort
from aklited.apps.store import CONFIG_HASH_LABEL

from .conftest import AppsEnv, image_tags, project_containers

pytestmark = pytest.mark.docker


async def test_install_update_remove_prune(env: AppsEnv, docker: aiodocker.Docker) -> None:
    # v1: two apps whose images share the busybox layer; indexes name an absent arm64 manifest.
    web_v1 = env.image("web", marker="web-1")
    worker = env.image("worker", marker="worker-1")
    app1_v1 = env.app("app1", {"web": web_v1})
    app2 = env.app("app2", {"worker": worker, "helper": worker})
    assert web_v1.layers[0] == worker.layers[0]
    target_v1 = {"app1": app1_v1.uri, "app2": app2.uri}

    async with env.adapter() as apps:
        with capture_logs() as logs:
            verified = await apps.verify(env.bundle, target_v1)
            await apps.fetch(env.bundle, verified)
            # The drive goes away: everything below works from the device's store.
            unplugged = env.bundle.rename(env.root / "unplugged")
            local = await apps.verify_local(target_v1)
            assert local == verified
            await apps.load(local)
            await apps.install(local)
            await apps.start(local)
        status = await apps.check_running(local)
        assert status["app1"].running and status["app2"].running
        assert [s.service for s in status["app2"].services] == ["helper", "worker"]
        # The engine is vanilla: the digest-ref load was refused once, then tags were used.
        refused = [e for e in logs if e["event"].startswith("engine refused a digest-ref load")]
        assert len(refused) == 1

        tags = await image_tags(docker, env.factory)
        for image in (web_v1, worker):
            assert f"{image.locator}:{image.root.hex[:7]}" in tags
            assert f"{image.locator}:{image.manifest.hex[:7]}" in tags
            info = await docker.images.inspect(f"{image.locator}:{image.root.hex[:7]}")
            assert info["Id"] == image.config.digest

        containers = await project_containers(docker, "app1")
        assert len(containers) == 1
        labels = containers[0]["Labels"]
        assert isinstance(labels, dict)
        assert labels["com.docker.compose.service"] == "web"
        assert labels[CONFIG_HASH_LABEL] == local[0].services[0].config_hash
        # The verified compose file is installed byte for byte; the override adds the tags.
        project = env.compose_root / "app1"
        assert (project / "docker-compose.yml").read_bytes() == app1_v1.compose_yaml
        assert web_v1.root.hex[:7] in (project / OVERRIDE_FILE).read_text()

        unplugged.rename(env.bundle)
        # v2: app1 updated (same base layer, new top layer), app2 dropped from the target.
        web_v2 = env.image("web", marker="web-2")
        app1_v2 = env.app("app1", {"web": web_v2})
        target_v2 = {"app1": app1_v2.uri}
        verified2 = await apps.verify(env.bundle, target_v2)
        await apps.fetch(env.bundle, verified2)
        await apps.load(verified2)
        await apps.install(verified2)
        await apps.start(verified2)
        dropped = sorted(set(await apps.installed()) - set(target_v2))
        assert dropped == ["app2"]
        await apps.remove(dropped)
        await apps.prune(verified2)

        status = await apps.check_running(verified2)
        assert status["app1"].running
        container = status["app1"].services[0].container
        assert container is not None
        exec_out = env.dockerd.cli("exec", container, "cat", "/etc/version").stdout
        assert exec_out == "web-2"
        assert await project_containers(docker, "app2") == []
        assert len(await project_containers(docker, "app1")) == 1
        assert not (env.compose_root / "app2").exists()

        tags = await image_tags(docker, env.factory)
        assert tags == {
            f"{web_v2.locator}:{web_v2.root.hex[:7]}",
            f"{web_v2.locator}:{web_v2.manifest.hex[:7]}",
        }
        # The store keeps exactly app1 v2.
        app_dirs = sorted(p.relative_to(env.store).as_posix() for p in env.store.glob("apps/*/*"))
        assert app_dirs == [f"apps/app1/{app1_v2.manifest.hex}"]
        kept = {b.hex for b in verified2[0].blobs()}
        stored = {p.name for p in (env.store / "blobs" / "sha256").iterdir()}
        assert stored == kept

        await apps.stop(["app1"])
        status = await apps.check_running(verified2)
        assert not status["app1"].running
        assert status["app1"].services[0].state == "exited"


async def test_shortlist_and_present_images(env: AppsEnv, docker: aiodocker.Docker) -> None:
    image = env.image("busybox")
    app1 = env.app("app1", {"a": image})
    app2 = env.app("app2", {"b": image})
    target = {"app1": app1.uri, "app2": app2.uri}
    async with env.adapter() as apps:
        verified = await apps.verify(env.bundle, target, shortlist=("app2", "not-in-target"))
        assert [a.name for a in verified] == ["app2"]
        await apps.fetch(env.bundle, verified)
        assert not (env.store / "apps" / "app1").exists()
        assert not blob_path(env.store, app1.manifest.hex).exists()
        await apps.load(verified)
        # A second load finds the image by id and sends nothing.
        await docker.images.delete(f"{image.locator}:{image.root.hex[:7]}")
        with capture_logs() as logs:
            await apps.load(verified)
        assert not [e for e in logs if e["event"] == "image loaded"]
        info = await docker.images.inspect(f"{image.locator}:{image.root.hex[:7]}")
        assert info["Id"] == image.config.digest


async def test_image_root_without_index_loads_with_one_tag(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    image = env.image("plain", index_platforms=())
    assert image.root == image.manifest
    app = env.app("app1", {"a": image})
    async with env.adapter() as apps:
        verified = await apps.verify(env.bundle, {"app1": app.uri})
        await apps.fetch(env.bundle, verified)
        await apps.load(verified)
        await apps.install(verified)
        await apps.start(verified)
        assert (await apps.check_running(verified))["app1"].running
    assert await image_tags(docker, env.factory) == {f"{image.locator}:{image.root.hex[:7]}"}


async def test_an_install_reads_the_drives_apps_once(
    env: AppsEnv, docker: aiodocker.Docker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading an app runs `docker compose config`: the size for the progress and the stage
    # share one read of the drive.
    app = env.app("web", {"web": env.image("web")})
    target = {app.name: app.uri}
    async with env.adapter() as apps:
        reads: list[bool] = []
        verify = apps.verify

        async def counted(*args: Any, **kwargs: Any) -> Any:
            reads.append(kwargs.get("quick", False))
            return await verify(*args, **kwargs)

        monkeypatch.setattr(apps, "verify", counted)
        port = ComposeAppsPort(apps)
        size = await port.stage_size(env.bundle, target)
        await port.copy(env.bundle, target)
        await port.load(target)
        assert reads == [True]
        assert size == sum(
            {b.hex: b.size for b in (await apps.verify_local(target))[0].blobs()}.values()
        )
        # The next install reads its drive afresh.
        await port.copy(env.bundle, target)
        assert reads == [True, True]
    assert await image_tags(docker, env.factory) != set()


async def test_apps_load_side_by_side_as_each_is_copied(
    env: AppsEnv, docker: aiodocker.Docker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An install loads each app once it is in the store, beside the others: two images that
    # share the busybox layer load at once, neither hashed again after the copy.
    web, worker = env.image("web", marker="web-2"), env.image("worker", marker="worker-2")
    assert web.layers[0] == worker.layers[0]
    app1, app2 = env.app("app1", {"web": web}), env.app("app2", {"worker": worker})
    target = {app1.name: app1.uri, app2.name: app2.uri}
    async with env.adapter() as apps:
        rehashed: list[bool] = []
        load = apps.load

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            rehashed.append(kwargs.get("rehash", True))
            return await load(*args, **kwargs)

        monkeypatch.setattr(apps, "load", recorded)
        port = ComposeAppsPort(apps)
        told: list[str] = []
        await port.copy(env.bundle, target, on_copied=told.append)
        assert told == ["app1", "app2"]

        await asyncio.gather(*(port.load({name: uri}) for name, uri in target.items()))

        assert rehashed == [False, False]
        await port.load({app1.name: app1.uri})  # no longer just copied: hashed as it loads
        assert rehashed == [False, False, True]
    tags = await image_tags(docker, env.factory)
    for image in (web, worker):
        assert f"{image.locator}:{image.root.hex[:7]}" in tags
        info = await docker.images.inspect(f"{image.locator}:{image.root.hex[:7]}")
        assert info["Id"] == image.config.digest


async def test_two_apps_with_one_image_load_it_side_by_side(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    # The second load waits for the first to stream the image, then finds it present.
    shared = env.image("shared", marker="shared-1")
    app1, app2 = env.app("app1", {"web": shared}), env.app("app2", {"worker": shared})
    target = {app1.name: app1.uri, app2.name: app2.uri}
    async with env.adapter() as apps:
        port = ComposeAppsPort(apps)
        await port.copy(env.bundle, target)
        with capture_logs() as logs:
            await asyncio.gather(*(port.load({name: uri}) for name, uri in target.items()))
    loaded = [e for e in logs if e["event"] == "image loaded"]
    assert [e["image"] for e in loaded] == [shared.ref]  # streamed once
    info = await docker.images.inspect(f"{shared.locator}:{shared.root.hex[:7]}")
    assert info["Id"] == shared.config.digest


def compose_binary(kind: str, directory: Path) -> Path:
    """``pacman.docker_compose_bin`` set up the ``kind`` way, in ``directory``."""
    directory.mkdir()
    if kind == "standalone":
        # Naming compose itself, as /usr/bin/docker-compose does on devices set up for it:
        # run without the docker client in front.
        standalone = directory / "docker-compose"
        standalone.symlink_to(Path(compose.__file__).parent / "docker-compose")
        return standalone
    # A docker client that will not name its plugin: compose runs through it every time,
    # as it does wherever the lookup fails.
    client = directory / "docker"
    client.write_text(f'#!/bin/sh\n[ "$1" = info ] && exit 1\nexec {DEFAULT_COMPOSE_BIN} "$@"\n')
    client.chmod(0o755)
    return client


@pytest.mark.parametrize("kind", ["standalone", "through-the-client"])
async def test_compose_however_it_is_run_runs_the_app(
    env: AppsEnv, docker: aiodocker.Docker, tmp_path: Path, kind: str
) -> None:
    image = env.image("busybox")
    app = env.app("app1", {"a": image})
    async with env.adapter(compose_bin=compose_binary(kind, tmp_path / "bin")) as apps:
        with capture_logs() as logs:
            verified = await apps.verify(env.bundle, {"app1": app.uri})
        assert [s.name for s in verified[0].services] == ["a"]
        through = [e for e in logs if e["event"] == "docker compose runs through the docker client"]
        assert len(through) == (kind == "through-the-client")
        await apps.fetch(env.bundle, verified)
        await apps.load(verified)
        await apps.install(verified)
        await apps.start(verified)
        assert (await apps.check_running(verified))["app1"].running
        await apps.stop(["app1"])
        assert not (await apps.check_running(verified))["app1"].running
    [container] = await project_containers(docker, "app1")
    assert container["State"] == "exited"
