"""One vocabulary for outcomes and progress: CLI exit codes, D-Bus and the journal.

The numbers are aktualizr-lite's ``aklite::cli::StatusCode`` values so that scripts
written for ``aklite-offline`` keep working; aklited adds 101 (restart dockerd) as the
legacy offline client had it.
"""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    """Result of a command; the value is the process exit code."""

    OK = 0
    UNKNOWN_ERROR = 1
    CHECKIN_OK_CACHED = 3
    TUF_UPDATE_FAILED = 4
    NO_MATCHING_TARGETS = 6
    NO_TARGET_CONTENT = 8
    SECURITY_ERROR = 11
    METADATA_EXPIRED = 12
    METADATA_NOT_FOUND = 14
    INVALID_BUNDLE_METADATA = 15
    UPDATE_AVAILABLE = 16
    TARGET_NOT_FOUND = 20
    INSTALLATION_IN_PROGRESS = 30
    NO_PENDING_INSTALLATION = 40
    DOWNLOAD_FAILED = 50
    NO_SPACE = 60
    VERIFICATION_FAILED = 70
    IMAGE_LOAD_FAILED = 80
    ROLLBACK_OK = 99
    NEEDS_REBOOT = 100
    NEEDS_DOCKER_RESTART = 101
    DOWNGRADE_REFUSED = 102
    ROLLBACK_FAILED = 120

    @property
    def meaning(self) -> str:
        """A short sentence for humans: what this outcome means."""
        return _MEANINGS[self]

    @property
    def is_success(self) -> bool:
        """True for outcomes that are not errors (the update goes on or is done)."""
        return self in _SUCCESS


_MEANINGS: dict[StatusCode, str] = {
    StatusCode.OK: "success",
    StatusCode.UNKNOWN_ERROR: "unknown error",
    StatusCode.CHECKIN_OK_CACHED: "bundle metadata is older than the device's; stored copy used",
    StatusCode.TUF_UPDATE_FAILED: "TUF metadata could not be read",
    StatusCode.NO_MATCHING_TARGETS: "no target in the bundle matches this device (hwid, tag)",
    StatusCode.NO_TARGET_CONTENT: "the bundle lacks the target's OSTree commit or apps",
    StatusCode.SECURITY_ERROR: "TUF metadata failed verification",
    StatusCode.METADATA_EXPIRED: "TUF or bundle metadata has expired",
    StatusCode.METADATA_NOT_FOUND: "required TUF metadata is missing from the bundle",
    StatusCode.INVALID_BUNDLE_METADATA: "bundle-targets.json is invalid (signature, type or tag)",
    StatusCode.UPDATE_AVAILABLE: "a newer target can be installed",
    StatusCode.TARGET_NOT_FOUND: "the requested target was not found",
    StatusCode.INSTALLATION_IN_PROGRESS: "another install is pending: finish it with 'run' first",
    StatusCode.NO_PENDING_INSTALLATION: "no installation is pending",
    StatusCode.DOWNLOAD_FAILED: "copying the update from the bundle failed",
    StatusCode.NO_SPACE: "not enough free space for the update",
    StatusCode.VERIFICATION_FAILED: "update content failed verification",
    StatusCode.IMAGE_LOAD_FAILED: "app images could not be loaded or started",
    StatusCode.ROLLBACK_OK: "the update failed and the previous target was kept",
    StatusCode.NEEDS_REBOOT: "reboot required, then run 'aklite-offline run'",
    StatusCode.NEEDS_DOCKER_RESTART: "restart dockerd, then run 'aklite-offline run'",
    StatusCode.DOWNGRADE_REFUSED: "the bundle's target is older than the current one (use --force)",
    StatusCode.ROLLBACK_FAILED: "the update failed and no rollback was possible",
}

_SUCCESS = frozenset(
    {
        StatusCode.OK,
        StatusCode.CHECKIN_OK_CACHED,
        StatusCode.UPDATE_AVAILABLE,
        StatusCode.NEEDS_REBOOT,
        StatusCode.NEEDS_DOCKER_RESTART,
    }
)


class State(enum.StrEnum):
    """What the updater is doing; the D-Bus ``State`` property and the journal use these."""

    IDLE = "idle"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    AWAITING_REBOOT = "awaiting-reboot"
    AWAITING_DOCKER_RESTART = "awaiting-docker-restart"
    FINALIZING = "finalizing"
    ROLLING_BACK = "rolling-back"
