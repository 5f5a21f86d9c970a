"""Jobs: one update at a time, the status it publishes, and what follows an update."""

from __future__ import annotations

import pytest

from aklited.daemon.jobs import Jobs, Status
from aklited.engine.model import Outcome
from aklited.engine.phases import Phase
from aklited.errors import BusyError
from aklited.outcomes import State, StatusCode
from tests.fakes import Rig, make_target


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[Status] = []
        self.completed: list[tuple[int, str]] = []

    def changed(self, _before: Status, after: Status) -> None:
        self.statuses.append(after)


async def jobs_on(rig: Rig, recorder: Recorder) -> Jobs:
    jobs = Jobs(recorder.changed)
    # The daemon's engine reports its phases and progress to Jobs.
    rig.engine = rig.device.engine(rig.journal, observer=jobs)
    jobs.attach(rig.engine)
    jobs.on_completed(lambda code, message: recorder.completed.append((code, message)))
    await jobs.refresh()
    return jobs


async def test_an_install_is_published_phase_by_phase_and_completes(rig: Rig) -> None:
    recorder = Recorder()
    jobs = await jobs_on(rig, recorder)
    target = make_target(2)

    jobs.start_install(rig.bundle(target))
    await jobs.wait()

    states = [s.state for s in recorder.statuses]
    assert State.VERIFYING in states and State.INSTALLING in states
    assert jobs.status.state == State.AWAITING_REBOOT
    assert jobs.status.pending["name"] == target.name
    assert jobs.status.last_result[0] == StatusCode.NEEDS_REBOOT
    assert [code for code, _ in recorder.completed] == [StatusCode.NEEDS_REBOOT]


async def test_a_second_update_while_one_runs_is_busy(rig: Rig) -> None:
    jobs = await jobs_on(rig, Recorder())
    gate = rig.device.faults.gate("rootfs.pull")
    jobs.start_install(rig.bundle(make_target(2)))
    await gate.entered.wait()

    with pytest.raises(BusyError, match="an update is already running"):
        jobs.start_install(rig.bundle(make_target(3)))
    with pytest.raises(BusyError):
        jobs.start_run()

    gate.open()
    await jobs.wait()
    assert jobs.status.last_result[0] == StatusCode.NEEDS_REBOOT


async def test_a_failed_install_is_the_last_result_and_the_daemon_goes_on(rig: Rig) -> None:
    recorder = Recorder()
    jobs = await jobs_on(rig, recorder)
    rig.device.faults.fail("rootfs.pull", RuntimeError("ostree said something new"))

    jobs.start_install(rig.bundle(make_target(2)))
    await jobs.wait()

    code, message = jobs.status.last_result
    assert code == StatusCode.UNKNOWN_ERROR and "ostree said something new" in message
    assert jobs.status.state == State.IDLE
    rig.device.faults.clear()
    jobs.start_install(rig.bundle(make_target(2)))
    await jobs.wait()
    assert jobs.status.last_result[0] == StatusCode.NEEDS_REBOOT


async def test_an_update_that_asks_to_be_run_at_once_is_finished(rig: Rig) -> None:
    # An apps-only update: the daemon restarts dockerd, then finishes it without a reboot.
    recorder = Recorder()
    jobs = await jobs_on(rig, recorder)
    v1 = make_target(1)
    await rig.update_to(v1)
    acted: list[int] = []

    async def after(outcome: Outcome) -> bool:
        acted.append(int(outcome.code))
        return outcome.code == StatusCode.NEEDS_DOCKER_RESTART

    jobs.attach(rig.engine, after=after)
    v2 = make_target(2, commit=v1.ostree_commit)
    jobs.start_install(rig.bundle(v2))
    await jobs.wait()

    assert acted == [StatusCode.NEEDS_DOCKER_RESTART, StatusCode.OK]
    assert [code for code, _ in recorder.completed][-2:] == [
        StatusCode.NEEDS_DOCKER_RESTART,
        StatusCode.OK,
    ]
    assert jobs.status.current["name"] == v2.name
    assert jobs.status.state == State.IDLE


async def test_cancel_stops_the_update_and_it_is_settled(rig: Rig) -> None:
    jobs = await jobs_on(rig, Recorder())
    gate = rig.device.faults.gate("rootfs.pull")
    jobs.start_install(rig.bundle(make_target(2)))
    await gate.entered.wait()

    await jobs.cancel()

    assert not jobs.busy
    assert "cancelled" in jobs.status.last_result[1]
    assert (await rig.latest()).result_message is not None


async def test_phase_listeners_hear_each_phase_while_their_block_runs(rig: Rig) -> None:
    jobs = await jobs_on(rig, Recorder())
    heard: list[Phase] = []
    with jobs.phases(heard.append):
        jobs.start_install(rig.bundle(make_target(2)))
        await jobs.wait()
    assert heard[0] == Phase.VERIFYING
    assert Phase.PULLING in heard and Phase.DEPLOYING in heard
    assert heard[-1] == Phase.AWAITING_REBOOT
    during = len(heard)
    rig.device.reboot()
    assert (await jobs.engine.run()).code == StatusCode.OK  # finalizing, then current
    assert len(heard) == during  # after the block: nothing more reached the listener
