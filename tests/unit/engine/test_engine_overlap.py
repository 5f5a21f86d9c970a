"""Each app's images load as soon as its blobs are in the store, beside the rest of the
copy: in a rootfs+apps install, which copies the apps and then pulls the rootfs, beside the
pull as well. A load begins before the pull only while the rootfs still fits beside what is
left to copy, else after the pull's space check; whichever step fails first stops the
others and is journalled as its own step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aklited.engine.engine import UNPACKED_RATIO
from aklited.engine.phases import Phase
from aklited.errors import (
    AppsCopyError,
    AppsRunError,
    InternalError,
    RootfsCopyError,
    RootfsCorruptError,
    RootfsNoSpaceError,
)
from aklited.outcomes import StatusCode
from tests.fakes import Rig, make_target

TWO_APPS = ("db", "web")


async def turns(n: int = 50) -> None:
    """A few turns of the loop: no thread or timer runs between the steps tested here."""
    for _ in range(n):
        await asyncio.sleep(0)


async def assert_failed_and_settled(rig: Rig, code: int, failed_step: str) -> None:
    install = await rig.latest()
    assert (install.state, install.result_code) == (Phase.FAILED, code)
    assert await rig.failures(install.id) == [(f"{failed_step}-failed", code)]
    device = rig.device
    assert device.aklite_running
    assert device.rootfs.pending is None and device.rootfs.deployed == []
    assert not device.reboot_marker.marked
    assert not device.lock.held


async def test_each_app_loads_as_soon_as_its_blobs_are_in_the_store(rig: Rig) -> None:
    target = make_target(2, apps=TWO_APPS)
    between_apps = rig.device.faults.gate("apps.copy.app_copied")  # the copy, after "db"
    task = asyncio.create_task(rig.engine.install(rig.bundle(target)))
    await between_apps.entered.wait()
    await turns()

    assert rig.device.apps.loaded == [{"db": target.apps["db"]}]  # "web" is not copied yet
    assert "rootfs.pull" not in rig.device.faults.calls
    between_apps.open()
    assert (await task).code == StatusCode.NEEDS_REBOOT
    assert sorted(rig.device.apps.loaded, key=sorted) == [
        {"db": target.apps["db"]},
        {"web": target.apps["web"]},
    ]
    assert rig.device.rootfs.pulled == [target.ostree_commit]
    # The rootfs was weighed beside what was left to copy ("web", then nothing) and the
    # images unpacked.
    unpacked = UNPACKED_RATIO * rig.device.apps.total(target.apps)
    first, second = rig.device.rootfs.fit_checks
    assert first > unpacked and second == unpacked
    states = await rig.states((await rig.latest()).id)
    assert states.index(Phase.STAGING_APPS) < states.index(Phase.PULLING)


async def test_an_apps_only_update_loads_each_app_as_soon_as_it_is_copied(rig: Rig) -> None:
    v1 = make_target(1, apps=TWO_APPS)
    await rig.update_to(v1)
    v2 = make_target(2, commit=v1.ostree_commit, apps=TWO_APPS)
    rig.device.apps.loaded.clear()
    rig.device.rootfs.fit_checks.clear()
    between_apps = rig.device.faults.gate("apps.copy.app_copied")
    task = asyncio.create_task(rig.engine.install(rig.bundle(v2)))
    await between_apps.entered.wait()
    await turns()

    assert rig.device.apps.loaded == [{"db": v2.apps["db"]}]
    between_apps.open()
    assert (await task).code == StatusCode.NEEDS_DOCKER_RESTART
    assert rig.device.apps.loaded[1:] == [{"web": v2.apps["web"]}]
    assert rig.device.rootfs.fit_checks == []  # no rootfs to make room for


async def test_apps_a_copy_never_named_load_once_it_ended(rig: Rig) -> None:
    # A port that does not name each app as it is in: its apps load after the whole copy.
    target = make_target(2, apps=TWO_APPS)
    rig.device.apps.tells_copied = False
    copying = rig.device.faults.gate("rootfs.pull.copying")
    task = asyncio.create_task(rig.engine.install(rig.bundle(target)))
    await copying.entered.wait()
    await turns()

    assert sorted(rig.device.apps.loaded, key=sorted) == [
        {"db": target.apps["db"]},
        {"web": target.apps["web"]},
    ]
    copying.open()
    assert (await task).code == StatusCode.NEEDS_REBOOT


async def test_the_images_load_while_the_rootfs_is_copied(rig: Rig) -> None:
    target = make_target(2)
    copying = rig.device.faults.gate("rootfs.pull.copying")
    task = asyncio.create_task(rig.engine.install(rig.bundle(target)))
    await copying.entered.wait()
    await turns()

    assert rig.device.apps.loaded == [dict(target.apps)]
    assert rig.device.rootfs.pulled == []
    copying.open()
    assert (await task).code == StatusCode.NEEDS_REBOOT
    assert rig.device.rootfs.pulled == [target.ostree_commit]


async def test_a_load_waits_for_the_pull_s_space_check_while_the_rootfs_would_not_fit_beside(
    rig: Rig,
) -> None:
    target = make_target(2, apps=TWO_APPS)
    # The rootfs fits beside the images unpacked, with nothing more beside it.
    rig.device.rootfs.room = UNPACKED_RATIO * rig.device.apps.total(target.apps)
    between_apps = rig.device.faults.gate("apps.copy.app_copied")
    pulling = rig.device.faults.gate("rootfs.pull")  # before the pull's space check
    task = asyncio.create_task(rig.engine.install(rig.bundle(target)))
    await between_apps.entered.wait()
    await turns()

    assert rig.device.rootfs.fit_checks and rig.device.apps.loaded == []  # "db" waits
    between_apps.open()
    await pulling.entered.wait()
    await turns()
    # Nothing left to copy: "web" fits beside and loads; "db" still waits for the check.
    assert rig.device.apps.loaded == [{"web": target.apps["web"]}]
    pulling.open()
    assert (await task).code == StatusCode.NEEDS_REBOOT
    assert rig.device.apps.loaded[1:] == [{"db": target.apps["db"]}]


async def test_apps_of_no_known_size_load_after_the_pull_s_space_check(rig: Rig) -> None:
    target = make_target(2, apps=TWO_APPS)
    for uri in target.apps.values():
        rig.device.apps.sizes[uri] = 0  # as when the sizes could not be read before the copy
    pulling = rig.device.faults.gate("rootfs.pull")  # before the pull's space check
    task = asyncio.create_task(rig.engine.install(rig.bundle(target)))
    await pulling.entered.wait()
    await turns()

    assert rig.device.apps.loaded == []
    assert "rootfs.fits_beside" not in rig.device.faults.calls
    pulling.open()
    assert (await task).code == StatusCode.NEEDS_REBOOT
    assert len(rig.device.apps.loaded) == 2


async def test_no_image_loads_when_the_rootfs_no_longer_fits(rig: Rig) -> None:
    # Sized before the copy, the rootfs no longer fits once the apps are in: the loads
    # wait for the pull's space check, which refuses it.
    error = RootfsNoSpaceError("needs 900 MiB, 12 MiB free")
    rig.device.rootfs.room = -1
    rig.device.faults.fail("rootfs.pull", error)  # the walk and the space check

    with pytest.raises(RootfsNoSpaceError) as raised:
        await rig.engine.install(rig.bundle(make_target(2, apps=TWO_APPS)))

    assert raised.value is error
    assert "apps.copy" in rig.device.faults.calls  # the apps were copied before the pull
    assert "apps.load" not in rig.device.faults.calls
    assert rig.device.apps.loaded == []
    await assert_failed_and_settled(rig, StatusCode.NO_SPACE, str(Phase.PULLING))


async def test_a_failed_load_stops_the_copy(rig: Rig) -> None:
    target = make_target(2, apps=TWO_APPS)
    error = AppsRunError("docker load: unexpected EOF")
    rig.device.faults.fail("apps.load", error)
    rig.device.faults.gate("apps.copy.app_copied")  # never opened: the copy held after "db"

    with pytest.raises(AppsRunError) as raised:
        await rig.engine.install(rig.bundle(target))

    assert raised.value is error
    assert target.apps["web"] not in rig.device.apps.store  # the copy never went on
    assert "rootfs.pull" not in rig.device.faults.calls
    await assert_failed_and_settled(rig, StatusCode.IMAGE_LOAD_FAILED, str(Phase.STAGING_APPS))


async def test_a_failed_copy_stops_the_loads_under_way(rig: Rig) -> None:
    target = make_target(2, apps=TWO_APPS)
    error = AppsCopyError("reading the drive: I/O error")
    loading = rig.device.faults.gate("apps.load")  # never opened: held to the end
    rig.device.faults.fail("apps.copy.app_copied", error)  # the copy fails after "db"
    others = asyncio.all_tasks()

    with pytest.raises(AppsCopyError) as raised:
        await rig.engine.install(rig.bundle(target))

    assert raised.value is error
    assert loading.entered.is_set()  # "db" was loading when the copy failed
    assert rig.device.apps.loaded == []  # and never finished
    assert asyncio.all_tasks() == others  # the load was cancelled and awaited
    await assert_failed_and_settled(rig, StatusCode.DOWNLOAD_FAILED, str(Phase.STAGING_APPS))


async def test_a_cancelled_install_leaves_no_load_behind(rig: Rig) -> None:
    loading = rig.device.faults.gate("apps.load")  # never opened
    between_apps = rig.device.faults.gate("apps.copy.app_copied")  # never opened
    others = asyncio.all_tasks()
    task = asyncio.create_task(rig.engine.install(rig.bundle(make_target(2, apps=TWO_APPS))))
    await loading.entered.wait()
    await between_apps.entered.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == others
    install = await rig.latest()
    assert [state for state, _ in await rig.failures(install.id)] == ["staging-apps-failed"]


async def test_a_journal_that_fails_between_the_steps_stops_the_loads_and_tells_theirs(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_error = AppsRunError("removing the half-loaded images failed")
    full = OSError(28, "No space left on device")
    record = rig.journal.record

    def record_unless_pulling(install_id: int | None, state: str, **detail: Any) -> Any:
        if state == Phase.PULLING:
            raise full
        return record(install_id, state, **detail)

    monkeypatch.setattr(rig.journal, "record", record_unless_pulling)
    rig.device.faults.gate("apps.load")  # never opened: in flight when the journal fails
    rig.device.apps.fail_on_cancel = load_error  # raised as the load stops
    others = asyncio.all_tasks()

    with pytest.raises(Exception) as raised:
        await rig.engine.install(rig.bundle(make_target(2, apps=TWO_APPS)))

    assert full in (raised.value, raised.value.__cause__)
    assert asyncio.all_tasks() == others  # the loads were stopped and awaited
    assert any(str(load_error) in note for note in full.__notes__)


async def test_a_failed_load_stops_the_pull(rig: Rig) -> None:
    error = AppsRunError("docker load: unexpected EOF")
    loading = rig.device.faults.gate("apps.load")
    rig.device.faults.fail("apps.load", error)  # once its gate opens
    copying = rig.device.faults.gate("rootfs.pull.copying")  # never opened: held to the end
    task = asyncio.create_task(rig.engine.install(rig.bundle(make_target(2))))
    await copying.entered.wait()

    loading.open()

    with pytest.raises(AppsRunError) as raised:
        await task
    assert raised.value is error
    assert rig.device.rootfs.pulled == []  # the pull never finished
    await assert_failed_and_settled(rig, StatusCode.IMAGE_LOAD_FAILED, str(Phase.STAGING_APPS))


async def test_a_failed_pull_stops_the_load(rig: Rig) -> None:
    error = RootfsCopyError("reading the drive: I/O error")
    loading = rig.device.faults.gate("apps.load")  # never opened: held to the end
    copying = rig.device.faults.gate("rootfs.pull.copying")
    rig.device.faults.fail("rootfs.pull.copying", error)  # once its gate opens
    task = asyncio.create_task(rig.engine.install(rig.bundle(make_target(2))))
    await loading.entered.wait()  # the load is under way

    copying.open()

    with pytest.raises(RootfsCopyError) as raised:
        await task
    assert raised.value is error
    assert rig.device.apps.loaded == []  # and never finished
    await assert_failed_and_settled(rig, StatusCode.DOWNLOAD_FAILED, str(Phase.PULLING))


async def test_a_failure_sizing_one_part_stops_sizing_the_other(rig: Rig) -> None:
    # The apps and the rootfs are sized side by side; nothing of a failed install runs on.
    walking = rig.device.faults.gate("rootfs.pull_size")  # never opened: held to the end
    rig.device.faults.fail("apps.stage_size", OSError(5, "Input/output error"))
    others = asyncio.all_tasks()

    with pytest.raises(InternalError):
        await rig.engine.install(rig.bundle(make_target(2)))

    assert walking.entered.is_set()
    assert asyncio.all_tasks() == others  # the walk was cancelled and awaited
    await assert_failed_and_settled(rig, StatusCode.UNKNOWN_ERROR, "stopping-aktualizr-lite")


async def test_a_rootfs_the_walk_refuses_ends_the_install_before_any_copy(rig: Rig) -> None:
    # The walk behind the rootfs size is the pull's gate: nothing is copied past it.
    error = RootfsCorruptError("objects/ab/cdef.filez is a link out of the bundle")
    rig.device.faults.fail("rootfs.pull_size", error)

    with pytest.raises(RootfsCorruptError) as raised:
        await rig.engine.install(rig.bundle(make_target(2)))

    assert raised.value is error
    assert "apps.copy" not in rig.device.faults.calls
    assert "rootfs.pull" not in rig.device.faults.calls
    await assert_failed_and_settled(rig, StatusCode.VERIFICATION_FAILED, str(Phase.PULLING))


async def test_a_failure_beside_the_first_is_told_too(rig: Rig) -> None:
    # The pull fails while the load, cancelled, fails in its own way as it stops.
    pull_error = RootfsCopyError("reading the drive: I/O error")
    load_error = AppsRunError("removing the half-loaded images failed")
    loading = rig.device.faults.gate("apps.load")
    copying = rig.device.faults.gate("rootfs.pull.copying")
    rig.device.faults.fail("rootfs.pull.copying", pull_error)
    task = asyncio.create_task(rig.engine.install(rig.bundle(make_target(2))))
    await loading.entered.wait()
    rig.device.apps.fail_on_cancel = load_error  # raised instead of the cancellation

    copying.open()

    with pytest.raises(RootfsCopyError) as raised:
        await task
    assert raised.value is pull_error
    assert any(str(load_error) in note for note in raised.value.__notes__)
    await assert_failed_and_settled(rig, StatusCode.DOWNLOAD_FAILED, str(Phase.PULLING))


async def test_a_rootfs_that_does_not_fit_even_now_copies_no_app(rig: Rig) -> None:
    # Sized before anything is written: the apps' copy could only take more space.
    error = RootfsNoSpaceError("needs 900 MiB, 12 MiB free")
    rig.device.faults.fail("rootfs.pull_size", error)

    with pytest.raises(RootfsNoSpaceError):
        await rig.engine.install(rig.bundle(make_target(2)))

    assert "apps.copy" not in rig.device.faults.calls
    await assert_failed_and_settled(rig, StatusCode.NO_SPACE, str(Phase.PULLING))


async def test_without_apps_the_pull_sizes_itself(rig: Rig) -> None:
    # Nothing is copied before the pull: its own walk is the gate, beside its copy where
    # the drive allows, and the progress is the pull's alone.
    target = make_target(2, apps=())

    assert (await rig.engine.install(rig.bundle(target))).code == StatusCode.NEEDS_REBOOT

    assert "rootfs.pull_size" not in rig.device.faults.calls
    assert "rootfs.pull" in rig.device.faults.calls
    assert rig.device.rootfs.pulled == [target.ostree_commit]
    percents = [percent for percent, _ in rig.observer.progress]
    assert percents[-1] == 100
    assert len(set(percents)) > 2  # weighed by the pull's own bytes as they are copied
