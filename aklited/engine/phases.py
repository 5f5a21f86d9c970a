"""The vocabulary of the update engine: journal phases, outcomes and settings.

An install moves through :class:`Phase` values, each written to the journal before the step
it names acts. ``IN_FLIGHT`` phases come before the deployment (an interruption there is
abandoned); ``PENDING`` phases wait for a reboot, a dockerd restart or a finalize.
"""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aklited.outcomes import StatusCode

AKLITE_UNIT = "aktualizr-lite.service"
AKLITED_WAS_RUNNING_KEY = "aktualizr-lite-was-running"
INITIAL_TARGET = "initial-target"
# Names a journal transition at which the process kills itself: the crash tests use it to
# stop the engine at every step in turn. Never set on a device.
CRASH_HOOK_ENV = "AKLITED_CRASH_AT"


class Phase(enum.StrEnum):
    """An install's state in the journal."""

    VERIFYING = "verifying"  # before the install exists: the bundle is being verified
    INITIAL = "initial-target"  # the factory image, recorded before the first update
    STARTED = "started"
    STOPPING_AKLITE = "stopping-aktualizr-lite"
    PULLING = "pulling"
    STAGING_APPS = "staging-apps"
    DEPLOYING = "deploying"
    AWAITING_REBOOT = "awaiting-reboot"
    AWAITING_DOCKER_RESTART = "awaiting-docker-restart"
    FINALIZING = "finalizing"
    ROLLING_BACK = "rolling-back"
    AWAITING_ROLLBACK_REBOOT = "awaiting-rollback-reboot"
    FINALIZING_ROLLBACK = "finalizing-rollback"
    # terminal
    CURRENT = "current"
    FAILED = "failed"
    ABANDONED = "abandoned"


IN_FLIGHT = frozenset(
    {Phase.STARTED, Phase.STOPPING_AKLITE, Phase.PULLING, Phase.STAGING_APPS, Phase.DEPLOYING}
)
PENDING = frozenset(
    {
        Phase.AWAITING_REBOOT,
        Phase.AWAITING_DOCKER_RESTART,
        Phase.FINALIZING,
        Phase.ROLLING_BACK,
        Phase.AWAITING_ROLLBACK_REBOOT,
        Phase.FINALIZING_ROLLBACK,
    }
)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    lock_path: Path
    reboot_sentinel: Path  # exists from deployment until the reboot (lives on a tmpfs)
    current_target_path: Path
    aklite_unit: str = AKLITE_UNIT


@dataclass(frozen=True, slots=True)
class Outcome:
    code: StatusCode
    message: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class CurrentInfo:
    name: str
    version: int
    ostree_hash: str
    apps: Mapping[str, str]  # name -> uri
    app_states: Mapping[str, str]  # name -> "running" | "not running" | ...
    booted_commit: str | None


def crash_hook(phase: Phase) -> None:
    """Kill this process at ``phase`` when the crash tests ask for it."""
    if os.environ.get(CRASH_HOOK_ENV) == str(phase):
        os.kill(os.getpid(), signal.SIGKILL)


def downgrade_guard(name: str | None, version: int | None) -> tuple[int | None, str | None]:
    """The ``(current_version, current_name)`` target selection guards against downgrades.

    The target the device booted before any offline update has no version to guard.
    """
    if name is None or name == INITIAL_TARGET:
        return None, None
    return version, name
