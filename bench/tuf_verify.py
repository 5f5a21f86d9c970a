"""Time the TUF workflow on a bundle: 50 root rotations and a 1,000-target targets.json.

aklited's ``TrustWorkflow`` against python-tuf on the same TUF-dialect files (lowercase
``_type``, ``scheme``, hex signatures), written here with python-tuf's own metadata API so
that python-tuf accepts them: root 1 trusted, roots 2..51 each signed by the outgoing and
the incoming root key, then timestamp, snapshot and targets (hashes and lengths in the
meta, as bundles carry them). Both sides read the files from the same directory and
verify every signature of the chain; the first root is trusted up front.

The baseline is python-tuf's verifier, ``TrustedMetadataSet`` (what ``tuf.ngclient.Updater``
runs: ``update_root`` per rotation, then timestamp, snapshot, targets), fed the files'
bytes: the same work as aklited's, which keeps the verified copies in memory. python-tuf's
``Updater`` with a fetcher reading the directory is timed as well and printed: it also
writes every file it accepted to its metadata directory.

aklited's time on the same rotations and targets in Foundries' dialect (what fioctl
writes; python-tuf cannot read it) is printed for reference.

Run: .venv/bin/python bench/tuf_verify.py [--quick] [--rows FILE]
(--quick: 5 runs instead of 7)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

# python-tuf and securesystemslib re-export their public names without an ``__all__`` that
# mypy can read (``from x import y`` / ``__all__ = [y.__name__]``): strict mode sees them as
# private, hence the ignores on their documented import paths.
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from aklite_bundle.build import BundleOptions, TargetSpec, write_tuf
from aklite_bundle.keys import KeyKind
from aklite_bundle.signing import Keyring
from aklited.trust.keys import Dialect
from aklited.trust.source import DirectorySource
from aklited.trust.storage import OverlayTrustStore
from aklited.trust.workflow import TrustWorkflow
from bench.results import Row, add_rows_option, emit

ROTATIONS = 50
TARGETS = 1000
RSA_BITS = 2048
KINDS: tuple[KeyKind, ...] = ("ed25519", "rsa")
# aklited may take up to 1.5x python-tuf's time: both are Python over the same library.
AIM = 1.5
ROLES = ("root", "timestamp", "snapshot", "targets")
SERIALIZER = JSONSerializer(compact=False)


def target_specs() -> list[TargetSpec]:
    """1,000 LmP targets with three apps each, as a factory's targets.json lists them."""
    return [
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


# ---- TUF dialect, written by python-tuf -----------------------------------------------------


def new_signer(kind: KeyKind) -> CryptoSigner:
    if kind == "rsa":
        return CryptoSigner.generate_rsa(size=RSA_BITS)
    return CryptoSigner.generate_ed25519()


def write_metadata(path: Path, md: Metadata[Any]) -> bytes:
    raw = bytes(md.to_bytes(SERIALIZER))
    path.write_bytes(raw)
    return raw


def meta_file(version: int, raw: bytes) -> MetaFile:
    return MetaFile.from_data(version, raw, ["sha256"])


def build_tuf_dialect(directory: Path, kind: KeyKind) -> bytes:
    """Write the TUF-dialect set into ``directory``; return the first root's bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    signers = {role: new_signer(kind) for role in ROLES}
    root = Metadata(Root(expires=expires, consistent_snapshot=False))
    for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)
    root.sign(signers["root"])
    first = write_metadata(directory / "1.root.json", root)
    for _ in range(ROTATIONS):
        old, new = signers["root"], new_signer(kind)
        root.signed.revoke_key(old.public_key.keyid, "root")
        root.signed.add_key(new.public_key, "root")
        root.signed.version += 1
        root.signatures.clear()
        root.sign(old, append=True)
        root.sign(new, append=True)
        write_metadata(directory / f"{root.signed.version}.root.json", root)
        signers["root"] = new

    targets = Metadata(Targets(expires=expires))
    for spec in target_specs():
        targets.signed.targets[spec.name] = TargetFile.from_dict(spec.entry(), spec.name)
    targets.sign(signers["targets"])
    targets_raw = write_metadata(directory / "targets.json", targets)
    snapshot = Metadata(Snapshot(expires=expires))
    snapshot.signed.meta["targets.json"] = meta_file(1, targets_raw)
    snapshot.sign(signers["snapshot"])
    snapshot_raw = write_metadata(directory / "snapshot.json", snapshot)
    timestamp = Metadata(Timestamp(expires=expires))
    timestamp.signed.snapshot_meta = meta_file(1, snapshot_raw)
    timestamp.sign(signers["timestamp"])
    write_metadata(directory / "timestamp.json", timestamp)
    return first


# ---- Foundries dialect, written by aklite-bundle ---------------------------------------------


def build_foundries_dialect(directory: Path, kind: KeyKind) -> bytes:
    """Write the same rotations and targets as fioctl would; return the first root's bytes."""
    ring = Keyring.generate(kind=kind, rsa_bits=RSA_BITS)
    for _ in range(ROTATIONS):
        ring.rotate("root", kind=kind, rsa_bits=RSA_BITS)
    write_tuf(directory, ring, target_specs(), BundleOptions(tag="main"))
    return ring.roots[0]


# ---- the contenders ---------------------------------------------------------------------------


def aklited_once(tuf_dir: Path, first_root: bytes, dialect: Dialect) -> float:
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, first_root)
    start = time.perf_counter()
    verified = TrustWorkflow(source=DirectorySource(tuf_dir), store=store).refresh()
    elapsed = time.perf_counter() - start
    assert verified.dialect == dialect
    assert verified.root.version == ROTATIONS + 1
    assert len(verified.targets.signed.targets) == TARGETS
    return elapsed


