"""Pull + deploy from a bundle on a separate file system, then the boots that follow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import aklited_sim as sim
from aklited.errors import RootfsError
from aklited.outcomes import StatusCode
from aklited.rootfs.status import deployment_dir
from aklited.rootfs.sysroot import OstreeSysroot
from aklited_sim import SimDevice
from aklited_sim.loopfs import LoopFs
from tests.integration.ostree.support import BundleRepo, requirements

pytestmark = requirements


async def test_pull_and_deploy_from_drive_then_boot(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs
) -> None:
    rootfs = device.rootfs()
    factory = (await rootfs.status()).booted
    assert factory is not None and factory.checksum == device.initial_commit
    # A local change in the running /etc must survive the update.
    booted_etc = deployment_dir(device.sysroot, factory) / "etc"
    (booted_etc / "hostname").write_text("field-unit-7\n")

    commit = await bundle.commit("2", files={"usr/share/lmp/data.bin": b"\x01" * 300_000})
    usb.remount(options="ro,nosuid,nodev,noexec")  # as the daemon mounts a drive
    progress: list[tuple[int, int, str]] = []
    result = await rootfs.pull(
        source_repo=bundle.repo,
        commit=commit,
        on_progress=lambda done, total, msg: progress.append((done, total, msg)),
    )
    assert result.pulled and result.commit == commit
    assert result.objects > 0
    assert progress[0][0] == 0
    assert result.estimate is not None
    # bytes: the content the commit lacks, spread over the objects ostree reports
    assert progress[-1][0] == progress[-1][1] == result.estimate.missing_bytes
    assert any("content objects imported" in message for _, _, message in progress)
    assert await rootfs.has_commit(commit)

    new = await rootfs.deploy(commit=commit)
    assert new.checksum == commit and new.index == 0 and new.pending and not new.booted
    # The merge deployment's kernel arguments are kept.
    for karg in sim.DEFAULT_KARGS:
        assert karg in new.kernel_args
    assert (deployment_dir(device.sysroot, new) / "etc" / "hostname").read_text() == (
        "field-unit-7\n"
    )
    assert (deployment_dir(device.sysroot, new) / "etc" / "lmp-release").read_text() == "2\n"

    # Before the reboot the factory deployment still runs (although the deploy rewrote the
    # boot links the command line names) and the new one is what boots next.
    before_reboot = await rootfs.status()
    assert [d.checksum for d in before_reboot.deployments] == [commit, device.initial_commit]
    assert before_reboot.booted is not None
    assert before_reboot.booted.checksum == device.initial_commit
    assert before_reboot.pending is not None and before_reboot.pending.checksum == commit
    assert before_reboot.rollback is None

    assert await sim.reboot(device) == new.name
    after = await rootfs.status()
    assert after.booted is not None and after.booted.checksum == commit
    assert after.pending is None
    assert after.rollback is not None and after.rollback.checksum == device.initial_commit

    # Pulling what is already there copies nothing.
    again = await rootfs.pull(source_repo=bundle.repo, commit=commit)
    assert not again.pulled and again.objects == 0


async def test_bootloader_rollback_is_detected(device: SimDevice, bundle: BundleRepo) -> None:
    rootfs = device.rootfs()
    commit = await bundle.commit("2", kernel=b"kernel 2\n")
    await rootfs.pull(source_repo=bundle.repo, commit=commit)
    await rootfs.deploy(commit=commit)
    # The new kernel did not come up; the bootloader started the second entry.
    await sim.reboot(device, position=1)
    status = await rootfs.status()
    assert status.booted is not None and status.booted.checksum == device.initial_commit
    assert status.pending is not None and status.pending.checksum == commit
    assert status.rollback is None


async def test_install_after_bootloader_rollback_keeps_booted(
    device: SimDevice, bundle: BundleRepo
) -> None:
    rootfs = device.rootfs()
    bad = await bundle.commit("2")
    await rootfs.pull(source_repo=bundle.repo, commit=bad)
    await rootfs.deploy(commit=bad)
    await sim.reboot(device, position=1)  # bootloader fell back to the factory deployment

    good = await bundle.commit("3")
    await rootfs.pull(source_repo=bundle.repo, commit=good)
    new = await rootfs.deploy(commit=good)
    status = await rootfs.status()
    # The deployment that runs stays; the one that failed to boot goes.
    assert [d.checksum for d in status.deployments] == [good, device.initial_commit]
    assert new.pending
    await sim.reboot(device)
    assert (await rootfs.status()).booted == (await rootfs.status()).default


async def test_redeploy_previous_target(device: SimDevice, bundle: BundleRepo) -> None:
    rootfs = device.rootfs()
    commit = await bundle.commit("2")
    await rootfs.pull(source_repo=bundle.repo, commit=commit)
    await rootfs.deploy(commit=commit)
    await sim.reboot(device)
    # Apps failed on the new rootfs: go back to the previous target.
    back = await rootfs.rollback()
    assert back.checksum == device.initial_commit and back.pending and back.index == 0
    status = await rootfs.status()
    assert [d.checksum for d in status.deployments] == [device.initial_commit, commit]
    assert status.pending == status.default
    assert status.booted is not None and status.booted.checksum == commit
    await sim.reboot(device)
    status = await rootfs.status()
    assert status.booted is not None and status.booted.checksum == device.initial_commit
    assert status.rollback is not None and status.rollback.checksum == commit


async def test_booted_survives_two_deploys_without_reboot(
    device: SimDevice, bundle: BundleRepo
) -> None:
    rootfs = device.rootfs()
    first, second = await bundle.commit("2"), await bundle.commit("3")
    for commit in (first, second):
        await rootfs.pull(source_repo=bundle.repo, commit=commit)
        await rootfs.deploy(commit=commit)
    # boot.0/boot.1 swapped twice: the links again carry the number the command line names,
    # but the serials now point elsewhere.
    status = await rootfs.status()
    assert status.booted is not None and status.booted.checksum == device.initial_commit
    assert status.pending is not None and status.pending.checksum == second
    assert [d.checksum for d in status.deployments] == [second, device.initial_commit]


async def test_rollback_with_explicit_commit(device: SimDevice, bundle: BundleRepo) -> None:
    rootfs = device.rootfs()
    commit = await bundle.commit("2")
    await rootfs.pull(source_repo=bundle.repo, commit=commit)
    await rootfs.deploy(commit=commit)
    await sim.reboot(device)
    back = await rootfs.rollback(commit=device.initial_commit)
    assert back.checksum == device.initial_commit and back.pending


async def test_rollback_without_previous_deployment_fails(device: SimDevice) -> None:
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().rollback()
    assert caught.value.code == StatusCode.ROLLBACK_FAILED
    gone = "e" * 64
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().rollback(commit=gone)
    assert caught.value.code == StatusCode.ROLLBACK_FAILED
    assert gone in caught.value.message


async def test_no_boot_argument_means_unknown_boot(device: SimDevice) -> None:
    device.kernel_cmdline.write_text("root=/dev/mmcblk0p2 quiet\n")
    status = await device.rootfs().status()
    assert status.booted is None
    assert status.pending is not None and status.pending.checksum == device.initial_commit


async def test_status_without_sysroot(tmp_path: Path) -> None:
    missing = OstreeSysroot(sysroot=tmp_path / "none", osname="lmp")
    with pytest.raises(RootfsError, match="no OSTree sysroot"):
        await missing.status()


async def test_deploy_needs_the_commit_pulled(device: SimDevice) -> None:
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().deploy(commit="d" * 64)
    assert caught.value.code == StatusCode.DOWNLOAD_FAILED


async def test_status_agrees_with_ostree(device: SimDevice) -> None:
    status = await device.rootfs().status()
    proc = await asyncio.create_subprocess_exec(
        "ostree", "admin", "status", f"--sysroot={device.sysroot}", stdout=asyncio.subprocess.PIPE
    )
    listed = (await proc.communicate())[0].decode()
    assert proc.returncode == 0
    assert f"lmp {device.initial_commit}.0" in listed
    assert [d.name for d in status.deployments] == [f"{device.initial_commit}.0"]
    assert status.deployments[0].version == "1"
