"""App blob verification throughput: aklited's verify of a drive's app store vs sha256sum.

An app store (composectl layout, written by ``AppStoreBuilder``) on a loop-mounted ext4
"USB drive", remounted read-only as a bundle drive is: one app whose images are busybox plus
one layer of random (incompressible) bytes each, ~300 MB in all (~100 MB with ``--quick``).

* aklited: ``ComposeApps.verify`` of the app on the drive, the deepest check aklited makes
  of a drive's apps (the one before a copy): every node of the app's Merkle tree read and
  hashed whole (app manifest, compose bundle and its index, image roots, manifests,
  configs, layers), the compose file rendered, nothing trusted by size alone.
* baseline: one ``sha256sum`` process over the same blob files.

The page cache is dropped before every run and the order alternates. Throughput is the
blobs' bytes over the wall time, in MB/s (10^6 bytes). The aim: aklited at least 0.95x
sha256sum's throughput. aklited's blob hashing alone (``verify_blob_file`` per blob, no
tree walk, no compose) is timed too and printed, to tell hashing from the walk around it.

Run as root: flock /tmp/aklited-udev.lock .venv/bin/python bench/blob_verify.py
[--quick] [--rows FILE]
(--quick: ~100 MB, 3 runs; else ~300 MB, 5 runs)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from aklite_bundle.appstore import AppStoreBuilder
from aklited.apps.adapter import ComposeApps
from aklited.apps.blobs import Blob, blob_path, store_files, verify_blob_file
from aklited_sim.loopfs import loop_ext4
from bench.appstore import random_layer_app
from bench.ostree_install import drop_caches
from bench.results import Row, add_rows_option, emit

AIM = 0.95
MB = 1e6
IMAGES = 4
APP = "bench"


@dataclass(frozen=True)
class Store:
    """The app on the drive and the blob files its tree names."""

    root: Path
    uri: str
    blobs: tuple[Blob, ...]

    @property
    def bytes(self) -> int:
        return sum(blob.size for blob in self.blobs)

    def paths(self) -> list[Path]:
        return [blob_path(self.root, blob.hex) for blob in self.blobs]


def build_store(root: Path, work: Path, *, layer_mib: int) -> str:
    """One app of ``IMAGES`` services, each image busybox + one random layer; its URI."""
    builder = AppStoreBuilder(root, factory="bench")
    app = random_layer_app(
        builder, work, name=APP, images=IMAGES, layer_mib=layer_mib, seed="blob_verify"
    )
    return app.uri


async def aklited_verify(store: Path, uri: str, work: Path) -> tuple[Blob, ...]:
    apps = ComposeApps(store_root=work / "local-store", compose_root=work / "compose")
    async with apps:
        verified = await apps.verify(store, {APP: uri})
    return verified[0].blobs()


def time_aklited(store: Store, work: Path) -> float:
    start = time.perf_counter()
    blobs = asyncio.run(aklited_verify(store.root, store.uri, work))
    elapsed = time.perf_counter() - start
    assert {b.hex for b in blobs} == {b.hex for b in store.blobs}
    return elapsed


def time_hashing_alone(store: Store) -> float:
    """aklited's chunked hashing of every blob, without the tree walk around it."""
    files = store_files(store.root)
    start = time.perf_counter()
    try:
        for blob in store.blobs:
            verify_blob_file(files, blob, what="bench")
    finally:
        files.close()
    return time.perf_counter() - start


def time_sha256sum(store: Store) -> float:
    paths = store.paths()
    start = time.perf_counter()
    done = subprocess.run(
        ["sha256sum", *map(str, paths)], capture_output=True, text=True, check=True
    )
    elapsed = time.perf_counter() - start
    # Each blob's name is its digest: the output proves every byte was read.
    sums = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}
    assert all(sums[str(path)] == path.name for path in paths)
    return elapsed


def cold(measure: Callable[[], float]) -> float:
    """``measure`` with nothing of the drive in the page cache."""
    drop_caches()
    return measure()


@dataclass
class Timings:
    aklited: list[float]
    sha256sum: list[float]
    hashing: list[float]


def time_runs(store: Store, work: Path, runs: int) -> Timings:
    result = Timings([], [], [])
    for index in range(runs):
        # Alternate who goes first: the drive's first read after a drop may differ.
        if index % 2:
            result.sha256sum.append(cold(lambda: time_sha256sum(store)))
        result.aklited.append(cold(lambda: time_aklited(store, work)))
        if not index % 2:
            result.sha256sum.append(cold(lambda: time_sha256sum(store)))
        result.hashing.append(cold(lambda: time_hashing_alone(store)))
    return result


def throughput(store: Store, seconds: Sequence[float]) -> list[float]:
    return [store.bytes / MB / value for value in seconds]


def describe(name: str, values: list[float]) -> str:
    return (
        f"  {name:38s} median {statistics.median(values):7.1f} MB/s"
        f"  (min {min(values):.1f}, max {max(values):.1f})"
    )


def report(store: Store, timings: Timings) -> Row:
    ours = throughput(store, timings.aklited)
    theirs = throughput(store, timings.sha256sum)
    hashing = throughput(store, timings.hashing)
    print(f"{len(store.blobs)} blobs, {store.bytes / MB:.0f} MB, caches dropped before every run")
    print(describe("aklited ComposeApps.verify", ours))
    print(describe("aklited verify_blob_file per blob", hashing))
    print(describe("sha256sum", theirs))
    return Row(
        bench="blob_verify",
        figure=f"app blob verification throughput ({store.bytes / MB:.0f} MB)",
        unit="MB/s",
        aklited=ours,
        baseline_name="sha256sum of the same blob files",
        baseline=theirs,
        aim=AIM,
        better="higher",
        note=(
            f"ComposeApps.verify of one app ({IMAGES} images, {len(store.blobs)} blobs) on a "
            "read-only loop-mounted ext4, page cache dropped before each run; aklited's "
            f"hashing alone (no tree walk, no compose): {statistics.median(hashing):.0f} MB/s"
        ),
        extra={"hashing_alone_mb_s": statistics.median(hashing)},
    )


async def blob_list(store: Path, uri: str, work: Path) -> Store:
    return Store(root=store, uri=uri, blobs=await aklited_verify(store, uri, work))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~100 MB and 3 runs")
    add_rows_option(parser)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    layer_mib, runs = (24, 3) if args.quick else (72, 5)
    work = Path(tempfile.mkdtemp(prefix="aklited-bench-blobs-"))
    try:
        # gzip's temporary copy of a layer sits beside the blobs while each is written.
        size_mib = IMAGES * layer_mib * 2 + 200
        with loop_ext4(work / "usb.img", size_mib=size_mib, mountpoint=work / "usb") as usb:
            root = usb.mountpoint / "apps"
            uri = build_store(root, work, layer_mib=layer_mib)
            usb.remount(options="ro,nosuid,nodev,noexec")
            store = asyncio.run(blob_list(root, uri, work))
            timings = time_runs(store, work, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit([report(store, timings)], args.rows)


if __name__ == "__main__":
    main()
