"""Offline bundles: layout, ``bundle-targets.json``, target selection, content presence.

Order of checks, as aktualizr-lite's ``CheckInLocal`` does them:

1. the root chain from the device's trusted root through the bundle's ``N.root.json``;
2. ``bundle-targets.json``: signed by the latest root's targets keys (threshold of
   distinct keys), not expired, bundle type equal to the device's, tag one of the
   device's tags (14 absent, 12 expired, 15 any other failure);
3. timestamp, snapshot and targets (see :mod:`aklited.tuf.workflow`);
4. the trusted targets named by the bundle, filtered on format, hardware id and tags
   (else 6); the requested or highest-version one whose content the bundle holds
   (20 unknown name, 8 content missing); no downgrade without ``force`` (102).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from aklited.config import Config
from aklited.drivefs import (
    BundleFiles,
    DriveEntryError,
    DriveIOError,
    MissingEntryError,
    describe_mode,
)
from aklited.errors import BundleError, TrustError
from aklited.status import StatusCode
from aklited.tuf.errors import drive_error, security_error
from aklited.tuf.keys import Dialect
from aklited.tuf.metadata import (
    Root,
    TargetFile,
    brief,
    format_time,
    parse_envelope,
)
from aklited.tuf.source import DEFAULT_LIMITS, DirectorySource
from aklited.tuf.storage import TrustStore
from aklited.tuf.trusted import is_expired, verify_role
from aklited.tuf.workflow import TrustWorkflow, VerifiedMetadata

log = structlog.get_logger(__name__)

BUNDLE_TARGETS = "tuf/bundle-targets.json"
MAX_APP_URI_BYTES = 4096
_COMMIT = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
# std::stoi(s, nullptr, 0): optional sign, then hex ("0x"), octal (leading 0) or decimal.
_STOI = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
# stoi returns an int and throws out_of_range beyond it; the journal keeps 64-bit integers.
VERSION_MIN, VERSION_MAX = -(2**31), 2**31 - 1
# More significant digits than any in-range value has in base 8 (11): out of range
# without int(), which refuses decimal strings over 4300 digits with a ValueError.
_MAX_VERSION_DIGITS = 12


@dataclass(frozen=True, slots=True)
class BundleLayout:
    """Where the parts of a bundle live."""

    root: Path

    @property
    def tuf_dir(self) -> Path:
        """``<bundle>/tuf``."""
        return self.root / "tuf"

    @property
    def ostree_repo(self) -> Path:
        """``<bundle>/ostree_repo``."""
        return self.root / "ostree_repo"

    @property
    def apps_dir(self) -> Path:
        """``<bundle>/apps`` (a composectl app store root)."""
        return self.root / "apps"

    @classmethod
    def open(cls, src_dir: Path) -> BundleLayout:
        """Check that ``src_dir`` looks like a bundle.

        Raises:
            TrustError: 14 when the directory or its ``tuf/`` is missing.
        """
        root = Path(os.path.realpath(src_dir))
        if not root.is_dir():
            raise TrustError(
                f"{src_dir}: no such bundle directory", code=StatusCode.METADATA_NOT_FOUND
            )
        try:
            with BundleFiles(root) as files:
                has_tuf = files.is_dir("tuf")
        except DriveEntryError as e:
            raise drive_error(e) from e
        if not has_tuf:
            raise TrustError(
                f"{src_dir}/tuf: missing; this is not an offline update bundle",
                code=StatusCode.METADATA_NOT_FOUND,
            )
        return cls(root=root)


@dataclass(frozen=True, slots=True)
class BundleManifest:
    """What ``bundle-targets.json`` says (``x-fio-offline-bundle``)."""

    bundle_type: str
    tag: str
    targets: tuple[str, ...]
    expires: datetime


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What selection needs to know about the device (from its configuration)."""

    hardware_id: str
    device_type: str
    tags: tuple[str, ...] = ()
    compose_apps: tuple[str, ...] | None = None
    with_apps: bool = True

    @classmethod
    def from_config(cls, config: Config) -> DeviceFacts:
        """Read hardware id, type, tags and app shortlist from an ``aklited.config.Config``."""
        return cls(
            hardware_id=config.provision.hardware_id,
            device_type=config.aklited.device_type,
            tags=tuple(config.pacman.tags),
            compose_apps=config.pacman.compose_apps,
            with_apps=config.pacman.type != "ostree",
        )


