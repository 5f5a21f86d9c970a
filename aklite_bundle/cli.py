"""``aklite-bundle``: make, sign, inspect and verify offline-update bundles.

Bundles are written in the layout and metadata dialect of ``fioctl targets
offline-update`` (Ed25519 or RSA keys, base64 signatures, canonical JSON), so a device
that accepts Foundries bundles accepts these when it trusts the keyring's root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aklite_bundle.build import BuildError, BundleOptions, TargetSpec, create_bundle
from aklite_bundle.content import verify_target_content
from aklite_bundle.keys import KeyKind
from aklite_bundle.signing import (
    ROLES,
    Keyring,
    add_signatures,
    expires_in,
    new_keyring_dir,
)
from aklited.bundle.select import bundle_app_uris, target_apps
from aklited.bundle.verify import BUNDLE_TARGETS, BundleLayout, check_bundle_targets
from aklited.drivefs import BundleFiles
from aklited.errors import AkliteError, MetadataMissingError
from aklited.log import configure_logging
from aklited.outcomes import StatusCode
from aklited.trust.metadata import format_time, load_json
from aklited.trust.source import DEFAULT_LIMITS, DirectorySource, read_bounded
from aklited.trust.storage import DirectoryTrustStore
from aklited.trust.workflow import TrustWorkflow, VerifiedMetadata

if TYPE_CHECKING:
    from aklited.apps.adapter import ComposeApps

DESCRIPTION = """\
Make, sign, inspect and verify offline update bundles (the layout fioctl writes:
tuf/, ostree_repo/, apps/).

Typical use:
  aklite-bundle keys init ./keys                      # keys + a first root (1.root.json)
  aklite-bundle create ./bundle --keys ./keys --name rpi4-lmp-42 --version 42 \\
      --hwid raspberrypi4-64 --ostree-commit <sha256> --ostree-repo ./repo --tag main
  aklite-bundle show ./bundle
  aklite-bundle verify ./bundle/tuf --trusted ./trusted   # seed ./trusted with root.json

verify refuses (11) a drive whose timestamp or snapshot is older than the trusted copy;
--allow-stored accepts it and uses the trusted copy instead, as a device does.

