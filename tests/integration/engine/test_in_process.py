"""The engine in this process with the real adapters, as the daemon will drive it.

Under the suite's blockbuster fixture, so a blocking call anywhere on the install path fails
the test; the observer sees every phase (and its D-Bus State) and one overall percentage
that only grows, from the OSTree pull and the app copy, to 100.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from aklited.config import load_config
from aklited.engine.phases import STATE_OF, Phase
from aklited.errors import BusyError
from aklited.host.systemd import connect_systemd
from aklited.outcomes import State, StatusCode
from aklited.wiring import build_engine
from aklited_sim.bus import SystemdMock
from aklited_sim.factory import Factory
from tests.fakes import ROOTFS_AND_APPS_INSTALL
from tests.integration.engine.harness import Device, usb_drive

pytestmark = [pytest.mark.root, pytest.mark.docker]


class Recorder:
    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.percents: list[int] = []
        self.messages: list[str] = []
        self.pulling = asyncio.Event()

    def on_phase(self, phase: Phase, detail: Mapping[str, Any]) -> None:
        self.phases.append(phase)
        if phase == Phase.PULLING:
            self.pulling.set()

    def on_progress(self, percent: int, message: str) -> None:
        self.percents.append(percent)
        self.messages.append(message)


async def test_install_reports_phases_and_progress_without_blocking_the_loop(
    e2e: tuple[Device, Factory, SystemdMock], tmp_path: Path
) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    config = await asyncio.to_thread(load_config, [device.config_dir])
    recorder = Recorder()
    services = await connect_systemd(bus_address=device.bus_address)
    try:
        with usb_drive(tmp_path) as drive:
            bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
            async with build_engine(config, observer=recorder, services=services) as engine:
                first = asyncio.create_task(engine.install(bundle))
                await recorder.pulling.wait()
                # A second install in the same process is told an update runs, not blamed
                # on another tool holding the lock.
                with pytest.raises(BusyError, match="an update is already running") as busy:
                    await engine.install(bundle)
                assert busy.value.code == StatusCode.INSTALLATION_IN_PROGRESS
                outcome = await first
    finally:
        await services.close()

    assert outcome.code == StatusCode.NEEDS_REBOOT
    assert recorder.phases == ROOTFS_AND_APPS_INSTALL
    assert [STATE_OF[p] for p in recorder.phases][-1] == State.AWAITING_REBOOT
    assert recorder.percents == sorted(recorder.percents)
    assert recorder.percents[-1] == 100
    # both steps reported: the OSTree pull, then the app copy and load
    assert any(f"commit {v2.commit} copied" in m for m in recorder.messages), recorder.messages
    assert any("app" in m for m in recorder.messages), recorder.messages
