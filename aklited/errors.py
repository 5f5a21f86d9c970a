"""aklited's exceptions: one tree of leaf types, each carrying the StatusCode it maps to.

A raise site names the type that says what went wrong; the type decides the outcome. Code
branches on types, never on a code or a message. Only the edges turn these into outcomes:
the CLI into one line and an exit code, the D-Bus service into an error name and
``LastResult``.

Area bases (:class:`TrustError`, :class:`SelectionError`, :class:`RootfsError`,
:class:`AppsError`) let a caller handle everything one part of the update raised; the
outcome bases (:class:`CopyFailedError`, :class:`NoSpaceError`,
:class:`ContentMismatchError`) let it handle one outcome wherever it came from.
"""

from __future__ import annotations

from typing import ClassVar

from aklited.outcomes import StatusCode


class AkliteError(Exception):
    """Base of every expected failure. ``str(err)`` is one line for a human."""

    default_code: ClassVar[StatusCode] = StatusCode.UNKNOWN_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def code(self) -> StatusCode:
        """The outcome this failure maps to: its type's ``default_code``."""
        return self.default_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


# ---- the device itself ------------------------------------------------------------------


class ConfigError(AkliteError):
    """The configuration cannot be read or has a value of the wrong type."""


class JournalError(AkliteError):
    """The state journal is unreadable, corrupt or not aklited's."""


class HostFileError(AkliteError):
    """A file of the device's own (the reboot marker, current-target) cannot be written."""


class MediaError(AkliteError):
    """A drive cannot be watched, mounted, read or unmounted (1)."""


class ServiceError(AkliteError):
    """systemd could not be asked, or a unit's job failed."""


class InternalError(AkliteError):
    """A failure nothing anticipated (a bug, or a resource exhausted): exit 1, one line."""

    @classmethod
    def wrap(cls, error: BaseException) -> AkliteError:
        """``error`` itself when it is expected, else an InternalError describing it."""
        if isinstance(error, AkliteError):
            return error
        detail = " ".join(str(error).split())[:500]
        name = type(error).__name__
        return cls(f"unexpected failure: {name}: {detail}" if detail else f"unexpected {name}")


class CancelledInstallError(AkliteError):
    """The install or run was cancelled (the daemon stops): settled like any failure."""


class BusyError(AkliteError):
    """An update is already running in this process (30); another tool: LockHeldError."""

    default_code = StatusCode.INSTALLATION_IN_PROGRESS


class LockHeldError(AkliteError):
    """Another aklite tool holds /var/lock/aklite.lock (1, as aktualizr-lite answers)."""


class PendingInstallError(AkliteError):
    """Another install waits for its reboot or dockerd restart and its finalize (30)."""

    default_code = StatusCode.INSTALLATION_IN_PROGRESS

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target


# ---- outcomes shared by the rootfs and the apps -----------------------------------------


class CopyFailedError(AkliteError):
    """Copying the update off the drive failed (50): an I/O error, a yanked drive."""

    default_code = StatusCode.DOWNLOAD_FAILED


class NoSpaceError(AkliteError):
    """Not enough free space on the device for the update (60)."""

    default_code = StatusCode.NO_SPACE


class ContentMismatchError(AkliteError):
    """Update content is unsafe or does not match what the metadata promises (70)."""

    default_code = StatusCode.VERIFICATION_FAILED


# ---- trust: TUF metadata and bundle-targets.json ----------------------------------------


class TrustError(AkliteError):
    """TUF metadata or bundle-targets.json failed a check (area base; 11)."""

    default_code = StatusCode.SECURITY_ERROR


class MetadataUnreadableError(TrustError):
    """A metadata file could not be read off the drive (4): not the metadata's fault."""

    default_code = StatusCode.TUF_UPDATE_FAILED


class MetadataRejectedError(TrustError):
    """A metadata file failed a signature, format or consistency check (11)."""

    default_code = StatusCode.SECURITY_ERROR


class MetadataExpiredError(TrustError):
    """A metadata file has expired (12)."""

    default_code = StatusCode.METADATA_EXPIRED


