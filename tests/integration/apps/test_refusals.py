"""Bad app content is refused with a specific code and leaves no image or container behind."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import aiodocker
import pytest

from aklite_bundle.appstore import (
    LAYER_GZIP,
    LAYER_ZSTD,
    BuiltApp,
    ServiceSpec,
    busybox_rootfs_tar,
    render_compose,
)
from aklited.apps.blobs import blob_path
from aklited.apps.platforms import Platform
from aklited.apps.port import ComposeAppsPort
from aklited.apps.tarsafe import COMPOSE_FILE
from aklited.errors import AppsError
from aklited.outcomes import StatusCode

from .conftest import AppsEnv, image_tags, project_containers

pytestmark = pytest.mark.docker

VERIFICATION_FAILED = StatusCode.VERIFICATION_FAILED
IMAGE_LOAD_FAILED = StatusCode.IMAGE_LOAD_FAILED


async def _install(env: AppsEnv, app: BuiltApp) -> None:
    """The engine's sequence for one app, through its port: copy (the drive's metadata
    checked, every large blob hashed as it is copied), load the images, then start."""
    async with env.adapter() as apps:
        port = ComposeAppsPort(apps)
        await port.copy(env.bundle, {app.name: app.uri})
        await port.load({app.name: app.uri})
        await port.start({app.name: app.uri})


async def _refused(env: AppsEnv, docker: aiodocker.Docker, app: BuiltApp) -> AppsError:
    with pytest.raises(AppsError) as err:
        await _install(env, app)
    assert err.value.message.startswith(f"app {app.name}")
    assert "\n" not in err.value.message
    assert await image_tags(docker, env.factory) == set()
    assert await project_containers(docker, app.name) == []
    return err.value


def _flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _simple_app(env: AppsEnv) -> BuiltApp:
    return env.app("bad", {"web": env.image("web")})


BLOB_KINDS: dict[str, Callable[[BuiltApp, AppsEnv], str]] = {
    "app manifest": lambda app, env: app.manifest.hex,
    "compose bundle": lambda app, env: app.bundle.hex,
    "image index": lambda app, env: env.image("web").root.hex,
    "image manifest": lambda app, env: env.image("web").manifest.hex,
    "config": lambda app, env: env.image("web").config.hex,
    "layer": lambda app, env: env.base_layer().descriptor.hex,
}


@pytest.mark.parametrize("kind", sorted(BLOB_KINDS))
async def test_flipped_byte_in_any_blob_is_refused(
    env: AppsEnv, docker: aiodocker.Docker, kind: str
) -> None:
    app = _simple_app(env)
    hex_ = BLOB_KINDS[kind](app, env)
    _flip(blob_path(env.bundle, hex_), offset=len(blob_path(env.bundle, hex_).read_bytes()) // 2)
    err = await _refused(env, docker, app)
    assert err.code == VERIFICATION_FAILED
    assert hex_[:12] in err.message
    assert "does not match its sha256 digest" in err.message
    assert not blob_path(env.store, hex_).exists()  # never usable on the device


@pytest.mark.parametrize("change", [b"extra", None])
async def test_layer_size_mismatch_is_refused(
    env: AppsEnv, docker: aiodocker.Docker, change: bytes | None
) -> None:
    app = _simple_app(env)
    path = blob_path(env.bundle, env.base_layer().descriptor.hex)
    data = path.read_bytes()
    path.write_bytes(data + change if change else data[:-1])
    err = await _refused(env, docker, app)
    assert err.code == VERIFICATION_FAILED
    assert "layer" in err.message and "declared" in err.message


async def test_oversized_app_manifest_is_refused(env: AppsEnv, docker: aiodocker.Docker) -> None:
    app = env.builder.app("bad", {}, manifest_padding=50 * 1024)
    err = await _refused(env, docker, app)
    assert err.code == VERIFICATION_FAILED
    assert "manifest" in err.message and "over its limit" in err.message


@pytest.mark.parametrize("copies", [0, 2])
async def test_index_without_exactly_one_platform_match_is_refused(
    env: AppsEnv, docker: aiodocker.Docker, copies: int
) -> None:
    host = Platform.host()
    other = Platform.of("linux", "arm64" if host.architecture != "arm64" else "amd64")
    image = env.image("web", index_platforms=(other, *([host] * copies)))
    app = env.app("bad", {"web": image})
    err = await _refused(env, docker, app)
    assert err.code == VERIFICATION_FAILED
    assert f"has {copies} manifests for {host}, exactly 1 needed" in err.message


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    ("extra", "with_compose", "reason"),
    [
        (_file("compose.yaml", b"services: {}\n"), False, f"no top-level {COMPOSE_FILE}"),
        (_file("../escape", b"x"), True, "climbs out of the app dir"),
        (_file("/etc/escape", b"x"), True, "absolute name"),
        (_link("data", "/etc"), True, "points to absolute"),
        (_link("data", "../../.."), True, "points outside the app dir"),
    ],
)
async def test_unsafe_compose_bundle_is_refused(
    env: AppsEnv,
    docker: aiodocker.Docker,
    extra: tuple[tarfile.TarInfo, bytes | None],
    with_compose: bool,
    reason: str,
) -> None:
    services = {"web": ServiceSpec(env.image("web"))}
    members = [_file(COMPOSE_FILE, render_compose(services))] if with_compose else []
    bundle = env.builder.bundle([*members, extra])
    app = env.builder.app("bad", services, bundle=bundle)
    err = await _refused(env, docker, app)
    assert err.code == VERIFICATION_FAILED
    assert reason in err.message
    assert not (env.root / "escape").exists()


async def test_uri_file_differing_from_target_is_refused(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    app = _simple_app(env)
    uri_file = env.bundle / "apps" / "bad" / app.manifest.hex / "uri"
    uri_file.write_text(app.uri.replace(env.factory, "otherfactory"))
    err = await _refused(env, docker, app)
    assert err.code == VERIFICATION_FAILED
    assert "the target says" in err.message


async def test_missing_blob_is_missing_content(env: AppsEnv, docker: aiodocker.Docker) -> None:
    app = _simple_app(env)
    blob_path(env.bundle, env.image("web").config.hex).unlink()
    err = await _refused(env, docker, app)
    assert err.code == StatusCode.NO_TARGET_CONTENT
    assert "is missing" in err.message


async def test_zstd_layer_is_refused_before_loading(env: AppsEnv, docker: aiodocker.Docker) -> None:
    tar = busybox_rootfs_tar(env.root / "marker.tar", applets=(), files={"etc/v": b"z"})
    zst = env.root / "marker.tar.zst"
    proc = await asyncio.create_subprocess_exec("zstd", "-q", "-f", "-o", str(zst), str(tar))
    assert await proc.wait() == 0
    diff_id = hashlib.sha256(tar.read_bytes()).hexdigest()
    layer = env.builder.layer_from_blob(zst, diff_id=diff_id, media_type=LAYER_ZSTD)
    image = env.builder.image("web", [env.base_layer(), layer])
    app = env.app("bad", {"web": image})
    err = await _refused(env, docker, app)
    assert err.code == IMAGE_LOAD_FAILED
    assert "zstd" in err.message and layer.descriptor.hex[:12] in err.message


async def test_engine_refusal_removes_the_images_already_loaded(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    # The second image's config names a wrong diff_id: dockerd loads the first, then fails.
    good = env.image("good")
    tar = busybox_rootfs_tar(env.root / "marker.tar", applets=(), files={"etc/v": b"d"})
    gz = env.builder.layer_from_tar(tar)
    wrong = env.builder.layer_from_blob(
        blob_path(env.bundle, gz.descriptor.hex), diff_id="0" * 64, media_type=LAYER_GZIP
    )
    bad = env.builder.image("zbad", [env.base_layer(), wrong])
    app = env.app("bad", {"a": good, "b": bad})
    err = await _refused(env, docker, app)
    assert err.code == IMAGE_LOAD_FAILED
    assert "Docker refused the images" in err.message


async def test_blob_changed_in_local_store_stops_the_load(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    app = _simple_app(env)
    async with env.adapter() as apps:
        verified = await apps.verify(env.bundle, {app.name: app.uri})
        await apps.fetch(env.bundle, verified)
        _flip(blob_path(env.store, env.base_layer().descriptor.hex), offset=4096)
        with pytest.raises(AppsError) as err:
            await apps.load(verified)
    assert err.value.code == VERIFICATION_FAILED
    assert "changed since it was verified" in err.value.message
    assert await image_tags(docker, env.factory) == set()


async def test_a_blob_cut_short_in_the_local_store_stops_a_load_without_rehashing(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    app = _simple_app(env)
    async with env.adapter() as apps:
        verified = await apps.verify(env.bundle, {app.name: app.uri}, quick=True)
        await apps.fetch(env.bundle, verified)
        layer = blob_path(env.store, env.base_layer().descriptor.hex)
        layer.write_bytes(layer.read_bytes()[:-1])
        with pytest.raises(AppsError) as err:
            await apps.load(verified, rehash=False)
    assert err.value.code == VERIFICATION_FAILED
    assert await image_tags(docker, env.factory) == set()


async def test_a_load_of_apps_another_process_copied_hashes_them_again(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    # Only the apps this port has just copied (and hashed) are streamed as they are: apps
    # copied by an earlier process (an install interrupted, say) are hashed as they load.
    app = _simple_app(env)
    target = {app.name: app.uri}
    async with env.adapter() as apps:
        await ComposeAppsPort(apps).copy(env.bundle, target)
        _flip(blob_path(env.store, env.base_layer().descriptor.hex), offset=4096)
        with pytest.raises(AppsError) as err:
            await ComposeAppsPort(apps).load(target)
    assert err.value.code == VERIFICATION_FAILED
    assert await image_tags(docker, env.factory) == set()


async def test_service_exiting_non_zero_fails_the_app(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    image = env.image("web")
    app = env.app("bad", {"crash": image}, command="echo boom-$$HOSTNAME >&2; exit 3")
    err = await _refused(env, docker, app)
    assert err.code == IMAGE_LOAD_FAILED
    assert "failed to start" in err.message
    assert "service crash exited with status 3" in err.message
    assert "boom-" in err.message


@pytest.fixture
def small_store(env: AppsEnv) -> Iterator[Path]:
    """A 512 KiB tmpfs as the device's app store: too small for a busybox image."""
    env.store.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(env.store)], check=True)
    try:
        yield env.store
    finally:
        subprocess.run(["umount", str(env.store)], check=True)


