"""How often a command reads the deployments (``ostree admin status``, tens of milliseconds
each): an install reads them once before its deployment and once to check it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aklited_sim.bus import SystemdMock
from aklited_sim.factory import Factory
from tests.integration.engine.harness import Device, usb_drive

pytestmark = [pytest.mark.root, pytest.mark.docker]

E2E = tuple[Device, Factory, SystemdMock]


def counting_ostree(tmp_path: Path) -> tuple[Path, Path]:
    """A directory with an ``ostree`` that logs its arguments and runs the real one."""
    real = shutil.which("ostree")
    assert real is not None
    bin_dir, calls = tmp_path / "bin", tmp_path / "ostree-calls"
    bin_dir.mkdir()
    wrapper = bin_dir / "ostree"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir, calls


def status_reads(calls: Path) -> int:
    if not calls.exists():
        return 0
    lines = calls.read_text().splitlines()
    return sum(line.startswith("admin status") for line in lines)


@pytest.mark.parametrize("first", [True, False], ids=["first-update", "later-update"])
async def test_an_install_reads_the_deployments_twice(
    e2e: E2E, tmp_path: Path, first: bool
) -> None:
    # The first update also records the factory image, from the booted deployment.
    device, factory, _ = e2e
    bin_dir, calls = counting_ostree(tmp_path)
    v2 = await factory.release(2, apps={})
    v3 = await factory.release(3, apps={})
    with usb_drive(tmp_path) as drive:
        b2 = await factory.write_bundle(drive.mountpoint / "v2", [v2])
        b3 = await factory.write_bundle(drive.mountpoint / "v3", [v3])
        if not first:
            await device.update_to(b2)
        bundle = b2 if first else b3

        done = device.cli("install", "-s", str(bundle), path=bin_dir)

    assert done.returncode == 100, (done.stdout, done.stderr)
    assert status_reads(calls) == 2
