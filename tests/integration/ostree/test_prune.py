"""Pruning keeps booted + rollback (+ pending) and really frees the repo."""

from __future__ import annotations

import asyncio

import aklited_sim as sim
from aklited_sim import SimDevice
from tests.integration.ostree.support import BundleRepo, repo_bytes, requirements

pytestmark = requirements

MIB = 1024 * 1024


async def _ostree(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("ostree", *args)
    assert await proc.wait() == 0


async def test_prune_frees_a_pulled_commit_never_deployed(
    device: SimDevice, bundle: BundleRepo
) -> None:
    rootfs = device.rootfs()
    abandoned = await bundle.commit("2", random_mib=8)
    await rootfs.pull(source_repo=bundle.repo, commit=abandoned)
    size_with = repo_bytes(rootfs.repo)
    result = await rootfs.prune()
    assert result.undeployed == ()
    assert result.deleted_objects > 0
    assert not await rootfs.has_commit(abandoned)
    assert size_with - repo_bytes(rootfs.repo) >= 8 * MIB
    # The running deployment is untouched and still complete.
    status = await rootfs.status()
    assert status.booted is not None and status.booted.checksum == device.initial_commit
    assert await rootfs.has_commit(device.initial_commit)


async def test_prune_keeps_current_and_rollback_only(device: SimDevice, bundle: BundleRepo) -> None:
    rootfs = device.rootfs()
    commits = [await bundle.commit(str(v), random_mib=4) for v in (2, 3, 4)]
    # Three updates deployed by hand keeping everything (as `--retain` does), the last one
    # booted: four deployments, four rootfs' worth of objects.
    for commit in commits:
        await _ostree(f"--repo={rootfs.repo}", "pull-local", str(bundle.repo), commit)
        await _ostree(
            "admin", "deploy", "--retain", f"--sysroot={device.sysroot}", "--os=lmp", commit
        )
    await sim.reboot(device)
    before = await rootfs.status()
    assert [d.checksum for d in before.deployments] == [*reversed(commits), device.initial_commit]
    size_before = repo_bytes(rootfs.repo)

    result = await rootfs.prune()

    after = await rootfs.status()
    assert [d.checksum for d in after.deployments] == [commits[2], commits[1]]
    assert after.booted is not None and after.booted.checksum == commits[2]
    assert after.rollback is not None and after.rollback.checksum == commits[1]
    assert {d.checksum for d in result.undeployed} == {commits[0], device.initial_commit}
    assert not await rootfs.has_commit(commits[0])
    assert size_before - repo_bytes(rootfs.repo) >= 4 * MIB
    # What is left still boots.
    assert await sim.reboot(device, position=1) == after.deployments[1].name


async def test_prune_keeps_a_pending_update(device: SimDevice, bundle: BundleRepo) -> None:
    rootfs = device.rootfs()
    first, second = await bundle.commit("2"), await bundle.commit("3")
    for commit in (first, second):
        await rootfs.pull(source_repo=bundle.repo, commit=commit)
        await rootfs.deploy(commit=commit)
        await sim.reboot(device)
    third = await bundle.commit("4")
    await rootfs.pull(source_repo=bundle.repo, commit=third)
    await _ostree("admin", "deploy", "--retain", f"--sysroot={device.sysroot}", "--os=lmp", third)
    before = await rootfs.status()
    assert before.booted is not None and before.booted.checksum == second
    assert [d.checksum for d in before.deployments] == [third, second, first]
    result = await rootfs.prune()
    after = await rootfs.status()
    # pending (third), booted (second), rollback (first): nothing to remove.
    assert result.undeployed == ()
    assert [d.checksum for d in after.deployments] == [third, second, first]


async def test_prune_without_known_boot_keeps_deployments(
    device: SimDevice, bundle: BundleRepo
) -> None:
    rootfs = device.rootfs()
    commits = [await bundle.commit(str(v)) for v in (2, 3)]
    for commit in commits:
        await _ostree(f"--repo={rootfs.repo}", "pull-local", str(bundle.repo), commit)
        await _ostree(
            "admin", "deploy", "--retain", f"--sysroot={device.sysroot}", "--os=lmp", commit
        )
    device.kernel_cmdline.write_text("quiet\n")
    result = await rootfs.prune()
    assert result.undeployed == ()
    assert len((await rootfs.status()).deployments) == 3


async def test_many_updates_do_not_fill_the_repo(device: SimDevice, bundle: BundleRepo) -> None:
    rootfs = device.rootfs()
    sizes = []
    for version in range(2, 7):
        commit = await bundle.commit(str(version), random_mib=3)
        await rootfs.pull(source_repo=bundle.repo, commit=commit)
        await rootfs.deploy(commit=commit)
        await sim.reboot(device)
        await rootfs.prune()
        sizes.append(repo_bytes(rootfs.repo))
        assert len((await rootfs.status()).deployments) == 2
    # Two rootfs' worth, whatever the number of updates.
    assert max(sizes[1:]) - min(sizes[1:]) < 1 * MIB
    assert sizes[-1] < 8 * MIB
