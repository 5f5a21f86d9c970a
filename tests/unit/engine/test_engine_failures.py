"""``Engine.install`` failures: every port at every step, unexpected exceptions, cancellation.

Each failure ends the install FAILED with the error's code, names the step in a
``<phase>-failed`` event, starts aktualizr-lite again if the install stopped it, frees the
lock and reaches the caller as the leaf type the port raised.
"""

from __future__ import annotations

import asyncio

import pytest

from aklited.engine.engine import AKLITE_UNIT, INITIAL_TARGET
from aklited.engine.phases import Phase
from aklited.errors import (
    AkliteError,
    AppsContentMissingError,
    AppsCopyError,
    AppsCorruptError,
    AppsEngineMissingError,
    AppsNoSpaceError,
    AppsRunError,
    BundleContentRejectedError,
    BundleContentUnreadableError,
    BundleMetadataError,
    DowngradeRefusedError,
    InternalError,
    MetadataExpiredError,
    MetadataMissingError,
    MetadataRejectedError,
    MetadataUnreadableError,
    NoMatchingTargetError,
    RootfsCopyError,
    RootfsCorruptError,
    RootfsNoSpaceError,
    RootfsSysrootError,
    ServiceError,
    TargetContentMissingError,
    TargetNotFoundError,
)
from aklited.outcomes import StatusCode
from tests.fakes import Op, Rig, SimulatedKill, make_target

# (port call, what it raises, the step journalled as failed, the outcome code)
PORT_FAILURES = [
    ("services.stop_unit", ServiceError("StopUnit: job failed"), Phase.STOPPING_AKLITE, 1),
    ("rootfs.pull", RootfsCopyError("reading the drive: I/O error"), Phase.PULLING, 50),
    ("rootfs.pull", RootfsNoSpaceError("needs 900 MiB, 12 MiB free"), Phase.PULLING, 60),
    ("rootfs.pull", RootfsCorruptError("object does not match its name"), Phase.PULLING, 70),
    ("apps.copy", AppsContentMissingError("blob absent from the bundle"), Phase.STAGING_APPS, 8),
    ("apps.copy", AppsCopyError("reading the drive: I/O error"), Phase.STAGING_APPS, 50),
    ("apps.copy", AppsNoSpaceError("the app store lacks 2 GiB"), Phase.STAGING_APPS, 60),
    ("apps.copy", AppsCorruptError("blob does not match its digest"), Phase.STAGING_APPS, 70),
    ("apps.load", AppsRunError("docker load failed"), Phase.STAGING_APPS, 80),
    ("rootfs.deploy", RootfsSysrootError("ostree admin deploy failed"), Phase.DEPLOYING, 1),
    ("rootfs.deploy", RootfsNoSpaceError("/boot is full"), Phase.DEPLOYING, 60),
]

# Port calls between the journal's steps: their failure ends the install as well.
BETWEEN_STEPS: list[tuple[Op, AkliteError]] = [
    ("services.unit_state", ServiceError("GetUnit: systemd does not answer")),
    ("apps.stage_size", AppsCopyError("reading a manifest off the drive: I/O error")),
]

TRUST_FAILURES = [
    (MetadataUnreadableError("tuf/timestamp.json: I/O error"), 4),
    (NoMatchingTargetError("no target for hwid intel-corei7-64, tag main"), 6),
    (TargetContentMissingError("the bundle lacks commit 3f2a..."), 8),
    (MetadataRejectedError("targets.json: signature threshold not met"), 11),
    (MetadataExpiredError("timestamp.json expired"), 12),
    (MetadataMissingError("tuf/root.json is absent"), 14),
    (BundleMetadataError("bundle-targets.json: bad signature"), 15),
    (TargetNotFoundError("no target named lmp-7"), 20),
    (DowngradeRefusedError("lmp-1 is older than the running lmp-2"), 102),
    (BundleContentUnreadableError("reading the drive: I/O error"), 50),
    (BundleContentRejectedError("ostree_repo/config is a link out of the bundle"), 70),
]

