"""systemd over a real private bus, with python-dbusmock standing in for PID 1."""

from __future__ import annotations

import pytest

from aklited.errors import ServiceError
from aklited.host.systemd import NoSystemd, Systemd, connect_systemd
from aklited_sim.bus import SystemdMock


async def test_stop_and_start_wait_for_their_jobs(systemd: SystemdMock) -> None:
    systemd.add_unit("aktualizr-lite.service", active=True)
    manager = await connect_systemd()
    assert isinstance(manager, Systemd)
    try:
        state = await manager.unit_state("aktualizr-lite.service")
        assert state.running
        assert state.load_state == "loaded"
        await manager.stop_unit("aktualizr-lite.service")
        assert not (await manager.unit_state("aktualizr-lite.service")).running
        await manager.start_unit("aktualizr-lite.service")
        assert (await manager.unit_state("aktualizr-lite.service")).running
    finally:
        await manager.close()
    calls = systemd.calls()
    assert any(c.startswith('StopUnit "aktualizr-lite.service"') for c in calls), calls
    assert any(c.startswith('StartUnit "aktualizr-lite.service"') for c in calls), calls


async def test_unknown_unit_is_not_found_not_running(systemd: SystemdMock) -> None:
    manager = await connect_systemd()
    try:
        state = await manager.unit_state("aktualizr-lite.service")
        assert state.load_state == "not-found"
        assert not state.running
    finally:
        await manager.close()


async def test_failed_method_is_a_clear_error(systemd: SystemdMock) -> None:
    manager = await connect_systemd()
    try:
        # the mock, like systemd, refuses to stop a unit it does not know
        with pytest.raises(ServiceError, match="StopUnit failed"):
            await manager.stop_unit("never-loaded.service")
    finally:
        await manager.close()


async def test_no_system_bus_means_no_systemd(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/system_bus_socket")
    manager = await connect_systemd()
    assert isinstance(manager, NoSystemd)
    assert not manager.available
    await manager.stop_unit("aktualizr-lite.service")
    assert not (await manager.unit_state("aktualizr-lite.service")).running


async def test_bus_without_systemd_means_no_systemd(system_bus: str) -> None:
    manager = await connect_systemd()
    assert isinstance(manager, NoSystemd)
