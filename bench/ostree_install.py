"""Time pull + deploy of a ~200 MB commit (~100 MB with ``--quick``) from a loop-mounted drive.

aklited's ``OstreeSysroot.pull`` + ``deploy`` (commit check, space estimate, copy, deploy,
status reads) against the bare commands on the same data in the same run, each pair doing
the same copy: ``ostree pull-local --untrusted`` (every object checksummed, aklited's
default) and plain ``pull-local`` (trusts the drive, as ``verify_objects=False``), each
followed by ``ostree admin deploy``. aklited also pulls the same tree committed with
``--generate-sizes``, whose objects' sizes it takes from the commit. The drive is mounted
as the daemon mounts one (read-only, ``nodev``, ``nosymfollow``). Every run gets a fresh
sysroot, the page cache is dropped before it, the order rotates, and each timing ends with a
``sync``.

Rows: aklited against each bare pair, aim <= 1.05x, every run's time kept.

Run as root: .venv/bin/python bench/ostree_install.py [--quick] [--runs N] [--rows FILE]
(--quick: half the files, 5 runs: each contender goes first once; else 10, each first twice:
a median of 10 holds still where one run varies by 0.1 s)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

import aklited_sim as sim
from aklited_sim import SimDevice
from aklited_sim.loopfs import loop_ext4
from bench.results import Row, add_rows_option, emit

BIG_SIZE = 1024 * 1024
SMALL_SIZE = 10 * 1024
OSNAME = "lmp"
AIM = 1.05
# As the daemon mounts a drive: no link on it followed, so ostree copies while aklited walks.
DRIVE_MOUNT = "ro,nosuid,nodev,noexec,nosymfollow"

AKLITED = "aklited pull+deploy"
AKLITED_SIZED = "aklited pull+deploy, the commit carrying ostree.sizes"
RAW = "ostree pull-local --untrusted + deploy"
AKLITED_TRUSTING = "aklited pull+deploy, verify_objects=False"
RAW_TRUSTING = "ostree pull-local + deploy"


@dataclass(frozen=True)
class Payload:
    """The files of the commit: ``big`` of 1 MiB and ``small`` of 10 KiB, all random."""

    big: int
    small: int

    @property
    def megabytes(self) -> float:
        return (self.big * BIG_SIZE + self.small * SMALL_SIZE) / 1e6


FULL = Payload(big=190, small=1000)
QUICK = Payload(big=95, small=500)


# One contender: install ``commit`` from the drive's repo onto a device.
Install = Callable[[SimDevice, Path, str], Awaitable[None]]


async def run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {stderr.decode()}")


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


async def fresh_device(root: Path) -> SimDevice:
    return await sim.make_device(root, osname=OSNAME, version="1")


def aklited_install(*, verify: bool) -> Install:
    async def install(device: SimDevice, source: Path, commit: str) -> None:
        rootfs = device.rootfs(verify_objects=verify)
        await rootfs.pull(source_repo=source, commit=commit)
        await rootfs.deploy(commit=commit)

    return install


def raw_install(*, verify: bool) -> Install:
    async def install(device: SimDevice, source: Path, commit: str) -> None:
        repo = device.sysroot / "ostree" / "repo"
        flags = ["--untrusted"] if verify else []
        await run("ostree", f"--repo={repo}", "pull-local", *flags, str(source), commit)
        await run(
            "ostree", "admin", "deploy", f"--sysroot={device.sysroot}", f"--os={OSNAME}", commit
        )

    return install


def on_commit(install: Install, commit: str) -> Install:
    """``install`` of ``commit`` whatever commit the run names (same tree, other metadata)."""

    async def of_commit(device: SimDevice, source: Path, _named: str) -> None:
        await install(device, source, commit)

    return of_commit


async def build_commit(work: Path, source: Path, payload: Payload) -> tuple[str, str]:
    """The payload committed twice into ``source``: plainly (as LmP's build does by
    default), and with ``--generate-sizes`` (every object's size in the commit)."""
    tree = await sim.make_tree(work / "tree", version="2")
    await sim.write_random_files(tree / "usr" / "share" / "big", count=payload.big, size=BIG_SIZE)
    await sim.write_random_files(
        tree / "usr" / "share" / "small", count=payload.small, size=SMALL_SIZE
    )
    await sim.init_repo(source)
    started = time.perf_counter()
    commit = await sim.commit_tree(source, tree, subject="bench", version="2")
    print(
        f"commit of {payload.big}x1 MiB + {payload.small}x10 KiB into an archive repo: "
        f"{time.perf_counter() - started:.1f} s"
    )
    sized = await sim.commit_tree(source, tree, subject="bench", version="2s", sizes=True)
    await sim.remove_tree(tree)
    return commit, sized


async def time_runs(
    work: Path, source: Path, commit: str, contenders: dict[str, Install], runs: int
) -> dict[str, list[float]]:
    """Every contender ``runs`` times, the order rotating so none always goes first."""
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for index in range(runs):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            device = await fresh_device(work / f"device-{index}-{names.index(name)}")
            drop_caches()
            started = time.perf_counter()
            await contenders[name](device, source, commit)
            await asyncio.to_thread(os.sync)
            timings[name].append(time.perf_counter() - started)
            await sim.remove_tree(device.root)
    return timings


def print_summary(timings: dict[str, list[float]], runs: int) -> None:
    print(f"{runs} runs each, caches dropped before every run, times include a final sync")
    for name, values in timings.items():
        print(
            f"  {name:40s} median {statistics.median(values):6.3f} s"
            f"  (min {min(values):.3f}, max {max(values):.3f})"
        )
    median = {name: statistics.median(values) for name, values in timings.items()}
    price = median[RAW] / median[RAW_TRUSTING]
    print(f"cost of verifying every object (ostree alone): {price:.2f}x")


def rows(timings: dict[str, list[float]], payload: Payload) -> list[Row]:
    size = f"{payload.megabytes:.0f} MB"
    return [
        Row(
            bench="ostree_install",
            figure=f"rootfs pull + deploy ({size}, every object verified)",
            unit="s",
            aklited=timings[AKLITED],
            baseline_name=RAW,
            baseline=timings[RAW],
            aim=AIM,
            note="page cache dropped before every run; each time ends with a sync",
        ),
        Row(
            bench="ostree_install",
            figure=f"rootfs pull + deploy ({size}, every object verified, commit with sizes)",
            unit="s",
            aklited=timings[AKLITED_SIZED],
            baseline_name=RAW,
            baseline=timings[RAW],
            aim=AIM,
            note="the same tree committed with `ostree commit --generate-sizes`: the space"
            " estimate takes the sizes from the commit instead of reading each object's header",
        ),
        Row(
            bench="ostree_install",
            figure=f"rootfs pull + deploy ({size}, trusting the drive)",
            unit="s",
            aklited=timings[AKLITED_TRUSTING],
            baseline_name=RAW_TRUSTING,
            baseline=timings[RAW_TRUSTING],
            aim=AIM,
            note="aklited with verify_objects=False; objects copied without checksumming",
        ),
    ]


async def main(runs: int, payload: Payload) -> list[Row]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    contenders: dict[str, Install] = {
        AKLITED: aklited_install(verify=True),
        RAW: raw_install(verify=True),
        AKLITED_TRUSTING: aklited_install(verify=False),
        RAW_TRUSTING: raw_install(verify=False),
    }
    work = Path(tempfile.mkdtemp(prefix="aklited-bench-"))
    try:
        # Archive objects of random data are no smaller than the files; ext4 wants room.
        size_mib = int(payload.megabytes * 2) + 300
        with loop_ext4(work / "usb.img", size_mib=size_mib, mountpoint=work / "usb") as usb:
            source = usb.mountpoint / "ostree_repo"
            commit, sized = await build_commit(work, source, payload)
            contenders[AKLITED_SIZED] = on_commit(aklited_install(verify=True), sized)
            usb.remount(options=DRIVE_MOUNT)
            timings = await time_runs(work, source, commit, contenders, runs)
    finally:
        await sim.remove_tree(work)
    print_summary(timings, runs)
    return rows(timings, payload)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half the files, 5 runs")
    parser.add_argument("--runs", type=int, help="runs of each contender (default 10, quick 5)")
    add_rows_option(parser)
    args = parser.parse_args()
    # Five contenders rotate: with ten runs each goes first twice.
    runs = args.runs or (5 if args.quick else 10)
    emit(asyncio.run(main(runs, QUICK if args.quick else FULL)), args.rows)