UNEXPECTED: list[tuple[Op, BaseException, Phase]] = [
    ("rootfs.pull", RuntimeError("ostree said something new"), Phase.PULLING),
    ("apps.copy", TimeoutError(), Phase.STAGING_APPS),
    ("services.stop_unit", OSError(5, "Input/output error"), Phase.STOPPING_AKLITE),
    ("rootfs.deploy", ValueError("bad deployment index"), Phase.DEPLOYING),
]

GATES: list[tuple[Op, Phase]] = [
    ("services.stop_unit", Phase.STOPPING_AKLITE),
    ("rootfs.pull", Phase.PULLING),
    ("apps.copy", Phase.STAGING_APPS),
    # The rootfs and the images side by side: the step still under way is the one cancelled.
    ("rootfs.pull.copying", Phase.PULLING),
    ("apps.load", Phase.STAGING_APPS),
    ("rootfs.deploy", Phase.DEPLOYING),
]


async def assert_settled_after_failure(rig: Rig, code: int, message: str) -> None:
    """The install ended FAILED with ``code``; nothing is left stopped, held or deployed."""
    install = await rig.latest()
    assert (install.state, install.result_code) == (Phase.FAILED, code)
    assert install.result_message == message
    assert (await rig.current()).target_name == INITIAL_TARGET
    device = rig.device
    assert device.aklite_running
    if ("stop", AKLITE_UNIT) in device.services.jobs:  # started again after it was stopped
        assert device.services.jobs[-1] == ("start", AKLITE_UNIT)
    assert await rig.aklite_setting() is None
    assert not device.lock.held
    assert device.rootfs.pending is None
    assert not device.reboot_marker.marked


@pytest.mark.parametrize(
    ("op", "error", "phase", "code"),
    PORT_FAILURES,
    ids=[f"{op}-{type(error).__name__}" for op, error, _, _ in PORT_FAILURES],
)
async def test_a_port_failure_ends_the_install_failed_and_settled(
    rig: Rig, op: Op, error: AkliteError, phase: Phase, code: int
) -> None:
    bundle = rig.bundle(make_target(2))
    rig.device.faults.fail(op, error)

    with pytest.raises(type(error)) as raised:
        await rig.engine.install(bundle)

    assert raised.value is error
    assert raised.value.code == code
    await assert_settled_after_failure(rig, code, str(error))
    install = await rig.latest()
    assert await rig.failures(install.id) == [(f"{phase}-failed", code)]
    rig.device.faults.clear()
    assert (await rig.engine.install(bundle)).code == StatusCode.NEEDS_REBOOT


@pytest.mark.parametrize(("op", "error"), BETWEEN_STEPS, ids=[op for op, _ in BETWEEN_STEPS])
async def test_a_failure_between_the_steps_ends_the_install_failed_and_settled(
    rig: Rig, op: Op, error: AkliteError
) -> None:
    rig.device.faults.fail(op, error)

    with pytest.raises(type(error)) as raised:
        await rig.engine.install(rig.bundle(make_target(2)))

    assert raised.value is error
    await assert_settled_after_failure(rig, error.code, str(error))


@pytest.mark.parametrize(("op", "error"), BETWEEN_STEPS, ids=[op for op, _ in BETWEEN_STEPS])
async def test_a_failure_between_the_steps_is_journalled_as_a_failed_step(
    rig: Rig, op: Op, error: AkliteError
) -> None:
    rig.device.faults.fail(op, error)

    with pytest.raises(type(error)):
        await rig.engine.install(rig.bundle(make_target(2)))

    install = await rig.latest()
    assert [code for _, code in await rig.failures(install.id)] == [error.code]


