from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dbus import SystemdMock, private_system_bus, systemd_mock


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with private_system_bus(tmp_path / "dbus") as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


@pytest.fixture
def systemd(system_bus: str, tmp_path: Path) -> Iterator[SystemdMock]:
    with systemd_mock(system_bus, tmp_path / "dbus") as mock:
        yield mock
