"""Fixtures for the rootfs tests: a simulated device and bundle repos on a "USB drive"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import aklited_sim as sim
from aklited_sim import SimDevice
from aklited_sim.loopfs import LoopFs, loop_ext4
from tests.integration.ostree.support import BundleRepo


@pytest.fixture
async def device(tmp_path: Path) -> AsyncIterator[SimDevice]:
    """A device booted into its factory commit (version 1); deleted afterwards."""
    try:
        yield await sim.make_device(tmp_path / "device", version="1")
    finally:
        # Deployment directories are immutable: pytest's own clean-up could not remove them.
        await sim.remove_tree(tmp_path / "device")


@pytest.fixture
def usb(tmp_path: Path) -> Iterator[LoopFs]:
    """A 256 MiB ext4 "USB drive", unmounted and detached afterwards."""
    with loop_ext4(tmp_path / "usb.img", size_mib=256, mountpoint=tmp_path / "usb") as fs:
        yield fs


@pytest.fixture
async def bundle(usb: LoopFs, tmp_path: Path) -> BundleRepo:
    """An empty archive repo at ``<usb>/ostree_repo`` (commit into it, then remount ro)."""
    repo = await sim.init_repo(usb.mountpoint / "ostree_repo")
    return BundleRepo(repo=repo, workdir=tmp_path / "trees")
