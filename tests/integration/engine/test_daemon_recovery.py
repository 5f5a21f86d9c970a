"""A daemon whose engine could not start picks it up once the missing part is back."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from aklited.config import load_config
from aklited.daemon.notify import Notifier
from aklited.daemon.runner import Daemon, retry_engine, start_engine
from aklited.errors import JournalError
from aklited.host.systemd import NoSystemd
from aklited_sim.bus import SystemdMock
from aklited_sim.factory import Factory
from tests.integration.engine.harness import Device

pytestmark = [pytest.mark.root, pytest.mark.docker]


async def test_the_engine_is_picked_up_when_the_damaged_journal_is_moved_away(
    e2e: tuple[Device, Factory, SystemdMock],
) -> None:
    device, _, _ = e2e
    await asyncio.to_thread(device.db.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(device.db.write_bytes, b"damaged")
    config = await asyncio.to_thread(load_config, [device.config_dir])
    daemon = Daemon(config, Notifier(environ={}))
    daemon.services = NoSystemd()
    async with AsyncExitStack() as stack:
        assert not await start_engine(daemon, stack)
        assert daemon.jobs.status.last_result[0] == 1
        with pytest.raises(JournalError, match="not an SQLite database"):
            daemon.jobs.start_run()

        # The operator keeps the damaged file for analysis and lets aklited start anew.
        await asyncio.to_thread(device.db.rename, device.db.with_suffix(".damaged"))
        await asyncio.wait_for(retry_engine(daemon, stack, 0), 60)

        assert daemon.jobs.status.last_result == (0, "updates are available again")
        assert daemon.jobs.status.current["name"] == "initial-target"