def python_tuf_once(tuf_dir: Path, first_root: bytes) -> float:
    """python-tuf's verifier on the files, in the order ``Updater.refresh`` feeds it."""
    start = time.perf_counter()
    trusted = TrustedMetadataSet(first_root, EnvelopeType.METADATA)
    version = trusted.root.version + 1
    while (path := tuf_dir / f"{version}.root.json").is_file():
        trusted.update_root(path.read_bytes())
        version += 1
    trusted.update_timestamp((tuf_dir / "timestamp.json").read_bytes())
    trusted.update_snapshot((tuf_dir / "snapshot.json").read_bytes())
    trusted.update_targets((tuf_dir / "targets.json").read_bytes())
    elapsed = time.perf_counter() - start
    assert trusted.root.version == ROTATIONS + 1
    assert len(trusted.targets.targets) == TARGETS
    return elapsed


class DirectoryFetcher(FetcherInterface):
    """Serves ``Updater``'s downloads from a directory: the URL's last part is the file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = self.directory / url.rpartition("/")[2]
        if not path.is_file():
            raise tuf_exceptions.DownloadHTTPError(f"{path.name} not found", 404)
        return iter([path.read_bytes()])


def python_tuf_updater_once(tuf_dir: Path, first_root: bytes, metadata_dir: Path) -> float:
    """python-tuf's whole client: the verifier plus a file written per accepted document."""
    metadata_dir.mkdir()
    start = time.perf_counter()
    updater = Updater(
        str(metadata_dir),
        "https://bundle.invalid/tuf/",
        fetcher=DirectoryFetcher(tuf_dir),
        bootstrap=first_root,
    )
    updater.refresh()
    elapsed = time.perf_counter() - start
    assert updater.get_targetinfo(target_specs()[-1].name) is not None
    return elapsed


# ---- the runs ---------------------------------------------------------------------------------


@dataclass
class KindResult:
    kind: KeyKind
    targets_kib: float
    aklited: list[float]
    python_tuf: list[float]
    updater: list[float]
    foundries: list[float]


def times(runs: int, once: Callable[[int], float]) -> list[float]:
    return [once(index) for index in range(runs)]


def measure(kind: KeyKind, runs: int) -> KindResult:
    with tempfile.TemporaryDirectory(prefix="aklited-bench-tuf-") as tmp:
        work = Path(tmp)
        tuf_dir = work / "tuf-dialect" / "tuf"
        first = build_tuf_dialect(tuf_dir, kind)
        ours: list[float] = []
        theirs: list[float] = []
        for index in range(runs):
            # Alternate who goes first, so neither always meets the warmer caches.
            if index % 2:
                theirs.append(python_tuf_once(tuf_dir, first))
            ours.append(aklited_once(tuf_dir, first, Dialect.TUF))
            if not index % 2:
                theirs.append(python_tuf_once(tuf_dir, first))
        updater = times(runs, lambda i: python_tuf_updater_once(tuf_dir, first, work / f"md{i}"))
        foundries_first = build_foundries_dialect(work / "foundries", kind)
        foundries_dir = work / "foundries" / "tuf"
        foundries = times(
            runs, lambda _: aklited_once(foundries_dir, foundries_first, Dialect.FOUNDRIES)
        )
        return KindResult(
            kind=kind,
            targets_kib=(tuf_dir / "targets.json").stat().st_size / 1024,
            aklited=ours,
            python_tuf=theirs,
            updater=updater,
            foundries=foundries,
        )


def ms(values: list[float]) -> list[float]:
    return [value * 1000 for value in values]


def describe(name: str, values: list[float]) -> str:
    return (
        f"{name} median {statistics.median(values) * 1000:.1f} ms "
        f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"
    )


def print_result(result: KindResult, runs: int) -> None:
    print(
        f"{result.kind:8} {ROTATIONS} root rotations + {TARGETS} targets "
        f"(TUF dialect targets.json {result.targets_kib:.0f} KiB), {runs} runs:"
    )
    print("  " + describe("aklited, TUF dialect:              ", result.aklited))
    print("  " + describe("python-tuf TrustedMetadataSet:     ", result.python_tuf))
    print("  " + describe("python-tuf Updater (local fetcher):", result.updater))
    print("  " + describe("aklited, Foundries dialect:        ", result.foundries))


def row(result: KindResult) -> Row:
    updater = statistics.median(result.updater) * 1000
    foundries = statistics.median(result.foundries) * 1000
    return Row(
        bench="tuf_verify",
        figure=f"TUF: {ROTATIONS} root rotations + 1,000 targets ({result.kind})",
        unit="ms",
        aklited=ms(result.aklited),
        baseline_name="python-tuf",
        baseline=ms(result.python_tuf),
        aim=AIM,
        note=(
            "same TUF-dialect files, written with python-tuf's metadata API; python-tuf "
            "7.0.1 ran its verifier (ngclient's TrustedMetadataSet: update_root 2..51, "
            "timestamp, snapshot, targets) on the files' bytes; its whole Updater with a "
            f"local fetcher (which also writes each accepted file) took {updater:.0f} ms; "
            f"aklited on the same content in Foundries' dialect: {foundries:.0f} ms"
        ),
        extra={"python_tuf_updater_ms": updater, "aklited_foundries_dialect_ms": foundries},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs instead of 7")
    add_rows_option(parser)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    runs = 5 if args.quick else 7
    rows = []
    for kind in KINDS:
        result = measure(kind, runs)
        print_result(result, runs)
        rows.append(row(result))
    emit(rows, args.rows)


if __name__ == "__main__":
    main()