@pytest.mark.parametrize(
    ("error", "code"),
    TRUST_FAILURES,
    ids=[type(error).__name__ for error, _ in TRUST_FAILURES],
)
async def test_a_bundle_that_fails_verification_changes_nothing(
    rig: Rig, error: AkliteError, code: int
) -> None:
    rig.device.faults.fail("trust.select", error)

    with pytest.raises(type(error)) as raised:
        await rig.engine.install(rig.bundle(make_target(2)))

    assert raised.value is error
    assert raised.value.code == code
    assert [i.target_name for i in await rig.installs()] == [INITIAL_TARGET]
    device = rig.device
    assert device.services.jobs == []
    assert device.aklite_running
    assert not device.lock.held
    assert "rootfs.pull" not in device.faults.calls


async def test_without_a_docker_engine_an_install_with_apps_is_refused_before_anything(
    rig: Rig,
) -> None:
    error = AppsEngineMissingError("no Docker engine answers at unix:///run/docker.sock")
    rig.device.faults.fail("apps.ready", error)

    with pytest.raises(AppsEngineMissingError) as raised:
        await rig.engine.install(rig.bundle(make_target(2)))

    assert raised.value.code == StatusCode.IMAGE_LOAD_FAILED
    assert [i.target_name for i in await rig.installs()] == [INITIAL_TARGET]
    device = rig.device
    assert device.services.jobs == []  # aktualizr-lite was never stopped
    assert device.rootfs.pulled == [] and "apps.copy" not in device.faults.calls
    assert [e.state for e in (await rig.events())[-1:]] == [f"{Phase.VERIFYING}-failed"]
    assert not device.lock.held


async def test_without_a_docker_engine_a_rootfs_only_target_installs(rig: Rig) -> None:
    rig.device.faults.fail("apps.ready", AppsEngineMissingError("no Docker engine answers"))

    outcome = await rig.engine.install(rig.bundle(make_target(2, apps=())))

    assert outcome.code == StatusCode.NEEDS_REBOOT
    assert "apps.ready" not in rig.device.faults.calls


async def test_a_failed_verification_is_journalled(rig: Rig) -> None:
    error = MetadataExpiredError("timestamp.json expired")
    rig.device.faults.fail("trust.select", error)

    with pytest.raises(MetadataExpiredError):
        await rig.engine.install(rig.bundle(make_target(2)))

    events = await rig.events()
    assert [(e.state, e.detail.get("code")) for e in events[-1:]] == [
        (f"{Phase.VERIFYING}-failed", error.code)
    ]


# ---- unexpected exceptions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "error", "phase"), UNEXPECTED, ids=[type(e).__name__ for _, e, _ in UNEXPECTED]
)
async def test_an_unexpected_exception_becomes_an_internal_error(
    rig: Rig, op: Op, error: BaseException, phase: Phase
) -> None:
    rig.device.faults.fail(op, error)

    with pytest.raises(InternalError) as raised:
        await rig.engine.install(rig.bundle(make_target(2)))

    internal = raised.value
    assert internal.code == StatusCode.UNKNOWN_ERROR
    assert internal.__cause__ is error
    assert type(error).__name__ in str(internal)
    await assert_settled_after_failure(rig, StatusCode.UNKNOWN_ERROR, str(internal))
    install = await rig.latest()
    assert await rig.failures(install.id) == [(f"{phase}-failed", StatusCode.UNKNOWN_ERROR)]


async def test_an_unexpected_exception_before_the_install_starts_is_an_internal_error(
    rig: Rig,
) -> None:
    rig.device.faults.fail("rootfs.booted_commit", RuntimeError("sysroot vanished"))

    with pytest.raises(InternalError):
        await rig.engine.install(rig.bundle(make_target(2)))


# ---- cancellation -------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "phase"), GATES, ids=[op for op, _ in GATES])
async def test_a_cancelled_install_is_settled_and_ends_cancelled(
    rig: Rig, op: Op, phase: Phase
) -> None:
    gate = rig.device.faults.gate(op)
    task = asyncio.create_task(rig.engine.install(rig.bundle(make_target(2))))
    await gate.entered.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert task.cancelled()
    install = await rig.latest()
    assert install.result_message is not None
    assert "cancelled" in install.result_message
    await assert_settled_after_failure(rig, StatusCode.UNKNOWN_ERROR, install.result_message)
    assert await rig.failures(install.id) == [(f"{phase}-failed", StatusCode.UNKNOWN_ERROR)]


