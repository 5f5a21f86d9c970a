"""A bundle's layout and its metadata: the TUF chain and ``bundle-targets.json``.

Order of checks, as aktualizr-lite's ``CheckInLocal`` does them:

1. the root chain from the device's trusted root through the bundle's ``N.root.json``;
2. ``bundle-targets.json``: signed by the latest root's targets keys (threshold of
   distinct keys), not expired, bundle type equal to the device's, tag one of the
   device's tags (14 absent, 12 expired, 15 any other failure);
3. timestamp, snapshot and targets (see :mod:`aklited.trust.workflow`).

Selection among the verified targets is :mod:`aklited.bundle.select`.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from aklited.bundle.device import DeviceFacts
from aklited.drivefs import (
    BundleFiles,
    DriveEntryError,
    MissingEntryError,
)
from aklited.errors import (
    BundleMetadataError,
    MetadataExpiredError,
    MetadataMissingError,
    TrustError,
)
from aklited.trust.errors import drive_error, io_error
from aklited.trust.keys import Dialect
from aklited.trust.metadata import (
    Root,
    format_time,
    parse_envelope,
)
from aklited.trust.source import DEFAULT_LIMITS, DirectorySource
from aklited.trust.storage import TrustStore
from aklited.trust.trusted import is_expired, verify_role
from aklited.trust.workflow import TrustWorkflow, VerifiedMetadata

log = structlog.get_logger(__name__)

BUNDLE_TARGETS = "tuf/bundle-targets.json"
_EXPIRES = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


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
        try:
            root = Path(os.path.realpath(src_dir))
            info = root.stat()
        except FileNotFoundError:
            raise MetadataMissingError(f"{src_dir}: no such bundle directory") from None
        except OSError as e:  # a drive pulled or failing: not the metadata's fault (4)
            raise io_error(str(src_dir), e) from e
        if not stat.S_ISDIR(info.st_mode):
            raise MetadataMissingError(f"{src_dir}: no such bundle directory")
        try:
            with BundleFiles(root) as files:
                has_tuf = files.is_dir("tuf")
        except DriveEntryError as e:
            raise drive_error(e) from e
        if not has_tuf:
            raise MetadataMissingError(
                f"{src_dir}/tuf: missing; this is not an offline update bundle"
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
class VerifiedBundle:
    """A bundle whose metadata verified."""

    layout: BundleLayout
    metadata: VerifiedMetadata
    manifest: BundleManifest


def _bundle_meta_error(reason: str) -> BundleMetadataError:
    return BundleMetadataError(f"{BUNDLE_TARGETS}: {reason}")


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
        raise BundleMetadataError(e.message) from e
    signed = envelope.signed
    expires = signed.get("expires")
    if not isinstance(expires, str) or not _EXPIRES.fullmatch(expires):
        raise _bundle_meta_error(f"expires {expires!r} is not YYYY-MM-DDTHH:MM:SSZ")
    try:
        when = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as e:
        raise _bundle_meta_error(f"expires {expires!r} is not a valid date") from e
    if is_expired(when, reference_time):
        raise MetadataExpiredError(
            f"{BUNDLE_TARGETS}: expired at {format_time(when)}; make a new bundle"
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
        raise MetadataMissingError(
            f"{BUNDLE_TARGETS}: missing; make the bundle with fioctl >= v0.42"
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
