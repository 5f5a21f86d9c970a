"""A target's apps are read side by side (each runs ``docker compose config``): all of them
in the target's order, or the first failure, with nothing of the other reads left behind."""

from __future__ import annotations

from pathlib import Path

import aiodocker
import pytest

from aklite_bundle.appstore import BuiltApp
from aklited.apps.adapter import ComposeApps
from aklited.apps.blobs import blob_path
from aklited.errors import AppsError
from aklited.outcomes import StatusCode

from .conftest import AppsEnv

pytestmark = pytest.mark.docker

NAMES = ("a1", "a2", "a3", "a4", "a5", "a6")  # more than are read at once


def adapter(env: AppsEnv, work_dir: Path) -> ComposeApps:
    return ComposeApps(
        store_root=env.store,
        compose_root=env.compose_root,
        docker_host=env.dockerd.host,
        work_dir=work_dir,
    )


def build_apps(env: AppsEnv) -> dict[str, BuiltApp]:
    return {
        name: env.app(name, {"web": env.image("web")}, command=f"echo {name}") for name in NAMES
    }


async def test_every_app_is_read_in_the_targets_order(
    env: AppsEnv, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    target = {name: app.uri for name, app in build_apps(env).items()}
    work_dir = tmp_path / "work"
    work_dir.mkdir()

    async with adapter(env, work_dir) as apps:
        read = await apps.verify(env.bundle, target)

    assert [app.name for app in read] == sorted(NAMES)
    assert [app.uri for app in read] == [target[name] for name in sorted(NAMES)]
    assert all(app.services for app in read)
    assert list(work_dir.iterdir()) == []


async def test_a_broken_app_stops_the_read_and_leaves_nothing_behind(
    env: AppsEnv, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    built = build_apps(env)
    target = {name: app.uri for name, app in built.items()}
    path = blob_path(env.bundle, built["a4"].bundle.hex)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    work_dir = tmp_path / "work"
    work_dir.mkdir()

    async with adapter(env, work_dir) as apps:
        with pytest.raises(AppsError) as err:
            await apps.verify(env.bundle, target)

    assert err.value.code == StatusCode.VERIFICATION_FAILED
    assert err.value.message.startswith("app a4")
    assert list(work_dir.iterdir()) == []