@dataclass(frozen=True, slots=True)
class SelectedTarget:
    """The target chosen for installation.

    Attributes:
        name: Target name.
        version: ``custom.version`` as an integer.
        ostree_commit: sha256 of the OSTree commit.
        apps: ``{app: uri}`` the device must run (target apps within the device's
            shortlist); the bundle holds every one of them.
        custom: The target's raw ``custom`` object.
        tags: ``custom.tags``.
    """

    name: str
    version: int
    ostree_commit: str
    apps: Mapping[str, str]
    custom: Mapping[str, Any]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose metadata verified."""

    layout: BundleLayout
    metadata: VerifiedMetadata
    manifest: BundleManifest


def _bundle_meta_error(reason: str) -> TrustError:
    return TrustError(f"{BUNDLE_TARGETS}: {reason}", code=StatusCode.INVALID_BUNDLE_METADATA)


def check_bundle_targets(
    raw: bytes,
    *,
    root: Root,
    dialect: Dialect,
    reference_time: datetime,
    device_type: str | None,
    tags: Sequence[str],
) -> BundleManifest:
    """Verify ``bundle-targets.json`` against the latest root and the device.

    ``device_type`` None skips the type check (a workstation check of a drive).

    Raises:
        TrustError: 12 when expired, 15 for any other failure.
    """
    try:
        envelope = parse_envelope(raw, role="targets", filename=BUNDLE_TARGETS, dialect=dialect)
        verify_role(envelope, root, "targets")
    except TrustError as e:
        raise TrustError(e.message, code=StatusCode.INVALID_BUNDLE_METADATA) from e
    signed = envelope.signed
    expires = signed.get("expires")
    if not isinstance(expires, str) or not _EXPIRES.fullmatch(expires):
        raise _bundle_meta_error(f"expires {expires!r} is not YYYY-MM-DDTHH:MM:SSZ")
    try:
        when = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as e:
        raise _bundle_meta_error(f"expires {expires!r} is not a valid date") from e
    if is_expired(when, reference_time):
        raise TrustError(
            f"{BUNDLE_TARGETS}: expired at {format_time(when)}; make a new bundle",
            code=StatusCode.METADATA_EXPIRED,
        )
    bundle = signed.get("x-fio-offline-bundle")
    if not isinstance(bundle, dict):
        raise _bundle_meta_error("lacks the x-fio-offline-bundle object")
    bundle_type, tag, names = bundle.get("type"), bundle.get("tag", ""), bundle.get("targets")
    if not isinstance(bundle_type, str) or not isinstance(tag, str):
        raise _bundle_meta_error("x-fio-offline-bundle.type and .tag must be strings")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _bundle_meta_error("x-fio-offline-bundle.targets must be a list of names")
    if device_type is not None and bundle_type != device_type:
        raise _bundle_meta_error(
            f"bundle type {bundle_type!r} does not match this device ({device_type!r}); "
            "use a bundle made for this kind of device"
        )
    if tags and tag not in tags:
        raise _bundle_meta_error(
            f"bundle tag {tag!r} is not one of this device's tags ({', '.join(tags)})"
        )
    return BundleManifest(bundle_type=bundle_type, tag=tag, targets=tuple(names), expires=when)


def verify_bundle_sync(
    src_dir: Path,
    *,
    store: TrustStore,
    device: DeviceFacts,
    provisioned_roots: Path | None,
    reference_time: datetime | None = None,
) -> VerifiedBundle:
    """Blocking form of :func:`verify_bundle` (for a worker thread)."""
    layout = BundleLayout.open(src_dir)
    source = DirectorySource(layout.tuf_dir, boundary=layout.root)
    workflow = TrustWorkflow(
        source=source,
        store=store,
        reference_time=reference_time,
        provisioned_roots=provisioned_roots,
        label_prefix="tuf/",
    )
    root = workflow.update_root()
    raw = _read_bundle_targets(layout)
    if raw is None:
        raise TrustError(
            f"{BUNDLE_TARGETS}: missing; make the bundle with fioctl >= v0.42",
            code=StatusCode.METADATA_NOT_FOUND,
        )
    manifest = check_bundle_targets(
        raw,
        root=root.signed,
        dialect=workflow.trusted.dialect,
        reference_time=workflow.reference_time,
        device_type=device.device_type,
        tags=device.tags,
    )
    metadata = workflow.update_top_level()
    log.info(
        "bundle metadata verified",
        bundle=str(layout.root),
        root_version=metadata.root.version,
        targets_version=metadata.targets.version,
        from_store=metadata.from_store,
    )
    if metadata.from_store:
        # The outcome that follows (often "already installed") would hide why the drive's
        # newer-looking target was not considered: its metadata is older than the device's.
        log.warning(
            "the drive's TUF metadata is older than the device's; "
            "the device's stored metadata was used instead",
            reason=metadata.rollback,
            bundle=str(layout.root),
        )
    return VerifiedBundle(layout=layout, metadata=metadata, manifest=manifest)


async def verify_bundle(
    src_dir: Path,
    *,
    store: TrustStore,
    device: DeviceFacts,
    provisioned_roots: Path | None,
    reference_time: datetime | None = None,
) -> VerifiedBundle:
    """Verify a bundle's TUF metadata and ``bundle-targets.json``, persisting into ``store``.

    Args:
        src_dir: The bundle directory.
        store: Trusted metadata (the journal, or an overlay for a read-only check).
        device: Device facts (type and tags are checked here).
        provisioned_roots: ``<uptane_metadata_path>/<device_type>`` for first use.
        reference_time: Expiry reference (default: now).

    Raises:
        TrustError: 4, 11, 12, 14 or 15 (see DESIGN section 4).
    """
    return await asyncio.to_thread(
        verify_bundle_sync,
        src_dir,
        store=store,
        device=device,
        provisioned_roots=provisioned_roots,
        reference_time=reference_time,
    )


def parse_version(value: object, *, target: str = "") -> int | None:
    """``custom.version`` as aktualizr-lite reads it (``std::stoi(s, nullptr, 0)``).

    Args:
        value: The ``custom.version`` value.
        target: The target's name, for the message.

    Returns:
        The version, or None when stoi finds no number.

    Raises:
        TrustError: 11 when the number is outside stoi's int range
            (:data:`VERSION_MIN`..:data:`VERSION_MAX`): the signed metadata is malformed.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | None = value
    elif not isinstance(value, str) or not (match := _STOI.match(value)):
        return None
    else:
        sign, digits = match.groups()
        base = 16 if digits[:2].lower() == "0x" else 8 if digits[0] == "0" else 10
        significant = (digits[2:] if base == 16 else digits).lstrip("0")
        number = None
        if len(significant) <= _MAX_VERSION_DIGITS:
            number = int(significant or "0", base) * (-1 if sign == "-" else 1)
    if number is None or not VERSION_MIN <= number <= VERSION_MAX:
        raise security_error(
            "tuf/targets.json",
            f"target {target}: custom.version {brief(value)} is outside "
            f"{VERSION_MIN}..{VERSION_MAX}",
        )
    return number


