"""Time pull + deploy of a ~200 MB commit from a loop-mounted "USB drive".

aklited's ``OstreeSysroot.pull`` + ``deploy`` (commit check, space estimate, copy, deploy,
status reads) against the bare commands on the same data in the same run, each pair doing
the same copy: ``ostree pull-local --untrusted`` (every object checksummed, aklited's
default) and plain ``pull-local`` (trusts the drive, as ``verify_objects=False``), each
followed by ``ostree admin deploy``. Every run
gets a fresh sysroot, the page cache is dropped before it, the order rotates, and each
timing ends with a ``sync``.

Run as root: .venv/bin/python bench/ostree_install.py [--runs N]
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
from pathlib import Path

import structlog

import aklited_sim as sim
from aklited_sim import SimDevice
from aklited_sim.loopfs import loop_ext4

BIG_FILES, BIG_SIZE = 190, 1024 * 1024
SMALL_FILES, SMALL_SIZE = 1000, 10 * 1024
OSNAME = "lmp"

AKLITED = "aklited pull+deploy"
RAW = "ostree pull-local --untrusted + deploy"
AKLITED_TRUSTING = "aklited pull+deploy, verify_objects=False"
RAW_TRUSTING = "ostree pull-local + deploy"


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


def aklited_install(*, verify: bool) -> Callable[[SimDevice, Path, str], Awaitable[None]]:
    async def install(device: SimDevice, source: Path, commit: str) -> None:
        rootfs = device.rootfs(verify_objects=verify)
        await rootfs.pull(source_repo=source, commit=commit)
        await rootfs.deploy(commit=commit)

    return install


def raw_install(*, verify: bool) -> Callable[[SimDevice, Path, str], Awaitable[None]]:
    async def install(device: SimDevice, source: Path, commit: str) -> None:
        repo = device.sysroot / "ostree" / "repo"
        flags = ["--untrusted"] if verify else []
        await run("ostree", f"--repo={repo}", "pull-local", *flags, str(source), commit)
        await run(
            "ostree", "admin", "deploy", f"--sysroot={device.sysroot}", f"--os={OSNAME}", commit
        )

    return install


async def main(runs: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    contenders: dict[str, Callable[[SimDevice, Path, str], Awaitable[None]]] = {
        AKLITED: aklited_install(verify=True),
        RAW: raw_install(verify=True),
        AKLITED_TRUSTING: aklited_install(verify=False),
        RAW_TRUSTING: raw_install(verify=False),
    }
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    work = Path(tempfile.mkdtemp(prefix="aklited-bench-"))
    try:
        with loop_ext4(work / "usb.img", size_mib=700, mountpoint=work / "usb") as usb:
            tree = await sim.make_tree(work / "tree", version="2")
            await sim.write_random_files(
                tree / "usr" / "share" / "big", count=BIG_FILES, size=BIG_SIZE
            )
            await sim.write_random_files(
                tree / "usr" / "share" / "small", count=SMALL_FILES, size=SMALL_SIZE
            )
            source = await sim.init_repo(usb.mountpoint / "ostree_repo")
            started = time.perf_counter()
            commit = await sim.commit_tree(source, tree, subject="bench", version="2")
            print(
                f"commit of {BIG_FILES}x1 MiB + {SMALL_FILES}x10 KiB into an archive repo: "
                f"{time.perf_counter() - started:.1f} s"
            )
            usb.remount(options="ro,nosuid,nodev,noexec")
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
    finally:
        await sim.remove_tree(work)
    print(f"{runs} runs each, caches dropped before every run, times include a final sync")
    for name, values in timings.items():
        print(
            f"  {name:40s} median {statistics.median(values):6.3f} s"
            f"  (min {min(values):.3f}, max {max(values):.3f})"
        )
    median = {name: statistics.median(values) for name, values in timings.items()}
    verified = median[AKLITED] / median[RAW]
    trusting = median[AKLITED_TRUSTING] / median[RAW_TRUSTING]
    price = median[RAW] / median[RAW_TRUSTING]
    print(f"ratio aklited / ostree, both verifying every object: {verified:.2f}")
    print(f"ratio aklited / ostree, both trusting the drive:     {trusting:.2f}")
    print(f"cost of verifying every object (ostree alone):       {price:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