Copy keys/1.root.json to the device as <uptane_metadata_path>/<ci|prod>/1.root.json so it
trusts bundles signed with these keys.
"""


def _threshold(text: str) -> tuple[str, int]:
    role, sep, count = text.partition("=")
    if not sep or role not in ROLES or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected ROLE=N with ROLE in {', '.join(ROLES)}")
    return role, int(count)


def _app(text: str) -> tuple[str, str]:
    name, sep, uri = text.partition("=")
    if not sep or not name or "@sha256:" not in uri:
        raise argparse.ArgumentTypeError("expected NAME=URI with URI ending @sha256:<hex>")
    return name, uri


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so documentation and tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="aklite-bundle",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress on stderr (default: warnings)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = commands.add_parser("keys", help="create or rotate signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = key_commands.add_parser(
        "init", help="make root/targets/snapshot/timestamp keys and a signed 1.root.json"
    )
    init.add_argument("dir", type=Path, help="keyring directory to create")
    init.add_argument("--type", choices=("ed25519", "rsa"), default="ed25519", help="key type")
    init.add_argument(
        "--threshold",
        type=_threshold,
        action="append",
        default=[],
        metavar="ROLE=N",
        help="signatures a role needs (as many keys are made); repeatable, default 1",
    )
    init.add_argument("--rsa-bits", type=int, default=4096, help="RSA key size (default 4096)")
    rotate = key_commands.add_parser(
        "rotate", help="replace one role's keys and sign the next N.root.json"
    )
    rotate.add_argument("dir", type=Path, help="keyring directory")
    rotate.add_argument("--role", choices=ROLES, default="root", help="role whose keys change")
    rotate.add_argument("--type", choices=("ed25519", "rsa"), default="ed25519", help="key type")

    create = commands.add_parser("create", help="write a signed bundle for one or more targets")
    create.add_argument("dst", type=Path, help="bundle directory to write")
    create.add_argument("--keys", type=Path, required=True, help="keyring directory")
    create.add_argument(
        "--target-json", type=Path, help="JSON file: a target object or a list of them"
    )
    create.add_argument("--name", help="target name, e.g. raspberrypi4-64-lmp-42")
    create.add_argument("--version", help="target version (custom.version)")
    create.add_argument("--hwid", help="hardware id the target is for")
    create.add_argument("--ostree-commit", help="sha256 of the target's OSTree commit")
    create.add_argument(
        "--target-tag", action="append", default=[], help="custom.tags entry (default: --tag)"
    )
    create.add_argument(
        "--app", type=_app, action="append", default=[], metavar="NAME=URI", help="target app"
    )
    create.add_argument("--tag", default="", help="bundle tag (x-fio-offline-bundle.tag)")
    create.add_argument("--prod", action="store_true", help="a production bundle (default: ci)")
    create.add_argument("--ostree-repo", type=Path, help="repo to copy the OSTree commits from")
    create.add_argument("--app-store", type=Path, help="composectl app store to copy apps from")
    create.add_argument("--expires-in-days", type=float, default=30.0, help="metadata lifetime")
    create.add_argument(
        "--metadata-version", type=int, default=1, help="version of timestamp/snapshot/targets"
    )
    create.add_argument(
        "--roots-from", type=int, help="first N.root.json to include (default: all)"
    )

    sign = commands.add_parser(
        "sign", help="add this keyring's targets signatures to bundle-targets.json"
    )
    sign.add_argument("bundle", type=Path, help="bundle directory")
    sign.add_argument("--keys", type=Path, required=True, help="keyring directory")

    show = commands.add_parser("show", help="print what a bundle holds")
    show.add_argument("bundle", type=Path, help="bundle directory")

    verify = commands.add_parser(
        "verify", help="verify a tuf/ directory against trusted metadata; print its targets"
    )
    verify.add_argument("tuf_dir", type=Path, help="the bundle's tuf/ directory")
    verify.add_argument(
        "--trusted", type=Path, required=True, help="trusted directory (seed it with root.json)"
    )
    verify.add_argument(
        "--content",
        action="store_true",
        help="also verify every byte an install would verify, for every target the bundle "
        "names: the OSTree commit object by object, every app blob, manifest and archive",
    )
    verify.add_argument(
        "--platform",
        default=None,
        help="with --content: the device platform app images are chosen for "
        "(e.g. linux/arm64; default: this machine's)",
    )
    verify.add_argument(
        "--allow-stored",
        action="store_true",
        help="when the drive's metadata is older than the trusted directory's (a rollback), "
        "use the trusted copy as the device does instead of failing with 11",
    )
    return parser


def _targets_from_args(args: argparse.Namespace) -> list[TargetSpec]:
    if args.target_json is not None:
        data = json.loads(args.target_json.read_text())
        items = data if isinstance(data, list) else [data]
        return [TargetSpec.from_json(item) for item in items]
    missing = [f for f in ("name", "version", "hwid", "ostree_commit") if not getattr(args, f)]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise BuildError(f"describe the target with --target-json or {flags}")
    tags = tuple(args.target_tag) or ((args.tag,) if args.tag else ())
    return [
        TargetSpec(
            name=args.name,
            version=args.version,
            hardware_id=args.hwid,
            ostree_commit=args.ostree_commit,
            tags=tags,
            apps=dict(args.app),
        )
    ]


async def _create(args: argparse.Namespace) -> int:
    ring = Keyring.load(args.keys)
    targets = _targets_from_args(args)
    options = BundleOptions(
        bundle_type="prod" if args.prod else "ci",
        tag=args.tag,
        metadata_version=args.metadata_version,
        expires=expires_in(args.expires_in_days),
        roots_from=args.roots_from,
    )
    await create_bundle(
        args.dst,
        ring=ring,
        targets=targets,
        options=options,
        ostree_repo=args.ostree_repo,
        app_store=args.app_store,
    )
    print(f"bundle written to {args.dst} ({', '.join(t.name for t in targets)})")
    return 0


def _sign(args: argparse.Namespace) -> int:
    ring = Keyring.load(args.keys)
    path = args.bundle / BUNDLE_TARGETS
    raw = path.read_bytes()
    document = load_json(raw, str(path))
    signed = document["signed"]
    updated = add_signatures(raw, signed, ring.roles["targets"])
    path.write_bytes(updated)
    count = len(json.loads(updated)["signatures"])
    print(f"{path}: {count} signature(s)")
    return 0


def _show(args: argparse.Namespace) -> int:
    # The drive is read as the device reads it: nothing outside the bundle, bounded reads.
    bundle = Path(os.path.realpath(args.bundle))
    tuf_dir = bundle / "tuf"
    summary: dict[str, Any] = {"bundle": str(args.bundle)}
    summary["roots"] = DirectorySource(tuf_dir, boundary=bundle).root_versions()
    for name in ("timestamp", "snapshot", "targets", "bundle-targets"):
        path = tuf_dir / f"{name}.json"
        raw = read_bounded(path, limit=DEFAULT_LIMITS.targets, boundary=bundle)
        if raw is None:
            summary[name] = None
            continue
        document = load_json(raw, str(path))
        signed = document.get("signed") if isinstance(document, dict) else None
        if not isinstance(signed, dict):
            summary[name] = "not a metadata file"
            continue
        entry: dict[str, Any] = {"version": signed.get("version"), "expires": signed.get("expires")}
        if name == "targets":
            entry["targets"] = {
                target: {
                    "version": info.get("custom", {}).get("version"),
                    "hardwareIds": info.get("custom", {}).get("hardwareIds"),
                    "tags": info.get("custom", {}).get("tags"),
                    "ostree_commit": info.get("hashes", {}).get("sha256"),
                    "apps": {
                        app: v.get("uri")
                        for app, v in info.get("custom", {}).get("docker_compose_apps", {}).items()
                    },
                }
                for target, info in signed.get("targets", {}).items()
            }
        if name == "bundle-targets":
            entry["bundle"] = signed.get("x-fio-offline-bundle")
        summary[name] = entry
    summary["apps"] = sorted(bundle_app_uris(BundleLayout(root=bundle)))
    with BundleFiles(bundle) as files:
        summary["ostree_repo"] = files.exists("ostree_repo/config")
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def verify_tuf_dir(tuf_dir: Path, trusted: Path, *, allow_stored: bool = False) -> dict[str, Any]:
    """Run the workflow on ``tuf_dir`` with the trusted directory ``trusted``.

    Args:
        tuf_dir: The drive's ``tuf/`` directory.
        trusted: The trusted directory.
        allow_stored: A ``tuf_dir`` older than ``trusted`` falls back to the trusted copy
            (the device's behaviour) instead of failing.

    Returns:
        A JSON-ready summary: versions, the bundle manifest (if any), every target the
        delegation search resolves, and ``rollback`` when the trusted copy was used.

    Raises:
        TrustError: 4, 11 (a rollback too, unless ``allow_stored``), 12, 14 or 15.
    """
    if not (trusted / "root.json").is_file():
        raise MetadataMissingError(
            f"{trusted}/root.json: missing; seed the trusted directory with the root you trust"
        )
    source = DirectorySource(tuf_dir, boundary=Path(os.path.realpath(tuf_dir)).parent)
    workflow = TrustWorkflow(
        source=source,
        store=DirectoryTrustStore(trusted),
        fallback_to_store=allow_stored,
        label_prefix=f"{tuf_dir.name}/",
    )
    root = workflow.update_root()
    bundle: dict[str, Any] | None = None
    raw = source.fetch_bundle_targets()
    if raw is not None:
        manifest = check_bundle_targets(
            raw,
            root=root.signed,
            dialect=workflow.trusted.dialect,
            reference_time=workflow.reference_time,
            device_type=None,
            tags=(),
        )
        bundle = {
            "type": manifest.bundle_type,
            "tag": manifest.tag,
            "targets": list(manifest.targets),
            "expires": format_time(manifest.expires),
        }
    return _summary(workflow.update_top_level(), bundle)


def _summary(verified: VerifiedMetadata, bundle: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "dialect": verified.dialect.value,
        "root_version": verified.root.version,
        "timestamp_version": verified.timestamp.version,
        "snapshot_version": verified.snapshot.version,
        "targets_version": verified.targets.version,
        "from_store": verified.from_store,
        "rollback": verified.rollback,
        "bundle": bundle,
        "delegated_roles": {name: role.version for name, role in verified.delegated.items()},
        "delegations_truncated": verified.delegations_truncated,
        "targets": {
            name: {
                "length": t.length,
                "hashes": dict(t.hashes),
                "custom": dict(t.custom),
                "role": verified.target_roles[name],
            }
            for name, t in verified.all_targets.items()
        },
    }


async def verify_bundle_content(
    bundle: Path, summary: dict[str, Any], *, platform: str | None
) -> dict[str, str]:
    """Verify the content of every target the bundle names (all targets when it names none).

    Returns:
        Per target, what was verified.

    Raises:
        AkliteError: 8 content missing, 50 the drive cannot be read, 70 content unsafe or
            not matching, as an install would answer.
    """
    names = summary["bundle"]["targets"] if summary["bundle"] else sorted(summary["targets"])

    def apps_reader() -> ComposeApps:
        from aklited.apps.adapter import ComposeApps  # noqa: PLC0415 - Docker libraries
        from aklited.apps.platforms import Platform  # noqa: PLC0415

        return ComposeApps(platform=Platform.parse(platform) if platform else None)

    result: dict[str, str] = {}
    for name in names:
        target = summary["targets"].get(name)
        if target is None:
            continue
        commit = str(target["hashes"].get("sha256", ""))
        report = await verify_target_content(
            bundle, commit, target_apps(target["custom"]), apps_reader=apps_reader
        )
        done = [f"OSTree commit {commit[:12]}: {report.objects} file objects verified"]
        if report.apps:
            done.append(f"{report.apps} apps verified ({report.blobs} blobs)")
        result[name] = "; ".join(done)
    return result


async def _run(args: argparse.Namespace) -> int:
    match args.command:
        case "keys" if args.keys_command == "init":
            kind: KeyKind = args.type
            ring = await asyncio.to_thread(
                new_keyring_dir,
                args.dir,
                kind=kind,
                thresholds=dict(args.threshold),
                rsa_bits=args.rsa_bits,
            )
            print(f"keys and 1.root.json written to {args.dir} (root version {ring.root_version})")
            return 0
        case "keys":
            ring = await asyncio.to_thread(Keyring.load, args.dir)
            ring.rotate(args.role, kind=args.type)
            await asyncio.to_thread(ring.save, args.dir)
            print(f"{args.dir}/{ring.root_version}.root.json written ({args.role} keys replaced)")
            return 0
        case "create":
            return await _create(args)
        case "sign":
            return await asyncio.to_thread(_sign, args)
        case "show":
            return await asyncio.to_thread(_show, args)
        case _:
            summary = await asyncio.to_thread(
                verify_tuf_dir, args.tuf_dir, args.trusted, allow_stored=args.allow_stored
            )
            if args.content:
                tuf_dir = Path(await asyncio.to_thread(os.path.realpath, args.tuf_dir))
                summary["content"] = await verify_bundle_content(
                    tuf_dir.parent, summary, platform=args.platform
                )
            if summary["rollback"] is not None:
                print(
                    f"note: {summary['rollback']}; the trusted directory's metadata was used "
                    "instead (--allow-stored)",
                    file=sys.stderr,
                )
            print(json.dumps(summary, indent=2, sort_keys=True))
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aklite-bundle``; returns the exit code."""
    args = build_parser().parse_args(argv)
    # Logs go to stderr so that stdout carries only the JSON or text a script reads.
    configure_logging(target="console", level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return asyncio.run(_run(args))
    except AkliteError as e:
        print(f"aklite-bundle: error: {e.message}", file=sys.stderr)
        return int(e.code)
    except (BuildError, OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        print(f"aklite-bundle: error: {e}", file=sys.stderr)
        return int(StatusCode.UNKNOWN_ERROR)


if __name__ == "__main__":
    sys.exit(main())