def target_apps(custom: Mapping[str, Any]) -> dict[str, str]:
    """A target's ``docker_compose_apps`` as app name -> URI."""
    apps = custom.get("docker_compose_apps")
    if not isinstance(apps, dict):
        return {}
    return {
        name: entry["uri"]
        for name, entry in apps.items()
        if isinstance(entry, dict) and isinstance(entry.get("uri"), str)
    }


def required_apps(target: TargetFile, device: DeviceFacts) -> dict[str, str]:
    """The target apps the device must run: the offline shortlist within the device's."""
    if not device.with_apps:
        return {}
    apps = target_apps(target.custom)
    fetched = target.custom.get("fetched-apps")
    if isinstance(fetched, dict) and "uri" in fetched:
        if fetched["uri"] in (None, ""):
            apps = {}  # the bundle was made without apps
        elif isinstance(shortlist := fetched.get("shortlist"), str) and shortlist.strip():
            wanted = {name.strip() for name in shortlist.split(",")}
            apps = {name: uri for name, uri in apps.items() if name in wanted}
    if device.compose_apps is not None:
        apps = {name: uri for name, uri in apps.items() if name in device.compose_apps}
    return apps


def matching_targets(bundle: VerifiedBundle, device: DeviceFacts) -> list[TargetFile]:
    """Trusted targets the bundle names that fit this device (format, hwid, tags).

    Raises:
        BundleError: 6 when none fits.
    """
    # Top-level and delegated targets, as the TUF search resolves them.
    targets = bundle.metadata.all_targets
    named = [targets[name] for name in bundle.manifest.targets if name in targets]
    if not named:
        raise BundleError(
            f"{BUNDLE_TARGETS}: none of the bundle's targets is in the trusted targets.json",
            code=StatusCode.NO_MATCHING_TARGETS,
        )
    fitting = [t for t in named if _fits(t, device)]
    if not fitting:
        raise BundleError(
            f"{BUNDLE_TARGETS}: no target for hardware id {device.hardware_id!r}"
            + (f" and tags {', '.join(device.tags)}" if device.tags else "")
            + f" (bundle offers {', '.join(t.name for t in named)})",
            code=StatusCode.NO_MATCHING_TARGETS,
        )
    return fitting


