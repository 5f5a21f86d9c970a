"""``Engine.run``: finalizing after the reboot or dockerd restart, and every rollback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aklited.engine.engine import INITIAL_TARGET
from aklited.engine.model import Target
from aklited.engine.phases import Phase
from aklited.errors import (
    AkliteError,
    AppsCopyError,
    InternalError,
    RootfsSysrootError,
    ServiceError,
)
from aklited.outcomes import StatusCode
from tests.fakes import FACTORY_COMMIT, FakeDevice, Op, Rig, assert_settled_on, make_target


async def installed(rig: Rig, target: Target, *, failing: bool = False) -> None:
    """``target`` installed, its apps failing at start if asked; the install's code checked."""
    if failing:
        rig.device.apps.failing |= set(target.apps.values())
    outcome = await rig.engine.install(rig.bundle(target))
    assert outcome.code in (StatusCode.NEEDS_REBOOT, StatusCode.NEEDS_DOCKER_RESTART)


# ---- finalize ------------------------------------------------------------------------------


async def test_run_after_the_reboot_makes_the_target_current(rig: Rig) -> None:
    v2 = make_target(2)
    await installed(rig, v2)
    rig.device.reboot()

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.OK, v2.name)
    install = await rig.latest()
    assert (install.state, install.result_code) == (Phase.CURRENT, StatusCode.OK)
    assert install.is_current and install.was_installed
    assert (await rig.states(install.id))[-2:] == [Phase.FINALIZING, Phase.CURRENT]
    await assert_settled_on(rig, v2)
    written = rig.device.current_file.target
    assert written is not None
    assert (written.ostree_commit, written.apps, written.tag) == (
        v2.ostree_commit,
        v2.apps,
        v2.tag,
    )
    assert rig.device.rootfs.prunes == 1
    assert rig.device.rootfs.rollback == FACTORY_COMMIT  # kept to go back to


async def test_run_retires_the_apps_the_new_target_no_longer_has(rig: Rig) -> None:
    v1 = make_target(1, apps=("web", "db"))
    await rig.update_to(v1)
    v2 = make_target(2, apps=("web",))
    await installed(rig, v2)
    rig.device.reboot()

    await rig.engine.run()

    assert rig.device.apps.running == dict(v2.apps)
    assert rig.device.apps.store == set(v2.apps.values())


async def test_run_before_the_reboot_waits_for_it(rig: Rig) -> None:
    v2 = make_target(2)
    await installed(rig, v2)

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.NEEDS_REBOOT, v2.name)
    assert (await rig.latest()).state == Phase.AWAITING_REBOOT
    assert rig.device.apps.started == []
    assert not rig.device.aklite_running


async def test_run_with_nothing_pending_is_40_and_writes_nothing(rig: Rig) -> None:
    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.NO_PENDING_INSTALLATION
    assert await rig.installs() == []
    assert rig.device.current_file.written == []
    assert rig.device.services.jobs == []


async def test_run_after_the_update_finished_is_40(rig: Rig) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    installs = await rig.installs()

    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.NO_PENDING_INSTALLATION
    assert await rig.installs() == installs
    await assert_settled_on(rig, v1)


async def test_run_after_an_apps_only_install_starts_the_new_apps(rig: Rig) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    v2 = make_target(2, commit=v1.ostree_commit)
    await installed(rig, v2)

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.OK, v2.name)
    await assert_settled_on(rig, v2)
    assert not set(v1.apps.values()) & rig.device.apps.store  # the old versions retired


# ---- rollbacks ----------------------------------------------------------------------------


async def test_bootloader_rollback_keeps_the_previous_target_and_restarts_its_apps(
    rig: Rig,
) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    await installed(rig, v2)
    rig.device.reboot(rolled_back=True)

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.ROLLBACK_OK, v1.name)
    failed = await rig.latest()
    assert failed.target_name == v2.name
    assert Phase.FINALIZING_ROLLBACK in await rig.states(failed.id)
    assert Phase.FINALIZING not in await rig.states(failed.id)  # v2's apps never started
    assert rig.device.apps.started[-1] == dict(v1.apps)
    assert not set(v2.apps.values()) & rig.device.apps.store
    await assert_settled_on(rig, v1, code=StatusCode.ROLLBACK_OK)


