"""Fixtures for the hostile-drive tests.

The engine's fixtures (``dockerd``, ``system_bus``, ``systemd``) are re-exported from
``tests/integration/engine/conftest.py``. Each kind of bundle is built once per session
(``rootfs_world``, ``apps_world``; see ``worlds.py``) and copied per case (``rootfs_case``,
``apps_case``). One private system bus with systemd mocked serves the whole session
(``shared_systemd``); each case reads only the Manager calls made after it began.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from aklited_sim.bus import SystemdMock, private_system_bus, systemd_mock
from aklited_sim.sysroot import remove_tree
from tests.helpers.dockerd import Dockerd
from tests.integration.engine.conftest import dockerd, system_bus, systemd
from tests.integration.hostile.kit import memory_cgroup
from tests.integration.hostile.worlds import (
    AKLITE_UNIT,
    AppsWorld,
    Case,
    RootfsWorld,
    build_apps_world,
    build_rootfs_world,
    case,
)

__all__ = ["dockerd", "system_bus", "systemd"]


@pytest.fixture(scope="session")
def rootfs_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootfsWorld]:
    root = tmp_path_factory.mktemp("rootfs-world")
    world = asyncio.run(build_rootfs_world(root))
    try:
        yield world
    finally:
        asyncio.run(remove_tree(world.template.root))


@pytest.fixture(scope="session")
def apps_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppsWorld]:
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed")
    root = tmp_path_factory.mktemp("apps-world")
    world = asyncio.run(build_apps_world(root))
    try:
        yield world
    finally:
        asyncio.run(remove_tree(world.template.root))


@pytest.fixture(scope="session")
def shared_systemd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdMock]:
    """One private system bus with systemd mocked, aktualizr-lite active, for every case."""
    workdir = tmp_path_factory.mktemp("dbus")
    with private_system_bus(workdir) as address, systemd_mock(address, workdir) as mock:
        mock.add_unit(AKLITE_UNIT, active=True)
        yield mock


@pytest.fixture(scope="session")
def cli_cgroup() -> Iterator[Path | None]:
    """A memory cgroup every ``aklite-offline`` of a case runs in: a reader that does not
    bound its reads is killed there, not left to exhaust the machine."""
    with memory_cgroup() as group:
        yield group


@pytest.fixture
def rootfs_case(
    rootfs_world: RootfsWorld,
    tmp_path: Path,
    shared_systemd: SystemdMock,
    cli_cgroup: Path | None,
) -> Iterator[Case]:
    """A rootfs-only device and a copy of the rootfs bundle."""
    yield from case(rootfs_world, tmp_path, shared_systemd, None, cli_cgroup)


@pytest.fixture
def apps_case(
    apps_world: AppsWorld,
    tmp_path: Path,
    shared_systemd: SystemdMock,
    dockerd: Dockerd,
    cli_cgroup: Path | None,
) -> Iterator[Case]:
    """A device with Compose Apps (the session's dockerd) and a copy of the apps bundle."""
    yield from case(apps_world, tmp_path, shared_systemd, dockerd, cli_cgroup)