def _fits(target: TargetFile, device: DeviceFacts) -> bool:
    custom = target.custom
    if custom.get("targetFormat") != "OSTREE":
        return False
    if custom.get("hardwareIds") != [device.hardware_id]:
        return False
    if device.tags:
        tags = custom.get("tags")
        if not isinstance(tags, list) or not set(device.tags) & {
            t for t in tags if isinstance(t, str)
        }:
            return False
    return parse_version(custom.get("version"), target=target.name) is not None


def _content_error(err: DriveEntryError) -> BundleError:
    """Bundle content the drive reader refused: 50 for an I/O error, else 70."""
    if isinstance(err, DriveIOError):
        return BundleError(f"{err}; check the drive", code=StatusCode.DOWNLOAD_FAILED)
    return BundleError(str(err), code=StatusCode.VERIFICATION_FAILED)


def _read_bundle_targets(layout: BundleLayout) -> bytes | None:
    """``tuf/bundle-targets.json``, or None when absent.

    Raises:
        TrustError: 11 for an entry that is no regular file inside the bundle or is over its
            limit (as for every metadata file), 4 for an I/O error. Its own checks (15) come
            after, in :func:`check_bundle_targets`.
    """
    try:
        with BundleFiles(layout.root) as files:
            return files.read(BUNDLE_TARGETS, limit=DEFAULT_LIMITS.bundle_targets)
    except MissingEntryError:
        return None
    except DriveEntryError as e:
        raise drive_error(e) from e


def bundle_app_uris(layout: BundleLayout) -> set[str]:
    """Every app URI the bundle holds (contents of ``apps/apps/*/*/uri``).

    Raises:
        BundleError: 70 for an entry that leaves the bundle or is not what it should be
            (a uri that is no regular file, ``apps/`` a link out), 50 for an I/O error.
    """
    uris: set[str] = set()
    try:
        with BundleFiles(layout.root) as files:
            for relative in files.walk_files("apps/apps", ("*", "*", "uri")):
                try:
                    data = files.read(relative, limit=MAX_APP_URI_BYTES)
                except MissingEntryError:
                    continue  # a dangling link inside the bundle: that app version is absent
                uris.add(data.decode("utf-8", errors="replace").strip())
    except DriveEntryError as e:
        raise _content_error(e) from e
    return uris