async def test_bootloader_rollback_to_the_factory_image(rig: Rig) -> None:
    await installed(rig, make_target(1))
    rig.device.reboot(rolled_back=True)

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.ROLLBACK_OK, INITIAL_TARGET)
    assert (await rig.current()).target_name == INITIAL_TARGET
    assert rig.device.rootfs.booted == FACTORY_COMMIT
    assert rig.device.aklite_running


async def test_apps_failing_after_the_reboot_deploy_the_previous_target_again(rig: Rig) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    await installed(rig, v2, failing=True)
    rig.device.reboot()

    first = await rig.engine.run()

    assert (first.code, first.target) == (StatusCode.NEEDS_REBOOT, v1.name)
    install = await rig.latest()
    assert install.state == Phase.AWAITING_ROLLBACK_REBOOT
    assert await rig.failures(install.id) == [
        (f"{Phase.FINALIZING}-failed", StatusCode.IMAGE_LOAD_FAILED)
    ]
    assert rig.device.rootfs.pending == v1.ostree_commit
    assert rig.device.reboot_marker.marked
    assert not rig.device.aklite_running
    assert (await rig.engine.run()).code == StatusCode.NEEDS_REBOOT  # not rebooted yet

    rig.device.reboot()
    second = await rig.engine.run()

    assert (second.code, second.target) == (StatusCode.OK, v1.name)
    assert "rolled back" in second.message
    assert (await rig.states(install.id))[-4:] == [
        Phase.ROLLING_BACK,
        Phase.AWAITING_ROLLBACK_REBOOT,
        Phase.FINALIZING_ROLLBACK,
        Phase.FAILED,
    ]
    await assert_settled_on(rig, v1, code=StatusCode.ROLLBACK_OK)


async def test_failing_apps_of_an_apps_only_update_bring_the_previous_apps_back(
    rig: Rig,
) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    v2 = make_target(2, commit=v1.ostree_commit)
    await installed(rig, v2, failing=True)

    outcome = await rig.engine.run()

    assert (outcome.code, outcome.target) == (StatusCode.ROLLBACK_OK, v1.name)
    assert rig.device.rootfs.deployed == [v1.ostree_commit]  # no reboot needed
    await assert_settled_on(rig, v1, code=StatusCode.ROLLBACK_OK)


async def test_no_previous_target_is_rollback_failed(tmp_path: Path) -> None:
    # The device cannot tell what it booted: the journal has no target to go back to.
    rig = await Rig.open(tmp_path, FakeDevice(booted=None))
    try:
        v1 = make_target(1)
        await installed(rig, v1, failing=True)
        assert (await rig.latest()).previous_id is None
        rig.device.reboot()

        outcome = await rig.engine.run()

        assert outcome.code == StatusCode.ROLLBACK_FAILED
        assert "no previous target" in outcome.message
        failed = await rig.latest()
        assert (failed.state, failed.result_code) == (Phase.FAILED, StatusCode.ROLLBACK_FAILED)
        assert rig.device.rootfs.deployed == [v1.ostree_commit]  # nothing deployed again
    finally:
        await rig.aclose()


async def test_previous_commit_gone_is_rollback_failed(rig: Rig) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    await installed(rig, v2, failing=True)
    rig.device.reboot()
    rig.device.rootfs.commits.discard(v1.ostree_commit)

    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.ROLLBACK_FAILED
    failed = await rig.latest()
    assert (failed.state, failed.result_code) == (Phase.FAILED, StatusCode.ROLLBACK_FAILED)
    assert rig.device.rootfs.pending is None


async def test_previous_apps_failing_too_is_rollback_failed(rig: Rig) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    await installed(rig, v2)
    rig.device.reboot(rolled_back=True)
    rig.device.apps.failing |= set(v1.apps.values())

    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.ROLLBACK_FAILED
    assert "previous apps failed too" in outcome.message
    failed = await rig.latest()
    assert (failed.state, failed.result_code) == (Phase.FAILED, StatusCode.ROLLBACK_FAILED)
    assert (await rig.current()).target_name == v1.name


async def test_booting_neither_target_after_the_rollback_is_rollback_failed(rig: Rig) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    await installed(rig, v2, failing=True)
    rig.device.reboot()
    assert (await rig.engine.run()).code == StatusCode.NEEDS_REBOOT
    rig.device.reboot(rolled_back=True)  # the bootloader stays on v2

    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.ROLLBACK_FAILED
    assert v2.ostree_commit in outcome.message
    failed = await rig.latest()
    assert (failed.state, failed.result_code) == (Phase.FAILED, StatusCode.ROLLBACK_FAILED)


