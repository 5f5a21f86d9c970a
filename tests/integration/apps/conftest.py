"""Fixtures for Compose Apps tests: an isolated dockerd, busybox images and app stores."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiodocker
import pytest

from aklite_bundle.appstore import (
    AppStoreBuilder,
    BuiltApp,
    BuiltImage,
    BuiltLayer,
    ServiceSpec,
    busybox_rootfs_tar,
)
from aklited.apps.adapter import ComposeApps
from aklited.apps.composecli import DEFAULT_COMPOSE_BIN
from aklited.apps.platforms import Platform
from tests.helpers.dockerd import Dockerd, dockerd_fixture

pytestmark = pytest.mark.docker

dockerd = pytest.fixture(scope="session")(dockerd_fixture)


@pytest.fixture(scope="session")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static rootfs tarball (the base layer of every test image)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("busybox-static is not installed")
    return busybox_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "rootfs.tar")


@dataclass
class AppsEnv:
    """One test's world: a bundle store, a device (local store + compose root) and an engine."""

    root: Path
    dockerd: Dockerd
    rootfs: Path
    factory: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    _builder: AppStoreBuilder | None = None
    _base: BuiltLayer | None = None

    @property
    def bundle(self) -> Path:
        """The bundle's app store root (``<bundle>/apps``)."""
        return self.root / "bundle" / "apps"

    @property
    def store(self) -> Path:
        return self.root / "device" / "reset-apps"

    @property
    def compose_root(self) -> Path:
        return self.root / "device" / "compose-apps"

    @property
    def builder(self) -> AppStoreBuilder:
        if self._builder is None:
            self._builder = AppStoreBuilder(self.bundle, factory=self.factory)
        return self._builder

    def base_layer(self) -> BuiltLayer:
        if self._base is None:
            self._base = self.builder.layer_from_tar(self.rootfs)
        return self._base

    def image(
        self,
        name: str,
        *,
        marker: str | None = None,
        index_platforms: Sequence[Platform] | None = None,
    ) -> BuiltImage:
        """A busybox image; ``marker`` adds a layer with /etc/version holding that text."""
        layers = [self.base_layer()]
        if marker is not None:
            tar = self.root / f"marker-{name}-{marker}.tar"
            busybox_rootfs_tar(tar, applets=(), files={"etc/version": marker.encode()})
            layers.append(self.builder.layer_from_tar(tar))
        return self.builder.image(name, layers, index_platforms=index_platforms)

    def app(
        self, name: str, services: Mapping[str, BuiltImage], *, command: str = "sleep 3600"
    ) -> BuiltApp:
        """An app whose services run ``command`` with an init (so they stop at once)."""
        specs = {
            service: ServiceSpec(
                image,
                {"command": ["sh", "-c", command], "init": True, "network_mode": "none"},
            )
            for service, image in services.items()
        }
        return self.builder.app(name, specs)

    def adapter(self, compose_bin: Path = DEFAULT_COMPOSE_BIN) -> ComposeApps:
        return ComposeApps(
            store_root=self.store,
            compose_root=self.compose_root,
            docker_host=self.dockerd.host,
            compose_bin=compose_bin,
            settle_s=0.6,
            start_timeout_s=30,
        )


@pytest.fixture
def env(tmp_path: Path, dockerd: Dockerd, rootfs_tar: Path) -> Iterator[AppsEnv]:
    world = AppsEnv(root=tmp_path, dockerd=dockerd, rootfs=rootfs_tar)
    yield world
    # Leave the shared engine as found: this test's containers and images go.
    ids: list[str] = []
    for project in world.compose_root.iterdir() if world.compose_root.is_dir() else []:
        ids += world.dockerd.cli(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}", check=False
        ).stdout.split()
    if ids:
        world.dockerd.cli("rm", "-f", *ids, check=False)
    images = world.dockerd.cli(
        "images", "--format", "{{.Repository}}:{{.Tag}}", check=False
    ).stdout.split()
    mine = [i for i in images if f"/{world.factory}/" in i]
    if mine:
        world.dockerd.cli("rmi", "-f", *mine, check=False)


@pytest.fixture
async def docker(dockerd: Dockerd) -> AsyncIterator[aiodocker.Docker]:
    """A Docker API client for assertions."""
    client = aiodocker.Docker(url=dockerd.host)
    try:
        yield client
    finally:
        await client.close()


async def image_tags(docker: aiodocker.Docker, factory: str) -> set[str]:
    """Tags of the engine's images that belong to ``factory``."""
    return {
        tag
        for image in await docker.images.list()
        for tag in image.get("RepoTags") or []
        if f"/{factory}/" in tag
    }


async def project_containers(docker: aiodocker.Docker, project: str) -> list[dict[str, object]]:
    """Containers (all states) of a compose project, as the engine lists them."""
    containers = await docker.containers.list(
        all=True, filters={"label": [f"com.docker.compose.project={project}"]}
    )
    return [dict(c._container) for c in containers]
