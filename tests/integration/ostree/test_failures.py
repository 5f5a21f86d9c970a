"""Broken bundles, forged commits and full disks: the right code, and nothing deployed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import aklited_sim as sim
from aklited.errors import RootfsError
from aklited.outcomes import StatusCode
from aklited.rootfs.repo import commit_path
from aklited_sim import SimDevice
from aklited_sim.loopfs import loop_ext4
from tests.integration.ostree.support import BundleRepo, requirements

pytestmark = requirements


def _content_object(repo: Path, payload: bytes) -> Path:
    """The archive content object (``.filez``) holding the random ``payload``."""
    for path in (repo / "objects").rglob("*.filez"):
        if path.stat().st_size > len(payload) // 2:
            return path
    raise AssertionError("no large content object")


async def _assert_untouched(device: SimDevice, commit: str, *, copy_started: bool = False) -> None:
    rootfs = device.rootfs()
    assert not await rootfs.has_commit(commit)
    status = await rootfs.status()
    assert [d.checksum for d in status.deployments] == [device.initial_commit]
    if not copy_started:
        # Refused before copying: not even ostree's staging area was created. (A copy that
        # fails half-way leaves it for ostree to resume from or clean up.)
        staging = [p for p in (rootfs.repo / "tmp").iterdir() if p.name.startswith("staging")]
        assert staging == []


async def test_bundle_missing_objects_is_a_copy_failure(
    device: SimDevice, bundle: BundleRepo
) -> None:
    payload = os.urandom(200_000)
    commit = await bundle.commit("2", files={"usr/share/payload": payload})
    _content_object(bundle.repo, payload).unlink()
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().pull(source_repo=bundle.repo, commit=commit)
    assert caught.value.code == StatusCode.DOWNLOAD_FAILED
    assert str(bundle.repo) in caught.value.message
    assert "\n" not in caught.value.message
    await _assert_untouched(device, commit, copy_started=True)


async def test_bundle_missing_commit(device: SimDevice, bundle: BundleRepo) -> None:
    commit = await bundle.commit("2")
    commit_path(bundle.repo, commit).unlink()
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().pull(source_repo=bundle.repo, commit=commit)
    assert caught.value.code == StatusCode.DOWNLOAD_FAILED
    assert commit in caught.value.message


async def test_not_a_bundle_repo(device: SimDevice, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().pull(source_repo=tmp_path / "empty", commit="a" * 64)
    assert caught.value.code == StatusCode.DOWNLOAD_FAILED


async def test_corrupted_content_object_is_not_installed(
    device: SimDevice, bundle: BundleRepo
) -> None:
    payload = os.urandom(200_000)
    commit = await bundle.commit("2", files={"usr/share/payload": payload})
    victim = _content_object(bundle.repo, payload)
    # Same name, other bytes: a tampered drive.
    good = await bundle.commit("3", files={"usr/share/other": os.urandom(200_000)})
    replacement = next(
        p
        for p in (bundle.repo / "objects").rglob("*.filez")
        if p != victim and p.stat().st_size > 100_000
    )
    assert good
    shutil.copyfile(replacement, victim)
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().pull(source_repo=bundle.repo, commit=commit)
    # content failing verification, as `check --deep` says of the same drive
    assert caught.value.code == StatusCode.VERIFICATION_FAILED
    assert "orrupted" in caught.value.message  # ostree's own words, passed on
    await _assert_untouched(device, commit, copy_started=True)


async def test_commit_not_matching_its_name(device: SimDevice, bundle: BundleRepo) -> None:
    named = await bundle.commit("2")
    forged = await bundle.commit("3", files={"usr/bin/backdoor": b"#!/bin/sh\n"})
    # The bundle says "this is <named>" but holds another commit under that name.
    shutil.copyfile(commit_path(bundle.repo, forged), commit_path(bundle.repo, named))
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().pull(source_repo=bundle.repo, commit=named)
    assert caught.value.code == StatusCode.VERIFICATION_FAILED
    assert named in caught.value.message
    await _assert_untouched(device, named)
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().deploy(commit=named)
    assert caught.value.code == StatusCode.DOWNLOAD_FAILED
    await _assert_untouched(device, named)


async def test_damaged_commit_already_in_sysroot(device: SimDevice, bundle: BundleRepo) -> None:
    rootfs = device.rootfs()
    commit = await bundle.commit("2")
    await rootfs.pull(source_repo=bundle.repo, commit=commit)
    commit_path(rootfs.repo, commit).write_bytes(b"not a commit")
    with pytest.raises(RootfsError) as caught:
        await rootfs.pull(source_repo=bundle.repo, commit=commit)
    assert caught.value.code == StatusCode.VERIFICATION_FAILED


@pytest.mark.parametrize("name", ["A" * 64, "a" * 63, "--help", "../" + "a" * 61])
async def test_malformed_commit_name(device: SimDevice, bundle: BundleRepo, name: str) -> None:
    with pytest.raises(RootfsError) as caught:
        await device.rootfs().pull(source_repo=bundle.repo, commit=name)
    assert caught.value.code == StatusCode.VERIFICATION_FAILED


async def test_full_disk_is_refused_before_copying(tmp_path: Path, bundle: BundleRepo) -> None:
    with loop_ext4(tmp_path / "small.img", size_mib=48, mountpoint=tmp_path / "small") as small:
        device = await sim.make_device(small.mountpoint / "device", version="1")
        commit = await bundle.commit("2", random_mib=40)
        rootfs = device.rootfs()
        estimate = await rootfs.estimate_space(source_repo=bundle.repo, commit=commit)
        assert estimate.missing_bytes >= 40 * 1024 * 1024
        assert not estimate.fits
        free_before = shutil.disk_usage(small.mountpoint).free
        # Refused as soon as it is sized (an install then copies no app before the pull).
        with pytest.raises(RootfsError) as sized:
            await rootfs.pull_size(source_repo=bundle.repo, commit=commit)
        assert sized.value.code == StatusCode.NO_SPACE
        with pytest.raises(RootfsError) as caught:
            await rootfs.pull(source_repo=bundle.repo, commit=commit)
        assert caught.value.code == StatusCode.NO_SPACE
        assert "not enough space" in caught.value.message
        assert str(device.sysroot) in caught.value.message
        await _assert_untouched(device, commit)
        assert shutil.disk_usage(small.mountpoint).free >= free_before - 1024 * 1024


async def test_a_sized_update_is_weighed_again_beside_what_is_written_first(
    tmp_path: Path, bundle: BundleRepo
) -> None:
    # What an install's apps write before the pull is weighed against the rootfs as sized.
    with loop_ext4(tmp_path / "small.img", size_mib=48, mountpoint=tmp_path / "small") as small:
        device = await sim.make_device(small.mountpoint / "device", version="1")
        commit = await bundle.commit("2", random_mib=12)
        rootfs = device.rootfs()
        assert not await rootfs.fits_beside(commit=commit, beside=0)  # not sized yet

        await rootfs.pull_size(source_repo=bundle.repo, commit=commit)

        free = shutil.disk_usage(small.mountpoint).free
        assert await rootfs.fits_beside(commit=commit, beside=0)
        assert await rootfs.fits_beside(commit=commit, beside=4 * 1024 * 1024)
        assert not await rootfs.fits_beside(commit=commit, beside=free - 12 * 1024 * 1024)
        assert not await rootfs.fits_beside(commit="0" * 64, beside=0)  # sized another


async def test_update_that_fits_on_a_small_disk(tmp_path: Path, bundle: BundleRepo) -> None:
    with loop_ext4(tmp_path / "small.img", size_mib=48, mountpoint=tmp_path / "small") as small:
        device = await sim.make_device(small.mountpoint / "device", version="1")
        commit = await bundle.commit("2", random_mib=12)
        rootfs = device.rootfs()
        result = await rootfs.pull(source_repo=bundle.repo, commit=commit)
        assert result.estimate is not None and result.estimate.fits
        await rootfs.deploy(commit=commit)
        default = (await rootfs.status()).default
        assert default is not None and default.checksum == commit


async def test_estimate_shrinks_for_objects_already_present(
    device: SimDevice, bundle: BundleRepo
) -> None:
    shared = b"\x05" * 500_000
    first = await bundle.commit("2", files={"usr/share/shared": shared})
    second = await bundle.commit("3", files={"usr/share/shared": shared, "usr/share/x": b"x"})
    rootfs = device.rootfs()
    before = await rootfs.estimate_space(source_repo=bundle.repo, commit=second)
    await rootfs.pull(source_repo=bundle.repo, commit=first)
    after = await rootfs.estimate_space(source_repo=bundle.repo, commit=second)
    assert before.missing_bytes - after.missing_bytes >= len(shared)
    assert after.missing_objects < before.missing_objects