def content_problem(
    target: TargetFile, layout: BundleLayout, apps: Mapping[str, str], uris: set[str]
) -> str | None:
    """Why the bundle cannot install ``target``, or None when it holds everything."""
    commit = target.hashes.get("sha256", "").lower()
    if not _COMMIT.fullmatch(commit):
        return f"target {target.name}: hashes.sha256 {commit!r} is not an OSTree commit"
    relative = f"ostree_repo/objects/{commit[:2]}/{commit[2:]}.commit"
    try:
        with BundleFiles(layout.root) as files:
            info = files.stat(relative)
    except MissingEntryError:
        return f"target {target.name}: OSTree commit {commit} is not in the bundle ({relative})"
    except DriveEntryError as e:
        raise _content_error(e) from e
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(
            f"{relative}: is {describe_mode(info.st_mode)}, not a regular file",
            code=StatusCode.VERIFICATION_FAILED,
        )
    for name, uri in sorted(apps.items()):
        if uri not in uris:
            return f"target {target.name}: app {name} ({uri}) is not in the bundle's apps/"
    return None


def select_target_sync(
    bundle: VerifiedBundle,
    device: DeviceFacts,
    *,
    target_name: str | None = None,
    current_version: int | None = None,
    current_name: str | None = None,
    force: bool = False,
) -> SelectedTarget:
    """Blocking form of :func:`select_target`."""
    fitting = matching_targets(bundle, device)
    if target_name:
        fitting = [t for t in fitting if t.name == target_name]
        if not fitting:
            raise BundleError(
                f"target {target_name} is not among the bundle's targets for this device",
                code=StatusCode.TARGET_NOT_FOUND,
            )
    uris = bundle_app_uris(bundle.layout) if device.with_apps else set()
    # Highest version first; aktualizr-lite installs the newest target the bundle holds.
    ordered = sorted(
        fitting,
        key=lambda t: parse_version(t.custom.get("version"), target=t.name) or 0,
        reverse=True,
    )
    first_problem: str | None = None
    for target in ordered:
        apps = required_apps(target, device)
        problem = content_problem(target, bundle.layout, apps, uris)
        if problem is None:
            return _chosen(target, apps, current_version, current_name, force=force)
        log.info("target content missing", target=target.name, reason=problem)
        first_problem = first_problem or problem
    raise BundleError(f"{first_problem}", code=StatusCode.NO_TARGET_CONTENT)


def _chosen(
    target: TargetFile,
    apps: Mapping[str, str],
    current_version: int | None,
    current_name: str | None,
    *,
    force: bool,
) -> SelectedTarget:
    version = parse_version(target.custom.get("version"), target=target.name)
    assert version is not None  # _fits() dropped targets without a version
    raw_tags = target.custom.get("tags")
    tags = tuple(t for t in raw_tags if isinstance(t, str)) if isinstance(raw_tags, list) else ()
    selected = SelectedTarget(
        name=target.name,
        version=version,
        ostree_commit=target.hashes["sha256"].lower(),
        apps=dict(apps),
        custom=target.custom,
        tags=tags,
    )
    if (
        current_version is not None
        and target.name != current_name
        and version < current_version
        and not force
    ):
        raise BundleError(
            f"target {target.name} version {version} is older than the current version "
            f"{current_version}; install with --force to downgrade",
            code=StatusCode.DOWNGRADE_REFUSED,
        )
    return selected


async def select_target(
    bundle: VerifiedBundle,
    device: DeviceFacts,
    *,
    target_name: str | None = None,
    current_version: int | None = None,
    current_name: str | None = None,
    force: bool = False,
) -> SelectedTarget:
    """Pick the target to install from a verified bundle.

    Args:
        bundle: The verified bundle.
        device: Hardware id, tags, app shortlist.
        target_name: Install exactly this target (``--target``).
        current_version: Version of the running target (downgrade guard).
        current_name: Name of the running target (re-installing it is no downgrade).
        force: Allow a downgrade.

    Returns:
        The selected target; the caller compares its name with the current target's.

    Raises:
        BundleError: 6 no fitting target, 20 ``target_name`` unknown, 8 content missing,
            102 downgrade without ``force``.
        TrustError: 11 for an apps ``uri`` file that escapes the bundle.
    """
    return await asyncio.to_thread(
        select_target_sync,
        bundle,
        device,
        target_name=target_name,
        current_version=current_version,
        current_name=current_name,
        force=force,
    )