# ---- after the deployment took effect -----------------------------------------------------


@pytest.mark.parametrize(
    ("op", "error"),
    [
        ("reboot.mark_needed", OSError(28, "No space left on device")),
        ("rootfs.deploy.after", RootfsSysrootError("removing old deployments failed")),
    ],
    ids=["mark_needed", "deploy-after-effect"],
)
async def test_a_failure_after_the_deployment_took_effect_is_not_a_failed_install(
    rig: Rig, op: Op, error: BaseException
) -> None:
    # The next boot runs the new rootfs whatever the step said: the install waits for it.
    target = make_target(2)
    rig.device.faults.fail(op, error)

    outcome = await rig.engine.install(rig.bundle(target))

    assert (outcome.code, outcome.target) == (StatusCode.NEEDS_REBOOT, target.name)
    assert rig.device.rootfs.pending == target.ostree_commit
    assert (await rig.latest()).state == Phase.AWAITING_REBOOT


async def test_a_simulated_kill_is_not_settled_by_the_engine(rig: Rig) -> None:
    # The crash tests rely on it: SimulatedKill passes through every except clause.
    rig.device.faults.fail("rootfs.pull", SimulatedKill())

    with pytest.raises(SimulatedKill):
        await rig.engine.install(rig.bundle(make_target(2)))

    assert (await rig.latest()).state == Phase.PULLING
    assert await rig.failures((await rig.latest()).id) == []


async def test_a_cancel_after_the_deployment_took_effect_waits_for_the_reboot_and_ends_cancelled(
    rig: Rig,
) -> None:
    target = make_target(2)
    gate = rig.device.faults.gate("rootfs.deploy.after")
    task = asyncio.create_task(rig.engine.install(rig.bundle(target)))
    await gate.entered.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The caller asked to stop, and is told so; the device boots the new rootfs next, and
    # the journal says it waits for that.
    assert task.cancelled()
    assert rig.device.rootfs.pending == target.ostree_commit
    assert (await rig.latest()).state == Phase.AWAITING_REBOOT
    assert rig.device.reboot_marker.marked


async def test_a_failing_clean_up_does_not_replace_the_failure(rig: Rig) -> None:
    rig.device.faults.fail("rootfs.pull", RootfsNoSpaceError("no space for the commit"))
    rig.device.faults.fail("services.start_unit", ServiceError("StartUnit: job failed"))

    with pytest.raises(RootfsNoSpaceError) as raised:
        await rig.engine.install(rig.bundle(make_target(2)))

    assert raised.value.code == StatusCode.NO_SPACE
    assert any("StartUnit: job failed" in note for note in raised.value.__notes__)
    install = await rig.latest()
    assert (install.state, install.result_code) == (Phase.FAILED, StatusCode.NO_SPACE)
    assert not rig.device.lock.held


async def test_failures_are_not_kept_once_a_call_has_ended(rig: Rig) -> None:
    # A daemon runs for years: a failed call must not leave its exception (and the frames
    # it holds) behind in the engine.
    rig.device.faults.fail("trust.select", MetadataMissingError("tuf/root.json: is missing"))
    with pytest.raises(MetadataMissingError):
        await rig.engine.install(rig.bundle(make_target(2)))

    assert rig.engine._journalled == []


async def test_what_is_missing_is_said_whatever_the_apps_port_raises(rig: Rig) -> None:
    # The daemon asks at start: a surprise there is a reason to say, never to stop.
    rig.device.faults.fail("apps.ready", ValueError("Missing protocol scheme"))

    [missing] = await rig.engine.missing_parts()

    assert isinstance(missing, InternalError) and "Missing protocol scheme" in missing.message
