"""tuf-conformance client-under-test that verifies TUF metadata the offline-bundle way.

The public tuf-conformance suite (fetched separately, never kept in this repository) drives
a client through a small command line (its CLIENT-CLI.md): ``init``, ``refresh`` and
``download``, with trusted metadata kept in ``--metadata-dir`` under unversioned names and
the repository served over loopback HTTP. This adapter turns each ``refresh``/``download``
into what a device does with an offline bundle:

1. the verifier loads the trusted root before anything is fetched (a device whose trusted
   root is unusable never reads the drive);
2. everything a bundle would carry is downloaded into a temporary ``tuf/`` directory: the
   root chain ``N.root.json`` from the trusted version + 1 until a 404, ``timestamp.json``,
   then ``snapshot.json`` and ``targets.json`` (consistent-snapshot repositories are asked
   for the versions the timestamp and snapshot name, saved under unversioned names) and
   every delegated role the snapshot lists, as ``<quoted role>.json``;
3. the verifier runs on that directory, with ``--metadata-dir`` as its trusted store;
4. for ``download``, each target is looked up in the verified metadata, fetched from
   ``--target-base-url`` (hash-prefixed name for consistent-snapshot repositories) unless
   a copy with the right length and hashes is already in ``--target-dir``, checked, and
   written there as ``<quoted target path>``.

Verifiers (``--backend``): ``aklited`` (``backend_aklited.py``: TrustWorkflow as
``aklite-bundle verify`` builds it) and ``python-tuf`` (``backend_python_tuf.py``: ngclient's
Updater with a fetcher that reads the bundle). Only the chosen one is imported, so a
python-tuf run does not depend on the state of the aklited tree. Target length and hash
checks are the adapter's own and the same for both, so the runs compare metadata
verification only. Exit codes: 0 success, 1 failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import cast

from adapter import AdapterError, BundleBuilder, Verifier, download_target, log, root_info

BACKENDS = {"aklited": "backend_aklited", "python-tuf": "backend_python_tuf"}


def load_verifier(backend: str, metadata_dir: Path, tuf_dir: Path) -> Verifier:
    """Import the back-end's module (only now) and make its verifier."""
    module = importlib.import_module(BACKENDS[backend])
    return cast(Verifier, module.Verifier(metadata_dir, tuf_dir))


def init(metadata_dir: Path, trusted_root: Path) -> None:
    """Seed the trusted directory with the given root (no checks, no requests)."""
    metadata_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trusted_root, metadata_dir / "root.json")


def update(
    backend: str,
    *,
    metadata_dir: Path,
    metadata_url: str,
    targets: list[str],
    target_dir: Path | None,
    target_base_url: str | None,
) -> None:
    """Refresh through a bundle, then download ``targets`` (refresh only when empty).

    Raises:
        Exception: Whatever the verifier or the adapter raises: the command fails.
    """
    with tempfile.TemporaryDirectory(prefix="tuf-conformance-bundle-") as tmp:
        tuf_dir = Path(tmp) / "tuf"
        tuf_dir.mkdir()
        verifier = load_verifier(backend, metadata_dir, tuf_dir)
        verifier.load_trusted_root()
        version, consistent = root_info(metadata_dir)
        BundleBuilder(metadata_url, tuf_dir).build(version, trusted_consistent=consistent)
        log.info("bundle: %s", sorted(p.name for p in tuf_dir.iterdir()))
        verifier.verify()
        if not targets:
            return
        if target_dir is None or target_base_url is None:
            raise AdapterError("download needs --target-dir and --target-base-url")
        _, consistent = root_info(metadata_dir)  # the verified, persisted root
        for name in targets:
            target = verifier.find_target(name)
            if target is None:
                raise AdapterError(f"{name}: not in the verified targets")
            download_target(
                target, base_url=target_base_url, target_dir=target_dir, consistent=consistent
            )


def build_parser() -> argparse.ArgumentParser:
    """The tuf-conformance client CLI, plus ``--backend``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    parser.add_argument("--metadata-dir", type=Path, required=True)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append", default=[])
    parser.add_argument("--target-dir", type=Path)
    parser.add_argument("--target-base-url")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="also library logs")
    commands = parser.add_subparsers(dest="command", required=True)
    init_parser = commands.add_parser("init", help="seed --metadata-dir with a trusted root")
    init_parser.add_argument("trusted_root", type=Path)
    commands.add_parser("refresh", help="verify the repository's metadata through a bundle")
    commands.add_parser("download", help="refresh, then download --target-name targets")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 1 on any failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "init" and not args.metadata_url:
        parser.error(f"{args.command} needs --metadata-url")
    if args.command == "download" and not args.target_name:
        parser.error("download needs --target-name")
    # The adapter's own steps are always logged (the suite shows them for failed tests).
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format=f"{args.backend}: %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if args.command == "init":
            init(args.metadata_dir, args.trusted_root)
        else:
            update(
                args.backend,
                metadata_dir=args.metadata_dir,
                metadata_url=args.metadata_url,
                targets=args.target_name if args.command == "download" else [],
                target_dir=args.target_dir,
                target_base_url=args.target_base_url,
            )
    except Exception as e:  # every failure is exit code 1 for the suite
        print(f"{args.backend}: {args.command} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
