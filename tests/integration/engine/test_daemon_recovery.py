"""A daemon that could not go on picks up where it left off: an engine that could not start
once the missing part is back; an install stopped by SIGTERM at the next start."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from aklited.config import load_config
from aklited.daemon.notify import Notifier
from aklited.daemon.runner import Daemon, retry_engine, start_engine
from aklited.errors import JournalError
from aklited.host.systemd import NoSystemd
from aklited_sim.bus import LogindMock, SystemdMock
from aklited_sim.daemon import running_aklited
from aklited_sim.factory import Factory
from tests.helpers.drive import (
    blkio_group,
    drop_caches,
    freezer_group,
    join,
    set_freezer,
    slow_reads,
    wait_for_copying,
)
from tests.integration.engine.harness import Device, usb_drive
from tests.integration.engine.test_daemon import aklitectl, aklited, logind

pytestmark = [pytest.mark.root, pytest.mark.docker]

__all__ = ["logind"]
# The unit's TimeoutStopSec: systemd kills the daemon after it.
STOP_TIMEOUT_S = 90


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


async def test_sigterm_mid_install_stops_it_and_the_next_start_settles_it(
    e2e: tuple[Device, Factory, SystemdMock], logind: LogindMock, tmp_path: Path
) -> None:
    device, factory, systemd = e2e
    (device.config_dir / "50-daemon.toml").write_text("[aklited]\nauto_reboot = false\n")
    # enough incompressible content that the pull takes a while
    payload = {f"usr/share/data/blob-{i:04d}": os.urandom(64 * 1024) for i in range(1200)}
    v2 = await factory.release_with_files(2, files=payload)
    repo = device.sim.sysroot / "ostree" / "repo"
    with usb_drive(tmp_path, size_mib=384) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        drop_caches()
        async with running_aklited(device.config_dir, device.env(), tmp_path, "term") as daemon:
            with blkio_group() as slow, freezer_group() as freezer:
                # The daemon and the ostree it starts read the drive slowly and can be held.
                join(slow, daemon.process.pid)
                join(freezer, daemon.process.pid)
                slow_reads(slow, drive.device)
                install = asyncio.create_task(aklitectl(device, "install", str(bundle)))
                await asyncio.to_thread(wait_for_copying, repo, daemon.running)
                set_freezer(freezer, "FROZEN")
                daemon.process.send_signal(signal.SIGTERM)
                set_freezer(freezer, "THAWED")
                code = await asyncio.wait_for(daemon.process.wait(), STOP_TIMEOUT_S)
            assert code == 0, daemon.log()
            install_code, said = await install
        assert install_code == 1, said  # the client is told the update did not end
        states = device.journal_states()
        assert states[-1] == "failed" and "pulling-failed" in states, states
        jobs = systemd.jobs()
        assert jobs[-1] == "StartUnit"  # aktualizr-lite runs again

        # The next start finds nothing half-done, and the same install goes through.
        async with aklited(device, tmp_path, "after-term"):
            _, status = await aklitectl(device, "status")
            assert status["State"] == "idle" and status["PendingTarget"] == {}
            assert status["CurrentTarget"]["name"] == "initial-target"
            code, done = await aklitectl(device, "install", str(bundle))
            assert code == 100, done
