"""Image load speed and memory: aklited's streamed load vs ``docker load`` of the same tar.

Builds app stores whose images carry random (incompressible) gzip layers, starts an isolated
dockerd, then for two image sizes times:

* aklited: ``ComposeApps.load`` in a child process (the docker-save tar is streamed from the
  store blobs, every blob hashed on the way), reporting the child's peak RSS;
* docker: ``docker load -i`` of the same tar written to a file beforehand.

Images are removed between runs so each run loads everything. Prints wall times, the ratio
aklited/docker (aim: <= 1.15) and peak RSS per size (aim: flat as images grow).

Run: .venv/bin/python bench/apps_load.py [--images 4] [--small-mib 50] [--large-mib 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aklite_bundle.appstore import (
    AppStoreBuilder,
    BuiltLayer,
    ServiceSpec,
    busybox_rootfs_tar,
    data_layer_tar,
)
from aklited.apps.adapter import ComposeApps
from aklited.apps.loader import write_docker_save_tar
from aklited_sim.dockerd import Dockerd, start_dockerd


def build_store(work: Path, *, images: int, layer_mib: int) -> dict[str, str]:
    """One app with ``images`` services, each image = busybox + one random layer."""
    store = work / f"store-{layer_mib}"
    builder = AppStoreBuilder(store, factory=f"bench{layer_mib}")
    base = builder.layer_from_tar(busybox_rootfs_tar(work / "rootfs.tar"))

    def data_layer(i: int) -> BuiltLayer:
        tar = data_layer_tar(
            work / f"data-{layer_mib}-{i}.tar",
            name=f"data/blob{i}",
            size=layer_mib << 20,
            seed=f"{layer_mib}/{i}".encode(),
        )
        try:
            return builder.layer_from_tar(tar, compresslevel=1)
        finally:
            tar.unlink()

    with ThreadPoolExecutor(max_workers=2) as pool:
        layers = list(pool.map(data_layer, range(images)))
    services = {
        f"s{i}": ServiceSpec(builder.image(f"img{i}", [base, layer]))
        for i, layer in enumerate(layers)
    }
    app = builder.app("bench", services)
    return {"store": str(store), "app": app.name, "uri": app.uri}


async def child_load(store: Path, name: str, uri: str, host: str, work: Path) -> None:
    """Run in the child: verify from the store, then time the load alone."""
    async with ComposeApps(
        store_root=store, compose_root=work / "compose", docker_host=host, work_dir=work
    ) as apps:
        verified = await apps.verify_local({name: uri})
        verify_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        await apps.load(verified)
        seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mib": peak_kib / 1024,
                "rss_before_load_mib": verify_kib / 1024,
            }
        )
    )


def aklited_load(spec: dict[str, str], engine: Dockerd, work: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            json.dumps({**spec, "host": engine.host, "work": str(work)}),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def docker_load(tar: Path, engine: Dockerd) -> float:
    start = time.perf_counter()
    engine.cli("load", "-q", "-i", str(tar))
    return time.perf_counter() - start


def clear_images(engine: Dockerd) -> None:
    ids = engine.cli("images", "-aq").stdout.split()
    if ids:
        engine.cli("rmi", "-f", *sorted(set(ids)))


async def write_tar(spec: dict[str, str], work: Path, host: str) -> Path:
    async with ComposeApps(
        store_root=Path(spec["store"]), compose_root=work / "compose", docker_host=host
    ) as apps:
        verified = await apps.verify_local({spec["app"]: spec["uri"]})
    tar = work / f"{Path(spec['store']).name}.tar"
    await write_docker_save_tar(Path(spec["store"]), verified[0].images, tar)
    return tar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--small-mib", type=int, default=50)
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        asyncio.run(
            child_load(
                Path(spec["store"]), spec["app"], spec["uri"], spec["host"], Path(spec["work"])
            )
        )
        return

    work = Path(tempfile.mkdtemp(prefix="aklited-bench-"))
    engine = start_dockerd()
    try:
        results = []
        for layer_mib in (args.small_mib, args.large_mib):
            spec = build_store(work, images=args.images, layer_mib=layer_mib)
            tar = asyncio.run(write_tar(spec, work, engine.host))
            total_mib = tar.stat().st_size / (1 << 20)
            ours, theirs, rss, before = [], [], [], []
            for _ in range(args.repeats):
                clear_images(engine)
                theirs.append(docker_load(tar, engine))
                clear_images(engine)
                run = aklited_load(spec, engine, work)
                ours.append(run["seconds"])
                rss.append(run["peak_rss_mib"])
                before.append(run["rss_before_load_mib"])
            clear_images(engine)
            tar.unlink()
            print(f"{layer_mib} MiB layers, seconds: aklited {ours}, docker {theirs}")
            results.append((layer_mib, total_mib, min(ours), min(theirs), max(before), max(rss)))
        print(
            f"{'layer MiB':>9} {'total MiB':>9} {'aklited s':>9} {'docker s':>9} {'ratio':>6} "
            f"{'RSS before load MiB':>19} {'peak RSS MiB':>12}"
        )
        for layer_mib, total, ours_s, theirs_s, before_load, peak in results:
            print(
                f"{layer_mib:>9} {total:>9.0f} {ours_s:>9.2f} {theirs_s:>9.2f} "
                f"{ours_s / theirs_s:>6.2f} {before_load:>19.1f} {peak:>12.1f}"
            )
    finally:
        engine.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