class MetadataMissingError(TrustError):
    """A required metadata file, or the bundle itself, is absent (14)."""

    default_code = StatusCode.METADATA_NOT_FOUND


class BundleMetadataError(TrustError):
    """bundle-targets.json is invalid: signature, type or tag (15)."""

    default_code = StatusCode.INVALID_BUNDLE_METADATA


# ---- selection: which target the bundle offers this device ------------------------------


class SelectionError(AkliteError):
    """The bundle offers no target this device can install (area base; 6)."""

    default_code = StatusCode.NO_MATCHING_TARGETS


class NoMatchingTargetError(SelectionError):
    """No target in the bundle fits this device's hardware id and tags (6)."""

    default_code = StatusCode.NO_MATCHING_TARGETS


class TargetContentMissingError(SelectionError):
    """The bundle lacks the target's OSTree commit or apps (8)."""

    default_code = StatusCode.NO_TARGET_CONTENT


class TargetNotFoundError(SelectionError):
    """The requested target is not among the bundle's targets for this device (20)."""

    default_code = StatusCode.TARGET_NOT_FOUND


class DowngradeRefusedError(SelectionError):
    """The target is older than the current one and the install is not forced (102)."""

    default_code = StatusCode.DOWNGRADE_REFUSED


class BundleContentUnreadableError(SelectionError, CopyFailedError):
    """Bundle content could not be read off the drive while selecting (50)."""

    default_code = StatusCode.DOWNLOAD_FAILED


class BundleContentRejectedError(SelectionError, ContentMismatchError):
    """Bundle content the drive reader refused while selecting: a link out, a FIFO (70)."""

    default_code = StatusCode.VERIFICATION_FAILED


# ---- the rootfs (OSTree) ----------------------------------------------------------------


class RootfsError(AkliteError):
    """An OSTree operation failed (area base; 50 unless a leaf says otherwise)."""

    default_code = StatusCode.DOWNLOAD_FAILED


class RootfsCopyError(RootfsError, CopyFailedError):
    """Pulling the commit from the bundle's repo failed (50)."""

    default_code = StatusCode.DOWNLOAD_FAILED


class RootfsNoSpaceError(RootfsError, NoSpaceError):
    """The sysroot lacks the space to pull or deploy the commit (60)."""

    default_code = StatusCode.NO_SPACE


class RootfsCorruptError(RootfsError, ContentMismatchError):
    """An OSTree object is unsafe or does not match its name (70)."""

    default_code = StatusCode.VERIFICATION_FAILED


class RootfsSysrootError(RootfsError):
    """The sysroot is missing, or reading it or deploying, undeploying or pruning failed (1)."""

    default_code = StatusCode.UNKNOWN_ERROR


class RootfsRollbackError(RootfsError):
    """Deploying the previous target again failed, or there is none to go back to (120)."""

    default_code = StatusCode.ROLLBACK_FAILED


# ---- Compose Apps -----------------------------------------------------------------------


class AppsError(AkliteError):
    """A Compose App failed verification, loading or starting (area base; 70)."""

    default_code = StatusCode.VERIFICATION_FAILED


class AppsContentMissingError(AppsError):
    """An app version or blob the target needs is absent from a store (8)."""

    default_code = StatusCode.NO_TARGET_CONTENT


class AppsCopyError(AppsError, CopyFailedError):
    """Copying app blobs off the drive, or reading the device's app store, failed (50)."""

    default_code = StatusCode.DOWNLOAD_FAILED


class AppsNoSpaceError(AppsError, NoSpaceError):
    """The device store lacks the space for the app blobs (60)."""

    default_code = StatusCode.NO_SPACE


class AppsCorruptError(AppsError, ContentMismatchError):
    """An app blob, manifest or archive is unsafe or does not match its digest (70)."""

    default_code = StatusCode.VERIFICATION_FAILED


class AppsRunError(AppsError):
    """App images could not be loaded, or the apps did not start and run (80)."""

    default_code = StatusCode.IMAGE_LOAD_FAILED


class AppsEngineMissingError(AppsRunError):
    """No Docker engine answers: apps can be neither loaded nor started (80)."""
