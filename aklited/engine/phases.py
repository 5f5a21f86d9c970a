"""An install's phases: each is written to the journal before the step it names acts.

``IN_FLIGHT`` phases come before the deployment (an interruption there is abandoned);
``PENDING`` phases wait for a reboot, a dockerd restart or a finalize. :data:`STATE_OF`
maps every phase to the coarser :class:`~aklited.outcomes.State` D-Bus shows.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from aklited.outcomes import State


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
TERMINAL = frozenset({Phase.CURRENT, Phase.FAILED, Phase.ABANDONED})

STATE_OF: Mapping[Phase, State] = MappingProxyType(
    {
        Phase.VERIFYING: State.VERIFYING,
        Phase.INITIAL: State.IDLE,
        Phase.STARTED: State.INSTALLING,
        Phase.STOPPING_AKLITE: State.INSTALLING,
        Phase.PULLING: State.INSTALLING,
        Phase.STAGING_APPS: State.INSTALLING,
        Phase.DEPLOYING: State.INSTALLING,
        Phase.AWAITING_REBOOT: State.AWAITING_REBOOT,
        Phase.AWAITING_DOCKER_RESTART: State.AWAITING_DOCKER_RESTART,
        Phase.FINALIZING: State.FINALIZING,
        Phase.ROLLING_BACK: State.ROLLING_BACK,
        Phase.AWAITING_ROLLBACK_REBOOT: State.AWAITING_REBOOT,
        Phase.FINALIZING_ROLLBACK: State.ROLLING_BACK,
        Phase.CURRENT: State.IDLE,
        Phase.FAILED: State.IDLE,
        Phase.ABANDONED: State.IDLE,
    }
)
