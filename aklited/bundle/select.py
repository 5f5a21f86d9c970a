"""Target selection: the trusted targets a bundle names that fit this device and whose content
the bundle holds, the newest first, with aktualizr-lite's downgrade guard.

Order of checks, as aktualizr-lite's ``CheckInLocal`` does them: targets named by
``bundle-targets.json`` and present in the trusted targets, filtered on format, hardware id
and tags (else 6); the requested (20 unknown name) or highest-version one whose content the
bundle holds (8 content missing); no downgrade without ``force`` (102).
"""

from __future__ import annotations

import asyncio
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from aklited.bundle.device import DeviceFacts
from aklited.bundle.verify import BUNDLE_TARGETS, BundleLayout, VerifiedBundle
from aklited.drivefs import (
    BundleFiles,
    DriveEntryError,
    DriveIOError,
    MissingEntryError,
    describe_mode,
)
from aklited.errors import (
    BundleContentRejectedError,
    BundleContentUnreadableError,
    DowngradeRefusedError,
    NoMatchingTargetError,
    TargetContentMissingError,
    TargetNotFoundError,
)
from aklited.trust.errors import security_error
from aklited.trust.metadata import TargetFile, brief

log = structlog.get_logger(__name__)

MAX_APP_URI_BYTES = 4096
_COMMIT = re.compile(r"[0-9a-f]{64}")
# std::stoi(s, nullptr, 0): optional sign, then hex ("0x"), octal (leading 0) or decimal.
_STOI = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
# stoi returns an int and throws out_of_range beyond it; the journal keeps 64-bit integers.
VERSION_MIN, VERSION_MAX = -(2**31), 2**31 - 1
# More significant digits than any in-range value has in base 8 (11): out of range
# without int(), which refuses decimal strings over 4300 digits with a ValueError.
_MAX_VERSION_DIGITS = 12


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


def parse_version(value: object, *, target: str = "") -> int | None:
    """``custom.version`` as aktualizr-lite reads it (``std::stoi(s, nullptr, 0)``).

    Args:
        value: The ``custom.version`` value.
        target: The target's name, for the message.

    Returns:
        The version, or None when stoi finds no number.

    Raises:
        MetadataRejectedError: 11 when the number is outside stoi's int range
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
        NoMatchingTargetError: 6 when none fits.
    """
    # Top-level and delegated targets, as the TUF search resolves them.
    targets = bundle.metadata.all_targets
    named = [targets[name] for name in bundle.manifest.targets if name in targets]
    if not named:
        raise NoMatchingTargetError(
            f"{BUNDLE_TARGETS}: none of the bundle's targets is in the trusted targets.json"
        )
    fitting = [t for t in named if _fits(t, device)]
    if not fitting:
        raise NoMatchingTargetError(
            f"{BUNDLE_TARGETS}: no target for hardware id {device.hardware_id!r}"
            + (f" and tags {', '.join(device.tags)}" if device.tags else "")
            + f" (bundle offers {', '.join(t.name for t in named)})"
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


def _content_error(
    err: DriveEntryError,
) -> BundleContentUnreadableError | BundleContentRejectedError:
    """Bundle content the drive reader refused: 50 for an I/O error, else 70."""
    if isinstance(err, DriveIOError):
        return BundleContentUnreadableError(f"{err}; check the drive")
    return BundleContentRejectedError(str(err))


def bundle_app_uris(layout: BundleLayout) -> set[str]:
    """Every app URI the bundle holds (contents of ``apps/apps/*/*/uri``).

    Raises:
        BundleContentRejectedError: 70 for an entry that leaves the bundle or is not what it
            should be (a uri that is no regular file, ``apps/`` a link out).
        BundleContentUnreadableError: 50 for an I/O error.
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
        raise BundleContentRejectedError(
            f"{relative}: is {describe_mode(info.st_mode)}, not a regular file"
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
            raise TargetNotFoundError(
                f"target {target_name} is not among the bundle's targets for this device"
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
    raise TargetContentMissingError(f"{first_problem}")


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
        raise DowngradeRefusedError(
            f"target {target.name} version {version} is older than the current version "
            f"{current_version}; install with --force to downgrade"
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
        SelectionError: 6 no fitting target, 20 ``target_name`` unknown, 8 content missing,
            102 downgrade without ``force``, 50/70 bundle content unreadable or unsafe.
        MetadataRejectedError: 11 for a ``custom.version`` outside stoi's int range.
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
