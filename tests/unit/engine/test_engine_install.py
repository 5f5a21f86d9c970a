"""``Engine.install``: each outcome, the journal it leaves, one call at a time, progress."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from aklited.engine.engine import AKLITE_UNIT, INITIAL_TARGET, EngineSettings
from aklited.engine.journal import Journal
from aklited.engine.model import GuardTarget
from aklited.engine.phases import Phase
from aklited.errors import BusyError, DowngradeRefusedError, LockHeldError, PendingInstallError
from aklited.outcomes import StatusCode
from tests.fakes import (
    FACTORY_COMMIT,
    ROOTFS_AND_APPS_INSTALL,
    FakeDevice,
    Op,
    Rig,
    SelectCall,
    make_target,
)

# The journal's own phases: "verifying" comes before the install row exists.
ROOTFS_AND_APPS_STEPS = ROOTFS_AND_APPS_INSTALL[1:]


# ---- the outcomes -------------------------------------------------------------------------


async def test_rootfs_and_apps_install_is_deployed_and_waits_for_a_reboot(rig: Rig) -> None:
    target = make_target(2)
    outcome = await rig.engine.install(rig.bundle(target))

    assert (outcome.code, outcome.target) == (StatusCode.NEEDS_REBOOT, target.name)
    install = await rig.latest()
    assert (install.target_name, install.state) == (target.name, Phase.AWAITING_REBOOT)
    assert install.result_code is None
    assert await rig.states(install.id) == ROOTFS_AND_APPS_STEPS
    assert rig.observer.phases == ROOTFS_AND_APPS_INSTALL
    device = rig.device
    assert device.rootfs.pulled == [target.ostree_commit]
    assert (device.rootfs.booted, device.rootfs.pending) == (FACTORY_COMMIT, target.ostree_commit)
    assert device.reboot_marker.marked
    assert set(target.apps.values()) <= device.apps.store
    assert device.apps.started == []  # the apps start after the reboot
    assert not device.aklite_running  # stopped until the update is finalized
    assert await rig.aklite_setting() == "1"
    assert (await rig.current()).target_name == INITIAL_TARGET
    assert not device.lock.held


async def test_first_install_records_the_factory_image_it_replaces(rig: Rig) -> None:
    await rig.engine.install(rig.bundle(make_target(2)))

    initial, install = await rig.installs()
    assert (initial.target_name, initial.ostree_commit) == (INITIAL_TARGET, FACTORY_COMMIT)
    assert (initial.state, initial.is_current) == (Phase.CURRENT, True)
    assert install.previous_id == initial.id
    assert rig.device.trust.calls[-1].guard is None  # the factory image has no version


async def test_apps_only_install_is_staged_and_waits_for_a_docker_restart(rig: Rig) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    v2 = make_target(2, commit=v1.ostree_commit)
    pulled, deployed = list(rig.device.rootfs.pulled), list(rig.device.rootfs.deployed)

    outcome = await rig.engine.install(rig.bundle(v2))

    assert (outcome.code, outcome.target) == (StatusCode.NEEDS_DOCKER_RESTART, v2.name)
    install = await rig.latest()
    assert await rig.states(install.id) == [
        Phase.STARTED,
        Phase.STOPPING_AKLITE,
        Phase.STAGING_APPS,
        Phase.AWAITING_DOCKER_RESTART,
    ]
    device = rig.device
    assert (device.rootfs.pulled, device.rootfs.deployed) == (pulled, deployed)
    assert device.rootfs.pending is None
    assert not device.reboot_marker.marked
    assert set(v2.apps.values()) <= device.apps.store
    assert device.apps.running == dict(v1.apps)  # the new apps start in run
    assert not device.aklite_running


async def test_install_of_the_running_target_changes_nothing(rig: Rig) -> None:
    v1 = make_target(1)
    bundle = await rig.update_to(v1)
    installs, jobs = await rig.installs(), list(rig.device.services.jobs)

    outcome = await rig.engine.install(bundle)

    assert (outcome.code, outcome.target) == (StatusCode.OK, v1.name)
    assert outcome.message == f"{v1.name} is already installed"
    assert await rig.installs() == installs
    assert rig.device.services.jobs == jobs  # aktualizr-lite was not stopped
    assert rig.device.aklite_running


async def test_already_installed_names_the_stored_metadata_that_was_used(rig: Rig) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    note = "the drive's metadata is older than the device's: the stored copy was used"
    older = rig.bundle(v1, name="older-drive", stored_metadata_used=note)

    outcome = await rig.engine.install(older)

    assert outcome.code == StatusCode.OK
    assert outcome.message == f"{v1.name} is already installed; {note}"


async def test_running_target_with_an_app_down_is_staged_again(rig: Rig) -> None:
    v1 = make_target(1)
    bundle = await rig.update_to(v1)
    rig.device.apps.running.clear()

    outcome = await rig.engine.install(bundle)

    assert outcome.code == StatusCode.NEEDS_DOCKER_RESTART
    assert (await rig.engine.run()).code == StatusCode.OK
    assert rig.device.apps.running == dict(v1.apps)


async def test_install_asks_trust_with_the_guard_force_and_target_name(rig: Rig) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    bundle = rig.bundle(v2)

    await rig.engine.install(bundle, target_name=v2.name, force=True)

    assert rig.device.trust.calls[-1] == SelectCall(
        src_dir=bundle,
        target_name=v2.name,
        force=True,
        guard=GuardTarget(name=v1.name, version=1),
        persist=True,
    )


async def test_downgrade_is_refused_unless_forced(rig: Rig) -> None:
    await rig.update_to(make_target(2))
    installs = await rig.installs()
    older = rig.bundle(make_target(1))

    with pytest.raises(DowngradeRefusedError) as refused:
        await rig.engine.install(older)

    assert refused.value.code == StatusCode.DOWNGRADE_REFUSED
    assert await rig.installs() == installs
    assert (await rig.engine.install(older, force=True)).code == StatusCode.NEEDS_REBOOT


async def test_aktualizr_lite_that_was_not_running_is_left_alone(tmp_path: Path) -> None:
    rig = await Rig.open(tmp_path, FakeDevice(aklite_running=False))
    try:
        await rig.update_to(make_target(2))
        assert rig.device.services.jobs == []
        assert Phase.STOPPING_AKLITE not in await rig.states((await rig.latest()).id)
        assert not rig.device.aklite_running
        assert await rig.aklite_setting() is None
    finally:
        await rig.aclose()


async def test_the_aktualizr_lite_unit_is_the_one_in_the_settings(rig: Rig) -> None:
    unit = "aktualizr-lite-custom.service"
    rig.device.services.units[unit] = "active"
    engine = rig.device.engine(rig.journal, settings=EngineSettings(aklite_unit=unit))
    target = make_target(2)

    await engine.install(rig.bundle(target))
    rig.device.reboot()
    await engine.run()

    assert rig.device.services.jobs == [("stop", unit), ("start", unit)]
    assert rig.device.aklite_running  # AKLITE_UNIT itself was never touched
    assert AKLITE_UNIT not in {name for _, name in rig.device.services.jobs}


# ---- a pending install --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("apps_only", "code"),
    [(False, StatusCode.NEEDS_REBOOT), (True, StatusCode.NEEDS_DOCKER_RESTART)],
    ids=["rootfs", "apps-only"],
)
async def test_the_pending_bundle_again_answers_as_the_first_time(
    rig: Rig, apps_only: bool, code: StatusCode
) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    v2 = make_target(2, commit=v1.ostree_commit if apps_only else None)
    bundle = rig.bundle(v2)
    first = await rig.engine.install(bundle)
    installs, calls = await rig.installs(), len(rig.device.faults.calls)

    again = await rig.engine.install(bundle)

    assert (first.code, again.code, again.target) == (code, code, v2.name)
    assert await rig.installs() == installs
    copies = {"rootfs.pull", "apps.copy", "apps.load", "rootfs.deploy"}
    assert not copies & set(rig.device.faults.calls[calls:])


async def test_another_bundle_while_an_install_is_pending_is_refused(rig: Rig) -> None:
    v2 = make_target(2)
    await rig.engine.install(rig.bundle(v2))
    installs = await rig.installs()

    with pytest.raises(PendingInstallError) as refused:
        await rig.engine.install(rig.bundle(make_target(3)))

    assert refused.value.code == StatusCode.INSTALLATION_IN_PROGRESS
    assert refused.value.target == v2.name
    assert await rig.installs() == installs
    assert rig.device.rootfs.pending == v2.ostree_commit
    assert not rig.device.aklite_running  # still pending: aktualizr-lite waits for it


async def test_the_pending_bundle_with_another_target_name_is_refused(rig: Rig) -> None:
    v2 = make_target(2)
    bundle = rig.bundle(v2)
    await rig.engine.install(bundle)

    with pytest.raises(PendingInstallError):
        await rig.engine.install(bundle, target_name=make_target(3).name)


# ---- one call at a time -------------------------------------------------------------------


async def test_a_second_call_while_an_install_runs_is_busy(rig: Rig) -> None:
    gate = rig.device.faults.gate("rootfs.pull")
    first = asyncio.create_task(rig.engine.install(rig.bundle(make_target(2))))
    await gate.entered.wait()
    events = await rig.events()

    with pytest.raises(BusyError) as busy:
        await rig.engine.install(rig.bundle(make_target(3)))
    with pytest.raises(BusyError):
        await rig.engine.run()

    assert busy.value.code == StatusCode.INSTALLATION_IN_PROGRESS
    assert str(busy.value) == "an update is already running"
    assert await rig.events() == events
    gate.open()
    assert (await first).code == StatusCode.NEEDS_REBOOT
    assert (await rig.latest()).state == Phase.AWAITING_REBOOT


async def test_lock_held_by_another_tool_refuses_install_and_run(rig: Rig) -> None:
    rig.device.lock.other_tool = True
    bundle = rig.bundle(make_target(2))

    with pytest.raises(LockHeldError) as held:
        await rig.engine.install(bundle)
    with pytest.raises(LockHeldError):
        await rig.engine.run()

    assert held.value.code == StatusCode.UNKNOWN_ERROR
    assert await rig.installs() == []
    assert await rig.events() == []
    assert rig.device.services.jobs == []
    rig.device.lock.other_tool = False
    assert (await rig.engine.install(bundle)).code == StatusCode.NEEDS_REBOOT


async def test_another_process_meets_the_update_lock(rig: Rig) -> None:
    gate = rig.device.faults.gate("rootfs.pull")
    first = asyncio.create_task(rig.engine.install(rig.bundle(make_target(2))))
    await gate.entered.wait()

    journal = await asyncio.to_thread(Journal.open, rig.db_path)  # another process's journal
    try:
        with pytest.raises(LockHeldError):
            await rig.device.engine(journal).run()
    finally:
        await asyncio.to_thread(journal.close)

    gate.open()
    assert (await first).code == StatusCode.NEEDS_REBOOT


# ---- progress -----------------------------------------------------------------------------


async def test_progress_is_weighted_by_bytes_and_ends_at_100(rig: Rig) -> None:
    target = make_target(2)
    rig.device.rootfs.sizes[target.ostree_commit] = 300
    rig.device.apps.sizes[target.apps["web"]] = 100

    await rig.engine.install(rig.bundle(target))

    percents = [percent for percent, _ in rig.observer.progress]
    assert percents == sorted(percents)
    assert percents[-1] == 100
    timeline = rig.observer.timeline
    # The apps are copied first, then the rootfs is pulled.
    before_pull = timeline[: timeline.index(Phase.PULLING)]
    after_copy = [x for x in before_pull if not isinstance(x, Phase)][-1]
    assert after_copy == 100 * 100 // (300 + 100)


@pytest.mark.parametrize("apps_only", [True, False], ids=["apps-only", "rootfs-only"])
async def test_progress_of_a_single_copying_step_ends_at_100(rig: Rig, apps_only: bool) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    rig.observer.clear()
    v2 = make_target(2, commit=v1.ostree_commit) if apps_only else make_target(2, apps=())

    await rig.engine.install(rig.bundle(v2))

    percents = [percent for percent, _ in rig.observer.progress]
    assert percents == sorted(percents)
    assert percents[-1] == 100


class BrokenObserver:
    def on_phase(self, phase: Phase, detail: Mapping[str, Any]) -> None:
        raise RuntimeError("display gone")

    def on_progress(self, percent: int, message: str) -> None:
        raise RuntimeError("display gone")


async def test_a_broken_observer_does_not_break_the_update(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    engine = rig.device.engine(rig.journal, observer=BrokenObserver())

    outcome = await engine.install(rig.bundle(make_target(2)))

    assert outcome.code == StatusCode.NEEDS_REBOOT
    events = {entry["event"] for entry in logs}
    assert {"phase observer failed", "progress observer failed"} <= events


@pytest.mark.parametrize("op", ["apps.copy", "rootfs.pull", "apps.load", "rootfs.deploy"])
async def test_shutdowns_are_held_off_from_the_pull_to_the_deployment(rig: Rig, op: Op) -> None:
    target = make_target(2)
    gate = rig.device.faults.gate(op)
    task = asyncio.create_task(rig.engine.install(rig.bundle(target)))
    await gate.entered.wait()

    assert rig.device.reboot_marker.inhibitors == [f"installing {target.name}"]
    gate.open()
    assert (await task).code == StatusCode.NEEDS_REBOOT
    assert rig.device.reboot_marker.inhibitors == []


async def test_an_apps_only_install_holds_no_shutdown_off(rig: Rig) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    gate = rig.device.faults.gate("apps.copy")
    task = asyncio.create_task(
        rig.engine.install(rig.bundle(make_target(2, commit=v1.ostree_commit)))
    )
    await gate.entered.wait()

    assert rig.device.reboot_marker.inhibitors == []
    gate.open()
    assert (await task).code == StatusCode.NEEDS_DOCKER_RESTART


# ---- the target the device already runs, without a record of it ---------------------------


@pytest.mark.parametrize("apps", [(), ("web",)], ids=["rootfs-only", "apps-running"])
async def test_the_factory_image_as_a_target_is_recorded_as_current_with_nothing_installed(
    rig: Rig, apps: tuple[str, ...]
) -> None:
    target = make_target(1, commit=FACTORY_COMMIT, apps=apps)
    for name, uri in target.apps.items():  # the factory image's apps run already
        rig.device.apps.running[name] = uri
        rig.device.apps.store.add(uri)

    outcome = await rig.engine.install(rig.bundle(target))

    assert (outcome.code, outcome.target) == (StatusCode.OK, target.name)
    assert outcome.message == f"the device already runs {target.name}"
    current = await rig.current()
    assert (current.target_name, current.ostree_commit) == (target.name, FACTORY_COMMIT)
    assert rig.device.current_file.written[-1] == target
    device = rig.device
    assert device.services.jobs == []  # aktualizr-lite was not stopped
    assert device.rootfs.pulled == [] and device.rootfs.deployed == []
    assert "apps.copy" not in device.faults.calls
    assert not device.reboot_marker.marked
    # From then on it is the installed target: the same bundle again is "already installed".
    again = await rig.engine.install(rig.bundle(target))
    assert again.message == f"{target.name} is already installed"


async def test_the_factory_image_with_an_app_down_stages_the_apps(rig: Rig) -> None:
    target = make_target(1, commit=FACTORY_COMMIT)  # its app is not running

    outcome = await rig.engine.install(rig.bundle(target))

    assert outcome.code == StatusCode.NEEDS_DOCKER_RESTART
    assert set(target.apps.values()) <= rig.device.apps.store


async def test_a_target_on_the_running_commit_without_one_of_its_apps_retires_it(
    rig: Rig,
) -> None:
    # v3 keeps v2's rootfs and its "web", and drops "db": not "already running" until the
    # apps-only update has retired "db".
    v2 = make_target(2, apps=("web", "db"))
    await rig.update_to(v2)
    v3 = make_target(3, commit=v2.ostree_commit, apps=("web",), app_version=2)

    assert (await rig.engine.check(rig.bundle(v3))).code == StatusCode.UPDATE_AVAILABLE
    outcome = await rig.engine.install(rig.bundle(v3))

    assert outcome.code == StatusCode.NEEDS_DOCKER_RESTART
    assert (await rig.engine.run()).code == StatusCode.OK
    assert set(rig.device.apps.running) == {"web"}
