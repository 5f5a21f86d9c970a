"""Time the TUF workflow on a bundle: 50 root rotations and a 1,000-target targets.json.

Run: .venv/bin/python bench/tuf_verify.py
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import structlog

from aklite_bundle.build import BundleOptions, TargetSpec, write_tuf
from aklite_bundle.keys import KeyKind
from aklite_bundle.signing import Keyring
from aklited.trust.source import DirectorySource
from aklited.trust.storage import OverlayTrustStore
from aklited.trust.workflow import TrustWorkflow

ROTATIONS = 50
TARGETS = 1000
RUNS = 7


def build(directory: Path, kind: KeyKind) -> bytes:
    ring = Keyring.generate(kind=kind, rsa_bits=2048)
    for _ in range(ROTATIONS):
        ring.rotate("root", kind=kind, rsa_bits=2048)
    targets = [
        TargetSpec(
            name=f"intel-corei7-64-lmp-{n}",
            version=n,
            hardware_id="intel-corei7-64",
            ostree_commit=f"{n:064x}",
            tags=("main",),
            apps={
                f"app{a}": f"hub.foundries.io/factory/app{a}@sha256:{n * 10 + a:064x}"
                for a in range(3)
            },
        )
        for n in range(1, TARGETS + 1)
    ]
    write_tuf(directory, ring, targets, BundleOptions(tag="main"))
    return ring.roots[0]


def verify_once(tuf_dir: Path, first_root: bytes) -> float:
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, first_root)
    start = time.perf_counter()
    verified = TrustWorkflow(source=DirectorySource(tuf_dir), store=store).refresh()
    elapsed = time.perf_counter() - start
    assert verified.root.version == ROTATIONS + 1
    assert len(verified.targets.signed.targets) == TARGETS
    return elapsed


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    kinds: tuple[KeyKind, ...] = ("ed25519", "rsa")
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp)
            first_root = build(bundle, kind)
            size = (bundle / "tuf" / "targets.json").stat().st_size
            times = [verify_once(bundle / "tuf", first_root) for _ in range(RUNS)]
        print(
            f"{kind:8} {ROTATIONS} root rotations + {TARGETS} targets ({size / 1024:.0f} KiB): "
            f"median {statistics.median(times) * 1000:.1f} ms, "
            f"min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms over {RUNS} runs"
        )


if __name__ == "__main__":
    main()
