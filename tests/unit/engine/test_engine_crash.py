"""A crash at every phase of every path an update takes, then the next process recovers.

The engine's checkpoint, called right after each journal write, raises
:class:`~tests.fakes.SimulatedKill` at the chosen phase. The "process" is gone: a fresh
engine on the same journal file and the same device then does what an operator or the daemon
does next (the same command again, then the rest of the update), and the device must end
consistent: one target current in journal, sysroot, apps and current-target, nothing in
flight or pending, aktualizr-lite running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from aklited.engine.model import Outcome, Target
from aklited.engine.phases import IN_FLIGHT, Phase
from aklited.outcomes import StatusCode
from tests.fakes import Rig, SimulatedKill, assert_settled_on, crash_at, make_target

Step = Literal["install", "reboot", "reboot-rolled-back", "run"]

# Phases no path announces: the factory image is recorded, never reached as a transition.
NEVER_ANNOUNCED = frozenset({Phase.INITIAL})
ROLLBACK = frozenset(
    {
        Phase.ROLLING_BACK,
        Phase.AWAITING_ROLLBACK_REBOOT,
        Phase.FINALIZING_ROLLBACK,
        Phase.FAILED,
    }
)
ROOTFS = frozenset({Phase.PULLING, Phase.DEPLOYING, Phase.AWAITING_REBOOT})


@dataclass(frozen=True)
class UpdatePath:
    """One way an update from v1 to v2 goes, and the phases that cannot occur on it."""

    name: str
    steps: tuple[Step, ...]
    cannot_occur: frozenset[Phase]
    apps_only: bool = False
    failing_apps: bool = False  # v2's apps exit at once
    interrupted_first: bool = False  # an install of v2 was killed while pulling, before
    rolled_back: bool = False  # v1 stays current, v2's install ends FAILED with 99

    @property
    def points(self) -> list[Phase]:
        return [phase for phase in Phase if phase not in self.cannot_occur | NEVER_ANNOUNCED]


PATHS = [
    UpdatePath(
        "install",
        ("install", "reboot", "run"),
        ROLLBACK | {Phase.AWAITING_DOCKER_RESTART, Phase.ABANDONED},
    ),
    UpdatePath(
        "apps-only",
        ("install", "run"),
        ROLLBACK | ROOTFS | {Phase.ABANDONED},
        apps_only=True,
    ),
    UpdatePath(
        "after-an-interrupted-install",
        ("install", "reboot", "run"),
        # the interrupted install had stopped aktualizr-lite already
        ROLLBACK | {Phase.AWAITING_DOCKER_RESTART, Phase.STOPPING_AKLITE},
        interrupted_first=True,
    ),
    UpdatePath(
        "apps-fail-after-reboot",
        ("install", "reboot", "run", "reboot", "run"),
        frozenset({Phase.AWAITING_DOCKER_RESTART, Phase.CURRENT, Phase.ABANDONED}),
        failing_apps=True,
        rolled_back=True,
    ),
    UpdatePath(
        "bootloader-rollback",
        ("install", "reboot-rolled-back", "run"),
        frozenset(
            {
                Phase.AWAITING_DOCKER_RESTART,
                Phase.FINALIZING,
                Phase.ROLLING_BACK,
                Phase.AWAITING_ROLLBACK_REBOOT,
                Phase.CURRENT,
                Phase.ABANDONED,
            }
        ),
        rolled_back=True,
    ),
    UpdatePath(
        "apps-only-apps-fail",
        ("install", "run"),
        ROOTFS
        | {Phase.ROLLING_BACK, Phase.AWAITING_ROLLBACK_REBOOT, Phase.CURRENT, Phase.ABANDONED},
        apps_only=True,
        failing_apps=True,
        rolled_back=True,
    ),
]


CRASHES = [
    pytest.param(path, phase, id=f"{path.name}-{phase}") for path in PATHS for phase in path.points
]


async def prepare(rig: Rig, path: UpdatePath) -> tuple[Target, Target]:
    """v1 current (after an offline update); v2 on a drive, as the path wants it."""
    v1 = make_target(1)
    await rig.update_to(v1)
    v2 = make_target(2, commit=v1.ostree_commit if path.apps_only else None)
    if path.failing_apps:
        rig.device.apps.failing |= set(v2.apps.values())
    bundle = rig.bundle(v2)
    if path.interrupted_first:
        await rig.restart(checkpoint=crash_at(Phase.PULLING))
        with pytest.raises(SimulatedKill):
            await rig.engine.install(bundle)
        await rig.restart()
    return v1, v2


async def act(rig: Rig, step: Step, v2: Target) -> Outcome | None:
    match step:
        case "reboot":
            rig.device.reboot()
        case "reboot-rolled-back":
            rig.device.reboot(rolled_back=True)
        case "run":
            return await rig.engine.run()
        case "install":
            return await rig.engine.install(rig.bundle(v2))
    return None


async def follow(rig: Rig, path: UpdatePath, v2: Target) -> None:
    """Take every step of ``path``; after a crash, the next process repeats the step."""
    for step in path.steps:
        try:
            await act(rig, step, v2)
        except SimulatedKill:
            await rig.restart()
            await act(rig, step, v2)


async def assert_path_ended(rig: Rig, path: UpdatePath, v1: Target, v2: Target) -> None:
    if path.rolled_back:
        await assert_settled_on(rig, v1, code=StatusCode.ROLLBACK_OK)
    else:
        await assert_settled_on(rig, v2)
    assert (await rig.engine.run()).code == StatusCode.NO_PENDING_INSTALLATION


def test_the_crash_points_cover_every_phase_a_transition_can_reach() -> None:
    covered = {phase for path in PATHS for phase in path.points}
    assert covered == set(Phase) - NEVER_ANNOUNCED


@pytest.mark.parametrize("path", PATHS, ids=[path.name for path in PATHS])
async def test_each_path_passes_through_exactly_its_crash_points(
    rig: Rig, path: UpdatePath
) -> None:
    v1, v2 = await prepare(rig, path)
    rig.observer.clear()

    await follow(rig, path, v2)

    assert set(rig.observer.phases) == set(path.points)
    await assert_path_ended(rig, path, v1, v2)


@pytest.mark.parametrize(("path", "phase"), CRASHES)
async def test_a_crash_at_any_phase_is_recovered_by_the_next_process(
    rig: Rig, path: UpdatePath, phase: Phase
) -> None:
    v1, v2 = await prepare(rig, path)
    await rig.restart(checkpoint=crash_at(phase))
    crashed: list[Step] = []

    for step in path.steps:
        try:
            await act(rig, step, v2)
        except SimulatedKill:
            crashed.append(step)
            await rig.restart()
            await act(rig, step, v2)

    assert len(crashed) == 1
    await assert_path_ended(rig, path, v1, v2)


# ---- the recovery of each kind of interruption, one by one ---------------------------------


@pytest.mark.parametrize("phase", [phase for phase in Phase if phase in IN_FLIGHT])
async def test_an_install_interrupted_before_its_deployment_is_abandoned(
    rig: Rig, phase: Phase
) -> None:
    v2 = make_target(2)
    bundle = rig.bundle(v2)
    await rig.restart(checkpoint=crash_at(phase))
    with pytest.raises(SimulatedKill):
        await rig.engine.install(bundle)
    interrupted = await rig.latest()
    await rig.restart()

    outcome = await rig.engine.install(bundle)

    assert outcome.code == StatusCode.NEEDS_REBOOT
    abandoned = next(i for i in await rig.installs() if i.id == interrupted.id)
    assert (abandoned.state, abandoned.result_code) == (Phase.ABANDONED, StatusCode.UNKNOWN_ERROR)
    assert abandoned.result_message == f"interrupted while {phase}; nothing was deployed"
    latest = await rig.latest()
    assert latest.id != interrupted.id
    assert latest.state == Phase.AWAITING_REBOOT
    assert rig.device.rootfs.pending == v2.ostree_commit


async def test_an_interrupted_install_then_run_starts_aktualizr_lite_again(rig: Rig) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    await rig.restart(checkpoint=crash_at(Phase.PULLING))
    with pytest.raises(SimulatedKill):
        await rig.engine.install(rig.bundle(make_target(2)))
    assert not rig.device.aklite_running
    await rig.restart()

    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.NO_PENDING_INSTALLATION
    assert (await rig.latest()).state == Phase.ABANDONED
    await assert_settled_on(rig, v1)


async def test_an_interrupted_install_then_the_running_target_starts_aktualizr_lite_again(
    rig: Rig,
) -> None:
    v1 = make_target(1)
    running = await rig.update_to(v1)
    await rig.restart(checkpoint=crash_at(Phase.PULLING))
    with pytest.raises(SimulatedKill):
        await rig.engine.install(rig.bundle(make_target(2)))
    await rig.restart()

    outcome = await rig.engine.install(running)

    assert outcome.code == StatusCode.OK
    assert (await rig.latest()).state == Phase.ABANDONED
    await assert_settled_on(rig, v1)


@pytest.mark.parametrize("next_call", ["install", "run"])
async def test_a_crash_after_the_deployment_resumes_waiting_for_the_reboot(
    rig: Rig, next_call: str
) -> None:
    v2 = make_target(2)
    bundle = rig.bundle(v2)
    rig.device.faults.fail("rootfs.deploy.after", SimulatedKill())
    with pytest.raises(SimulatedKill):
        await rig.engine.install(bundle)
    interrupted = await rig.latest()
    assert interrupted.state == Phase.DEPLOYING
    rig.device.faults.clear()
    rig.device.reboot_marker.marked = False  # the kill came before the marker was written
    await rig.restart()

    outcome = await (rig.engine.install(bundle) if next_call == "install" else rig.engine.run())

    assert outcome.code == StatusCode.NEEDS_REBOOT
    resumed = await rig.latest()
    assert (resumed.id, resumed.state) == (interrupted.id, Phase.AWAITING_REBOOT)
    assert (await rig.events(resumed.id))[-1].detail == {"resumed": True}
    assert rig.device.rootfs.deployed.count(v2.ostree_commit) == 1
    assert rig.device.reboot_marker.marked
    rig.device.reboot()
    assert (await rig.engine.run()).code == StatusCode.OK
    await assert_settled_on(rig, v2)


async def test_a_crash_after_the_rollback_deployment_resumes_waiting_for_the_reboot(
    rig: Rig,
) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    rig.device.apps.failing |= set(v2.apps.values())
    await rig.engine.install(rig.bundle(v2))
    rig.device.reboot()
    rig.device.faults.fail("rootfs.deploy.after", SimulatedKill())
    with pytest.raises(SimulatedKill):
        await rig.engine.run()
    assert (await rig.latest()).state == Phase.ROLLING_BACK
    rig.device.faults.clear()
    await rig.restart()

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.NEEDS_REBOOT, v1.name)
    assert (await rig.latest()).state == Phase.AWAITING_ROLLBACK_REBOOT
    assert rig.device.rootfs.deployed.count(v1.ostree_commit) == 2  # v1's update, then once
    rig.device.reboot()
    assert (await rig.engine.run()).code == StatusCode.OK
    await assert_settled_on(rig, v1, code=StatusCode.ROLLBACK_OK)


async def test_a_crash_while_finalizing_is_picked_up_by_the_next_run(rig: Rig) -> None:
    v2 = make_target(2)
    await rig.engine.install(rig.bundle(v2))
    rig.device.reboot()
    await rig.restart(checkpoint=crash_at(Phase.FINALIZING))
    with pytest.raises(SimulatedKill):
        await rig.engine.run()
    assert (await rig.latest()).state == Phase.FINALIZING
    await rig.restart()

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.OK, v2.name)
    await assert_settled_on(rig, v2)


async def test_a_crash_after_the_target_became_current_is_completed_by_the_next_run(
    rig: Rig,
) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    await rig.engine.install(rig.bundle(v2))
    rig.device.reboot()
    await rig.restart(checkpoint=crash_at(Phase.CURRENT))
    with pytest.raises(SimulatedKill):
        await rig.engine.run()
    written = rig.device.current_file.target
    assert written is not None
    assert written.name == v1.name  # the kill came before current-target was written
    assert not rig.device.aklite_running
    await rig.restart()

    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.NO_PENDING_INSTALLATION
    await assert_settled_on(rig, v2)
