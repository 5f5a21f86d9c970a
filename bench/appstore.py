"""The app the app benchmarks load and verify: services whose images are busybox plus one
layer of random bytes each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aklite_bundle.appstore import (
    AppStoreBuilder,
    BuiltApp,
    BuiltLayer,
    ServiceSpec,
    busybox_rootfs_tar,
    data_layer_tar,
)


def random_layer_app(
    builder: AppStoreBuilder, work: Path, *, name: str, images: int, layer_mib: int, seed: str
) -> BuiltApp:
    """App ``name`` of ``images`` services ``s0``, ``s1``, ...: each image busybox + one
    ``layer_mib`` MiB layer of random bytes (``seed/<index>`` seeds it), built into
    ``builder``'s store; ``work`` holds the tars meanwhile."""
    base = builder.layer_from_tar(busybox_rootfs_tar(work / "rootfs.tar"))

    def data_layer(index: int) -> BuiltLayer:
        tar = data_layer_tar(
            work / f"data-{seed.replace('/', '-')}-{index}.tar",
            name=f"data/blob{index}",
            size=layer_mib << 20,
            seed=f"{seed}/{index}".encode(),
        )
        try:
            # gzip level 1: random bytes do not compress at any level; 1 is the quickest.
            return builder.layer_from_tar(tar, compresslevel=1)
        finally:
            tar.unlink()

    with ThreadPoolExecutor(max_workers=2) as pool:
        layers = list(pool.map(data_layer, range(images)))
    services = {
        f"s{i}": ServiceSpec(builder.image(f"img{i}", [base, layer]))
        for i, layer in enumerate(layers)
    }
    return builder.app(name, services)
