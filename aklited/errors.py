"""aklited's exceptions: every failure carries the StatusCode it maps to.

Only the edges turn these into outcomes: the CLI into exit codes, the D-Bus service into
errors and ``LastResult``. Code branches on the exception type or ``code``, never on text.
"""

from __future__ import annotations

from aklited.outcomes import StatusCode


class AkliteError(Exception):
    """Base of every expected failure. ``str(err)`` is one line for a human."""

    default_code: StatusCode = StatusCode.UNKNOWN_ERROR

    def __init__(self, message: str, *, code: StatusCode | None = None) -> None:
        super().__init__(message)
        self.code: StatusCode = code if code is not None else self.default_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(AkliteError):
    """The configuration cannot be read or has a value of the wrong type."""


class StoreError(AkliteError):
    """The state journal is unreadable, corrupt or not aklited's."""


class TrustError(AkliteError):
    """TUF metadata or bundle-targets.json failed a check (11, 12, 14, 15, 4)."""

    default_code = StatusCode.SECURITY_ERROR


class BundleError(AkliteError):
    """The bundle lacks what the device needs, or offers no target for it (6, 8, 20, 102)."""

    default_code = StatusCode.NO_TARGET_CONTENT


class OstreeError(AkliteError):
    """An OSTree operation failed (50 pull, 60 space, 70 commit mismatch)."""

    default_code = StatusCode.DOWNLOAD_FAILED


class AppsError(AkliteError):
    """A Compose App failed verification, loading or starting (50, 60, 70, 80)."""

    default_code = StatusCode.VERIFICATION_FAILED


class LockError(AkliteError):
    """Another aklite tool holds /var/lock/aklite.lock."""


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
