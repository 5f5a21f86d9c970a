"""On a drive mounted read-only, ``nodev`` and ``nosymfollow`` (as the daemon mounts one),
ostree copies while the bundle is walked: the kernel keeps ostree from following a link or
opening a device, and the walk, beside it, still refuses a FIFO, a link out of the bundle
or an update that does not fit, stopping the copy. Elsewhere the walk comes first."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import aklited_sim as sim
from aklited.errors import RootfsError
from aklited.outcomes import StatusCode
from aklited.rootfs import sysroot
from aklited.rootfs.cli import run_ostree
from aklited.rootfs.space import SpaceEstimate
from aklited.rootfs.sysroot import OstreeSysroot
from aklited_sim import SimDevice
from aklited_sim.loopfs import LoopFs, loop_ext4
from tests.integration.ostree.support import BundleRepo, requirements

pytestmark = [*requirements, pytest.mark.timeout(120)]

GUARDED = "ro,nosuid,nodev,noexec,nosymfollow"
UNGUARDED = "ro,nosuid,nodev,noexec"


class Copy:
    """The ``ostree pull-local`` a rootfs runs: when it began, and its process."""

    def __init__(self, rootfs: OstreeSysroot, tmp_path: Path) -> None:
        # ostree, once started, names its process here (and waits for it to be read).
        self.began = tmp_path / "pull-local.began"
        os.mkfifo(self.began)
        wrapper = tmp_path / "ostree"
        wrapper.write_text(
            "#!/bin/sh\n"
            f'case " $* " in *" pull-local "*) echo $$ > {self.began};; esac\n'
            f'exec {rootfs.ostree_bin} "$@"\n'
        )
        wrapper.chmod(0o755)
        rootfs.ostree_bin = str(wrapper)
        self.pid = 0

    async def wait_begun(self) -> None:
        self.pid = int((await asyncio.to_thread(self.began.read_text)).strip())

    async def gone(self) -> bool:
        """The process ended and was reaped."""
        return not await asyncio.to_thread(Path(f"/proc/{self.pid}").exists)


def walk_once_copying(rootfs: OstreeSysroot, copy: Copy) -> list[None]:
    """Each walk begins only once ostree's copy has (so ostree is at work when the walk
    finds anything); a walk before the copy would wait for ever. Walks are counted."""
    walks: list[None] = []
    walk = rootfs.estimate_space

    async def walk_later(**kwargs: Any) -> SpaceEstimate:
        await copy.wait_begun()
        walks.append(None)
        return await walk(**kwargs)

    rootfs.estimate_space = walk_later  # type: ignore[method-assign]
    return walks


def a_file_object(repo: Path) -> Path:
    return max(repo.glob("objects/*/*.filez"), key=lambda p: p.stat().st_size)


async def test_a_guarded_drive_is_copied_while_it_is_walked(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs, tmp_path: Path
) -> None:
    commit = await bundle.commit("2", random_mib=4)
    usb.remount(options=GUARDED)
    rootfs = device.rootfs()
    copy = Copy(rootfs, tmp_path)
    walks = walk_once_copying(rootfs, copy)
    seen: list[tuple[int, int]] = []
    checked: list[None] = []

    result = await rootfs.pull(
        source_repo=bundle.repo,
        commit=commit,
        on_progress=lambda done, total, _message: seen.append((done, total)),
        on_space_checked=lambda: checked.append(None),
    )

    assert walks == [None]
    assert checked == [None]  # once, when the walk, begun after the copy, sized it
    assert result.pulled and result.estimate is not None and result.estimate.fits
    # Progress starts once the walk sized the copy, in its bytes, and ends at them.
    assert seen[0][0] == 0 and seen[-1] == (result.estimate.missing_bytes,) * 2
    assert {total for _, total in seen} == {result.estimate.missing_bytes}
    assert result.estimate.missing_bytes >= 4 * 1024 * 1024
    await rootfs.deploy(commit=commit)
    assert await rootfs.pending_commit() == commit


@pytest.mark.parametrize(
    ("options", "verify"),
    [
        (UNGUARDED, True),  # links would be followed: ostree must wait
        # Trusting the drive, what ostree imported before a refusal would stay unverified.
        (GUARDED, False),
    ],
    ids=["no-nosymfollow", "trusting"],
)
async def test_elsewhere_the_walk_comes_before_ostree(  # noqa: PLR0917
    device: SimDevice,
    bundle: BundleRepo,
    usb: LoopFs,
    monkeypatch: pytest.MonkeyPatch,
    options: str,
    verify: bool,
) -> None:
    commit = await bundle.commit("2")
    usb.remount(options=options)
    rootfs = device.rootfs(verify_objects=verify)
    events: list[str] = []
    run = run_ostree
    walk = rootfs.estimate_space

    async def noting_run(args: list[str], **kwargs: Any) -> Any:
        if "pull-local" in args:
            events.append("copy")
        return await run(args, **kwargs)

    async def noting_walk(**kwargs: Any) -> SpaceEstimate:
        estimate = await walk(**kwargs)
        events.append("walked")
        return estimate

    monkeypatch.setattr(sysroot, "run_ostree", noting_run)
    rootfs.estimate_space = noting_walk  # type: ignore[method-assign]

    assert (await rootfs.pull(source_repo=bundle.repo, commit=commit)).pulled

    assert events == ["walked", "copy"]


def fifo(target: Path, _outside: Path) -> None:
    os.mkfifo(target)


def link_out(target: Path, outside: Path) -> None:
    target.symlink_to(outside)


def link_inside(target: Path, _outside: Path) -> None:
    # ostree could not follow it on this drive: refused, not left to fail ostree's copy.
    moved = target.parent.parent.parent.parent / "elsewhere" / target.name
    moved.parent.mkdir()
    moved.write_bytes(_outside.read_bytes())
    target.symlink_to(Path("../../../elsewhere") / target.name)


def staging(rootfs: OstreeSysroot) -> list[str]:
    return sorted(p.name for p in (rootfs.repo / "tmp").iterdir() if p.name.startswith("staging"))


@pytest.mark.parametrize(
    "hazard",
    [
        (fifo, "a FIFO"),
        (link_out, "a symlink where none may be"),
        (link_inside, "a symlink where none may be"),
    ],
    ids=["fifo", "link-out", "link-inside"],
)
async def test_what_the_walk_refuses_stops_the_copy(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs, tmp_path: Path, hazard: Any
) -> None:
    make, says = hazard
    commit = await bundle.commit("2", random_mib=4)
    victim = a_file_object(bundle.repo)
    outside = tmp_path / "host-file"
    outside.write_bytes(victim.read_bytes())  # what a link out would find: valid bytes
    victim.unlink()
    make(victim, outside)
    usb.remount(options=GUARDED)
    rootfs = device.rootfs()
    # Left by an earlier pull that was stopped: ostree would write into it again.
    leftover = rootfs.repo / "tmp" / "staging-leftover"
    leftover.mkdir()
    (leftover / "object").write_bytes(b"half-written")
    copy = Copy(rootfs, tmp_path)
    walk_once_copying(rootfs, copy)

    with pytest.raises(RootfsError) as caught:
        await rootfs.pull(source_repo=bundle.repo, commit=commit)

    # The walk's refusal, naming the entry: not what ostree made of it (a FIFO blocks it,
    # a link it may not follow fails its copy).
    assert caught.value.code == StatusCode.VERIFICATION_FAILED
    assert says in caught.value.message
    assert victim.name in caught.value.message
    assert await copy.gone()
    assert not await rootfs.has_commit(commit)
    # What ostree staged, or could have written into, is gone.
    assert await asyncio.to_thread(staging, rootfs) == []


async def test_an_update_that_does_not_fit_stops_the_copy(
    bundle: BundleRepo, usb: LoopFs, tmp_path: Path
) -> None:
    commit = await bundle.commit("2", random_mib=40)
    usb.remount(options=GUARDED)
    with loop_ext4(tmp_path / "small.img", size_mib=48, mountpoint=tmp_path / "small") as small:
        device = await sim.make_device(small.mountpoint / "device", version="1")
        rootfs = device.rootfs()
        copy = Copy(rootfs, tmp_path)
        walk_once_copying(rootfs, copy)
        free_before = shutil.disk_usage(small.mountpoint).free

        with pytest.raises(RootfsError) as caught:
            await rootfs.pull(source_repo=bundle.repo, commit=commit)

        # The walk's verdict, weighed against the space free before ostree began.
        assert caught.value.code == StatusCode.NO_SPACE
        assert f"not enough space in {device.sysroot}" in caught.value.message
        assert await copy.gone()
        assert not await rootfs.has_commit(commit)
        # What ostree wrote meanwhile is gone: a retry after freeing space sees it all.
        assert await asyncio.to_thread(staging, rootfs) == []
        free_after = shutil.disk_usage(small.mountpoint).free
        assert abs(free_after - free_before) < 1024 * 1024
        await sim.remove_tree(device.root)


async def test_a_commit_refused_after_ostree_copied_it_counts_as_not_pulled(
    device: SimDevice, bundle: BundleRepo, usb: LoopFs, tmp_path: Path
) -> None:
    commit = await bundle.commit("2", random_mib=2)
    usb.remount(options=GUARDED)
    rootfs = device.rootfs()
    ended = tmp_path / "pull-local.ended"
    os.mkfifo(ended)
    wrapper = tmp_path / "ostree"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'{rootfs.ostree_bin} "$@"; status=$?\n'
        f'case " $* " in *" pull-local "*) echo $status > {ended};; esac\n'
        "exit $status\n"
    )
    wrapper.chmod(0o755)
    rootfs.ostree_bin = str(wrapper)
    refusal = RootfsError("the walk refused it")

    async def refuse_once_copied(**_kwargs: Any) -> SpaceEstimate:
        assert (await asyncio.to_thread(ended.read_text)).strip() == "0"
        raise refusal

    rootfs.estimate_space = refuse_once_copied  # type: ignore[method-assign]

    with pytest.raises(RootfsError) as caught:
        await rootfs.pull(source_repo=bundle.repo, commit=commit)

    assert caught.value is refusal
    # ostree had it all, yet it counts as half-pulled: the next pull checks it all again.
    marker = rootfs.repo / "state" / f"{commit}.commitpartial"
    assert await asyncio.to_thread(marker.exists)
    assert not await rootfs.has_commit(commit)
    retry = device.rootfs()
    assert (await retry.pull(source_repo=bundle.repo, commit=commit)).pulled
    assert await retry.has_commit(commit)