async def test_fetch_that_does_not_fit_copies_nothing(
    env: AppsEnv, docker: aiodocker.Docker, small_store: Path
) -> None:
    app = _simple_app(env)
    async with env.adapter() as apps:
        verified = await apps.verify(env.bundle, {app.name: app.uri})
        with pytest.raises(AppsError) as err:
            await apps.fetch(env.bundle, verified)
    assert err.value.code == StatusCode.NO_SPACE
    assert str(small_store) in err.value.message and "bytes free" in err.value.message
    files = await asyncio.to_thread(lambda: [p for p in small_store.rglob("*") if p.is_file()])
    assert files == []


async def test_target_name_must_match_its_uri(env: AppsEnv, docker: aiodocker.Docker) -> None:
    app = _simple_app(env)
    async with env.adapter() as apps:
        with pytest.raises(AppsError) as err:
            await apps.verify(env.bundle, {"other": app.uri})
    assert err.value.code == VERIFICATION_FAILED
    assert "names app 'bad'" in err.value.message


async def test_app_whose_images_were_never_loaded_does_not_start(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    app = _simple_app(env)
    async with env.adapter() as apps:
        verified = await apps.verify(env.bundle, {app.name: app.uri})
        await apps.fetch(env.bundle, verified)
        await apps.install(verified)
        with pytest.raises(AppsError) as err:
            await apps.start(verified)
        status = await apps.check_running(verified)
    assert err.value.code == IMAGE_LOAD_FAILED
    assert err.value.message.startswith("app bad: docker compose up failed")
    assert not status["bad"].running
    assert status["bad"].services[0].state == "missing"
    assert await project_containers(docker, app.name) == []


async def test_quick_local_verify_checks_sizes_and_load_still_hashes(
    env: AppsEnv, docker: aiodocker.Docker
) -> None:
    app = _simple_app(env)
    layer = blob_path(env.store, env.base_layer().descriptor.hex)
    async with env.adapter() as apps:
        verified = await apps.verify(env.bundle, {app.name: app.uri})
        await apps.fetch(env.bundle, verified)
        _flip(layer, offset=100)
        # Same size: the quick check passes, the full one does not, the load refuses it.
        assert await apps.verify_local({app.name: app.uri}, quick=True) == verified
        with pytest.raises(AppsError, match="does not match"):
            await apps.verify_local({app.name: app.uri})
        with pytest.raises(AppsError, match="changed since it was verified"):
            await apps.load(verified)
        layer.write_bytes(layer.read_bytes()[:-1])
        with pytest.raises(AppsError, match="declared") as err:
            await apps.verify_local({app.name: app.uri}, quick=True)
    assert err.value.code == VERIFICATION_FAILED
    assert await image_tags(docker, env.factory) == set()
