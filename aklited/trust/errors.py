"""Trust failures that the workflow itself needs to tell apart (by type, never by text)."""

from __future__ import annotations

from aklited.drivefs import DriveEntryError, DriveIOError
from aklited.errors import (
    MetadataExpiredError,
    MetadataMissingError,
    MetadataRejectedError,
    MetadataUnreadableError,
)


class MetadataRollbackError(MetadataRejectedError):
    """Offered metadata is older than the trusted copy (a rollback, code 11).

    The offline workflow may fall back to the stored copy, as aktualizr-lite does for a
    bundle that is older than what the device already trusts.
    """


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped.

    Names in messages (targets, delegated roles) come from the metadata itself; a newline
    in one must not split the one-line message a script or a log reader relies on.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def security_error(filename: str, reason: str) -> MetadataRejectedError:
    """A metadata file failed a check or cannot be parsed (11)."""
    return MetadataRejectedError(one_line(f"{filename}: {reason}"))


def expired_error(filename: str, expires: str) -> MetadataExpiredError:
    """A metadata file has expired (12)."""
    return MetadataExpiredError(
        one_line(f"{filename}: expired at {expires}; make a new bundle or check the device clock")
    )


def missing_error(filename: str, reason: str = "is missing") -> MetadataMissingError:
    """A required metadata file is absent (14)."""
    return MetadataMissingError(one_line(f"{filename}: {reason}"))


def io_error(filename: str, err: OSError) -> MetadataUnreadableError:
    """Reading the medium failed (4): not the metadata's fault."""
    reason = err.strerror or type(err).__name__
    return MetadataUnreadableError(one_line(f"{filename}: cannot be read: {reason}"))


def drive_error(
    err: DriveEntryError, filename: str | None = None
) -> MetadataUnreadableError | MetadataRejectedError:
    """A metadata file the drive reader refused: 4 for an I/O error, else 11."""
    name = filename or err.path
    if isinstance(err, DriveIOError):
        return io_error(name, err.error)
    return security_error(name, err.reason)