async def test_rollback_failed_starts_aktualizr_lite_again(rig: Rig) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    await installed(rig, v2, failing=True)
    rig.device.reboot()
    rig.device.rootfs.commits.discard(v1.ostree_commit)

    assert (await rig.engine.run()).code == StatusCode.ROLLBACK_FAILED

    assert rig.device.aklite_running


# ---- failures while finalizing ------------------------------------------------------------

RUN_FAILURES: list[tuple[Op, BaseException, type[AkliteError]]] = [
    ("reboot.needed", OSError(5, "Input/output error"), InternalError),
    ("rootfs.booted_commit", RootfsSysrootError("ostree admin status failed"), RootfsSysrootError),
    ("apps.retire", AppsCopyError("reading the device's app store failed"), AppsCopyError),
    ("services.start_unit", ServiceError("StartUnit: job failed"), ServiceError),
]


@pytest.mark.parametrize(
    ("op", "error", "raised"), RUN_FAILURES, ids=[op for op, _, _ in RUN_FAILURES]
)
async def test_a_port_failure_in_run_is_raised_and_the_next_run_finishes(
    rig: Rig, op: Op, error: BaseException, raised: type[AkliteError]
) -> None:
    v2 = make_target(2)
    await installed(rig, v2)
    rig.device.reboot()
    rig.device.faults.fail(op, error)

    with pytest.raises(raised) as failure:
        await rig.engine.run()

    assert failure.value is error or failure.value.__cause__ is error
    assert not rig.device.lock.held
    rig.device.faults.clear()
    outcome = await rig.engine.run()
    # unless the journal had made v2 current already, the update was still pending
    assert outcome.code in (StatusCode.OK, StatusCode.NO_PENDING_INSTALLATION)
    await assert_settled_on(rig, v2)


async def test_an_unexpected_failure_while_finalizing_keeps_the_install_pending(
    rig: Rig,
) -> None:
    v2 = make_target(2)
    await installed(rig, v2)
    rig.device.reboot()
    rig.device.faults.fail("apps.start", RuntimeError("docker went away"))

    with pytest.raises(InternalError) as raised:
        await rig.engine.run()

    assert raised.value.code == StatusCode.UNKNOWN_ERROR
    install = await rig.latest()
    assert install.state == Phase.FINALIZING
    assert await rig.failures(install.id) == [
        (f"{Phase.FINALIZING}-failed", StatusCode.UNKNOWN_ERROR)
    ]
    assert not rig.device.lock.held
    rig.device.faults.clear()
    assert (await rig.engine.run()).code == StatusCode.OK
    await assert_settled_on(rig, v2)


async def test_a_cancelled_run_stays_pending_and_the_next_run_finishes(rig: Rig) -> None:
    v2 = make_target(2)
    await installed(rig, v2)
    rig.device.reboot()
    gate = rig.device.faults.gate("apps.start")
    task = asyncio.create_task(rig.engine.run())
    await gate.entered.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert task.cancelled()
    install = await rig.latest()
    assert install.state == Phase.FINALIZING
    assert await rig.failures(install.id) == [
        (f"{Phase.FINALIZING}-failed", StatusCode.UNKNOWN_ERROR)
    ]
    assert not rig.device.lock.held
    del rig.device.faults.gates["apps.start"]
    assert (await rig.engine.run()).code == StatusCode.OK
    await assert_settled_on(rig, v2)


async def test_a_failure_after_the_target_became_current_starts_aktualizr_lite(
    rig: Rig,
) -> None:
    await installed(rig, make_target(2))
    rig.device.reboot()
    rig.device.faults.fail("current_file.write", OSError(28, "No space left on device"))

    with pytest.raises(InternalError):
        await rig.engine.run()

    assert (await rig.latest()).state == Phase.CURRENT
    assert rig.device.aklite_running


async def test_a_failing_prune_does_not_keep_a_working_update_pending(rig: Rig) -> None:
    await installed(rig, make_target(2))
    rig.device.reboot()
    rig.device.faults.fail("rootfs.prune", RootfsSysrootError("ostree prune failed"))

    outcome = await rig.engine.run()

    assert outcome.code == StatusCode.OK
    assert (await rig.latest()).state == Phase.CURRENT
