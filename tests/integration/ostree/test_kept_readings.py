"""One reading of the deployments per engine call (``kept_readings``), never a stale one; and
the walk a pull size took serves the pull after it, on the same drive only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import aklited_sim as sim
from aklited.errors import RootfsSysrootError
from aklited.rootfs.space import SpaceEstimate
from aklited.rootfs.sysroot import OstreeSysroot
from aklited_sim import SimDevice
from aklited_sim.loopfs import LoopFs
from tests.integration.ostree.support import BundleRepo, requirements

pytestmark = requirements


def counted(rootfs: OstreeSysroot, tmp_path: Path) -> Path:
    """Make ``rootfs`` run an ``ostree`` that logs each call's arguments."""
    calls = tmp_path / "ostree-calls"
    wrapper = tmp_path / "ostree"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {rootfs.ostree_bin} "$@"\n')
    wrapper.chmod(0o755)
    rootfs.ostree_bin = str(wrapper)
    return calls


def reads(calls: Path) -> int:
    lines = calls.read_text().splitlines() if calls.exists() else []
    return sum(line.startswith("admin status") for line in lines)


def count_walks(rootfs: OstreeSysroot) -> list[None]:
    """Each walk of a bundle's commit appends to the list returned."""
    walks: list[None] = []
    walk = rootfs.estimate_space

    async def counting_walk(**kwargs: Any) -> SpaceEstimate:
        walks.append(None)
        return await walk(**kwargs)

    rootfs.estimate_space = counting_walk  # type: ignore[method-assign]
    return walks


async def drive_with_commits(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs, *fills: int
) -> tuple[OstreeSysroot, list[str], list[None]]:
    """The device's rootfs, counting its walks, and a commit per fill byte on the drive
    (each with 300,000 bytes of it), mounted read-only as the daemon mounts a drive."""
    commits = [
        await bundle.commit(str(version), files={"usr/share/lmp/data.bin": bytes([fill]) * 300_000})
        for version, fill in enumerate(fills, start=2)
    ]
    usb.remount(options="ro,nosuid,nodev,noexec")
    rootfs = device.rootfs()
    return rootfs, commits, count_walks(rootfs)


async def test_a_kept_reading_serves_until_the_sysroot_changes(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs, tmp_path: Path
) -> None:
    rootfs, [commit], _ = await drive_with_commits(device, bundle, usb, 2)
    await rootfs.pull(source_repo=bundle.repo, commit=commit)
    calls = counted(rootfs, tmp_path)

    with rootfs.kept_readings():
        assert await rootfs.booted_commit() == device.initial_commit
        assert await rootfs.pending_commit() is None
        assert reads(calls) == 1
        await rootfs.deploy(commit=commit)  # reads before (kept) and after (afresh)
        assert reads(calls) == 2
        # What the deploy changed is seen at once, without another read.
        assert await rootfs.pending_commit() == commit
        assert await rootfs.booted_commit() == device.initial_commit
        assert reads(calls) == 2
    # Outside, every question reads the sysroot again (a boot changes what it says).
    assert await rootfs.pending_commit() == commit
    assert reads(calls) == 3
    await sim.reboot(device)
    assert await rootfs.booted_commit() == commit
    assert reads(calls) == 4


async def test_the_walk_of_a_pull_size_serves_the_pull_after_it(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs
) -> None:
    rootfs, [commit], walks = await drive_with_commits(device, bundle, usb, 3)

    with rootfs.kept_readings():
        size = await rootfs.pull_size(source_repo=bundle.repo, commit=commit)
        result = await rootfs.pull(source_repo=bundle.repo, commit=commit)

    assert len(walks) == 1
    assert result.pulled and result.estimate is not None
    assert size == result.estimate.missing_bytes > 300_000
    assert await rootfs.pull_size(source_repo=bundle.repo, commit=commit) == 0  # present


async def test_a_walk_is_not_kept_beyond_the_engine_call(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs
) -> None:
    # The next call may read another drive at the same path: it walks what it pulls.
    rootfs, [commit], walks = await drive_with_commits(device, bundle, usb, 4)
    with rootfs.kept_readings():
        await rootfs.pull_size(source_repo=bundle.repo, commit=commit)

    with rootfs.kept_readings():
        result = await rootfs.pull(source_repo=bundle.repo, commit=commit)

    assert result.pulled
    assert len(walks) == 2


async def test_a_walk_serves_only_the_pull_of_what_it_walked(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs
) -> None:
    rootfs, [walked, pulled], walks = await drive_with_commits(device, bundle, usb, 5, 6)

    with rootfs.kept_readings():
        await rootfs.pull_size(source_repo=bundle.repo, commit=walked)
        result = await rootfs.pull(source_repo=bundle.repo, commit=pulled)

    assert result.pulled and result.commit == pulled
    assert len(walks) == 2


async def test_a_deploy_that_fails_after_it_took_effect_is_seen(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs, tmp_path: Path
) -> None:
    # ostree deploys, then fails (a crash while it cleans up, say): the kept reading from
    # before is stale, and the next question must see the deployment.
    rootfs, [commit], _ = await drive_with_commits(device, bundle, usb, 7)
    await rootfs.pull(source_repo=bundle.repo, commit=commit)
    wrapper = tmp_path / "ostree-fails-after-deploy"
    wrapper.write_text(
        f'#!/bin/sh\n{rootfs.ostree_bin} "$@" || exit\n'
        'case "$1 $2" in "admin deploy") echo "error: cleanup failed" >&2; exit 1;; esac\n'
    )
    wrapper.chmod(0o755)

    with rootfs.kept_readings():
        assert await rootfs.pending_commit() is None
        rootfs.ostree_bin = str(wrapper)
        with pytest.raises(RootfsSysrootError):
            await rootfs.deploy(commit=commit)
        assert await rootfs.pending_commit() == commit
