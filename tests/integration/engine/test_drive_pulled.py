"""A drive pulled out while the pull is copying bytes: the install fails cleanly (50), the
device stays on its current target, and a later install from a good drive succeeds.

Deterministic: the test waits until ostree has written a content object into the sysroot
repo's staging directory (bytes are being copied), freezes the install's cgroup so the copy
cannot finish meanwhile, pulls the drive, and thaws it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aklited_sim.bus import SystemdMock
from aklited_sim.factory import Factory
from tests.helpers.drive import (
    drop_caches,
    freezer_group,
    pull_out,
    set_freezer,
    slow_reads_from,
    wait_for_copying,
)
from tests.integration.engine.harness import Device, usb_drive

pytestmark = [pytest.mark.root, pytest.mark.docker]


async def test_drive_pulled_mid_pull(
    e2e: tuple[Device, Factory, SystemdMock], tmp_path: Path
) -> None:
    device, factory, systemd = e2e
    # enough incompressible content that the pull takes a while
    payload = {f"usr/share/data/blob-{i:04d}": os.urandom(64 * 1024) for i in range(1200)}
    v2 = await factory.release_with_files(2, files=payload)
    before = device.current()

    with usb_drive(tmp_path / "bad", size_mib=384) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        drop_caches()
        repo = device.sim.sysroot / "ostree" / "repo"
        with slow_reads_from(drive.device) as group, freezer_group() as freezer:
            proc = device.start_cli("install", "-s", str(bundle), cgroups=(group, freezer))
            try:
                wait_for_copying(repo, lambda: proc.poll() is None)
                set_freezer(freezer, "FROZEN")
                # frozen mid-copy: the commit has not landed in the sysroot repo yet
                assert not (repo / "objects" / v2.commit[:2] / f"{v2.commit[2:]}.commit").exists()
                pull_out(drive.mountpoint)
                set_freezer(freezer, "THAWED")
                stdout, stderr = proc.communicate(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        # the context manager unmounts and detaches the dead drive
    assert proc.returncode == 50, (stdout, stderr)
    assert stderr.splitlines()[-1].startswith("aklite-offline: ")
    assert "Traceback" not in stderr
    states = device.journal_states()
    assert "pulling-failed" in states
    assert "deploying" not in states
    # still on the old target, nothing pending, aktualizr-lite running again
    assert device.current()["Target"] == before["Target"]
    assert device.current()["Ostree hash"] == device.sim.initial_commit
    assert device.cli("run").returncode == 40
    jobs = systemd.jobs()
    assert jobs[-1] == "StartUnit"

    with usb_drive(tmp_path / "good", size_mib=384) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        done = device.cli("install", "-s", str(bundle))
    assert done.returncode == 100, done.stderr
    await device.reboot()
    assert device.cli("run").returncode == 0
    assert device.current()["Target"] == v2.name
