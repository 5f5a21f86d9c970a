from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aklited_sim.bus import SystemdMock, private_system_bus, systemd_mock
from aklited_sim.factory import Factory
from aklited_sim.sysroot import remove_tree
from tests.helpers.dockerd import Dockerd, dockerd_fixture
from tests.integration.engine.harness import Device, clean_engine, make_e2e_device

dockerd = pytest.fixture(scope="session")(dockerd_fixture)


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with private_system_bus(tmp_path / "dbus") as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


@pytest.fixture
def systemd(system_bus: str, tmp_path: Path) -> Iterator[SystemdMock]:
    with systemd_mock(system_bus, tmp_path / "dbus") as mock:
        yield mock


@pytest.fixture
async def e2e(
    tmp_path: Path, dockerd: Dockerd, system_bus: str, systemd: SystemdMock
) -> AsyncIterator[tuple[Device, Factory, SystemdMock]]:
    """A device running its factory image with aktualizr-lite active, and its factory."""
    systemd.add_unit("aktualizr-lite.service", active=True)
    device, factory = await make_e2e_device(tmp_path, dockerd=dockerd, bus_address=system_bus)
    try:
        yield device, factory, systemd
    finally:
        clean_engine(dockerd)
        # ostree marks deployments immutable: clear that so the temp dir can be deleted
        await remove_tree(device.sim.root)
