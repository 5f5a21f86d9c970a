"""``Engine.check`` (verify, change nothing) and ``Engine.current`` (what the device runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aklited.engine.engine import INITIAL_TARGET
from aklited.engine.model import ContentReport, GuardTarget
from aklited.errors import (
    AkliteError,
    AppsContentMissingError,
    AppsCopyError,
    AppsCorruptError,
    BundleMetadataError,
    DowngradeRefusedError,
    MetadataExpiredError,
    NoMatchingTargetError,
    RootfsCopyError,
    RootfsCorruptError,
    RootfsSysrootError,
)
from aklited.outcomes import StatusCode
from tests.fakes import FACTORY_COMMIT, FakeDevice, Op, Rig, SelectCall, make_target

CHECK_FAILURES: list[tuple[Op, AkliteError, int]] = [
    ("trust.select", MetadataExpiredError("timestamp.json expired"), 12),
    ("trust.select", BundleMetadataError("bundle-targets.json: bad signature"), 15),
    ("trust.select", NoMatchingTargetError("no target for this hwid"), 6),
    ("trust.select", DowngradeRefusedError("older than the running target"), 102),
    ("rootfs.verify_content", RootfsCopyError("reading the drive: I/O error"), 50),
    ("rootfs.verify_content", RootfsCorruptError("object does not match its name"), 70),
    ("apps.verify_content", AppsContentMissingError("blob absent"), 8),
    ("apps.verify_content", AppsCopyError("reading the drive: I/O error"), 50),
    ("apps.verify_content", AppsCorruptError("blob does not match its digest"), 70),
]


async def test_check_on_a_fresh_device_offers_the_target_and_writes_nothing(rig: Rig) -> None:
    v2 = make_target(2)

    result = await rig.engine.check(rig.bundle(v2))

    assert (result.code, result.target, result.current) == (StatusCode.UPDATE_AVAILABLE, v2, None)
    assert (result.content, result.stored_metadata_used) == (None, None)
    assert await rig.installs() == []
    assert await rig.events() == []
    assert rig.device.trust.calls[-1].persist is False


async def test_check_of_the_running_target_is_0(rig: Rig) -> None:
    v1 = make_target(1)
    bundle = await rig.update_to(v1)
    installs, events = await rig.installs(), await rig.events()

    result = await rig.engine.check(bundle)

    assert result.code == StatusCode.OK
    assert result.current is not None
    assert (result.current.name, result.current.version) == (v1.name, 1)
    assert result.current.initial is False
    assert (await rig.installs(), await rig.events()) == (installs, events)


async def test_check_of_a_newer_target_guards_the_running_one_and_persists_nothing(
    rig: Rig,
) -> None:
    v1, v2 = make_target(1), make_target(2)
    await rig.update_to(v1)
    bundle = rig.bundle(v2)

    result = await rig.engine.check(bundle)

    assert result.code == StatusCode.UPDATE_AVAILABLE
    assert rig.device.trust.calls[-1] == SelectCall(
        src_dir=bundle,
        target_name=None,
        force=False,
        guard=GuardTarget(name=v1.name, version=1),
        persist=False,
    )


async def test_check_while_the_factory_image_runs_guards_nothing(rig: Rig) -> None:
    await rig.engine.install(rig.bundle(make_target(2)))  # records the factory image

    result = await rig.engine.check(rig.bundle(make_target(3)))

    assert rig.device.trust.calls[-1].guard is None
    assert result.current is not None
    assert (result.current.name, result.current.initial) == (INITIAL_TARGET, True)


async def test_check_names_the_stored_metadata_that_was_used(rig: Rig) -> None:
    note = "the drive's metadata is older than the device's: the stored copy was used"
    bundle = rig.bundle(make_target(2), stored_metadata_used=note)

    result = await rig.engine.check(bundle)

    assert result.stored_metadata_used == note


async def test_deep_check_counts_what_it_verified(rig: Rig) -> None:
    v2 = make_target(2, apps=("web", "db"))
    rig.device.rootfs.objects[v2.ostree_commit] = 7
    rig.device.apps.blobs[v2.apps["web"]] = 2
    rig.device.apps.blobs[v2.apps["db"]] = 5

    result = await rig.engine.check(rig.bundle(v2), deep=True)

    assert result.content == ContentReport(objects=7, apps=2, blobs=7)
    assert await rig.events() == []


async def test_deep_check_of_a_rootfs_only_target_verifies_no_apps(rig: Rig) -> None:
    v2 = make_target(2, apps=())
    rig.device.rootfs.objects[v2.ostree_commit] = 4

    result = await rig.engine.check(rig.bundle(v2), deep=True)

    assert result.content == ContentReport(objects=4, apps=0, blobs=0)
    assert "apps.verify_content" not in rig.device.faults.calls


async def test_metadata_only_check_reads_no_content(rig: Rig) -> None:
    await rig.engine.check(rig.bundle(make_target(2)))

    calls = set(rig.device.faults.calls)
    assert not calls & {"rootfs.verify_content", "apps.verify_content"}


@pytest.mark.parametrize(
    ("op", "error", "code"),
    CHECK_FAILURES,
    ids=[f"{op}-{type(error).__name__}" for op, error, _ in CHECK_FAILURES],
)
async def test_a_failing_check_raises_the_leaf_error_and_writes_nothing(
    rig: Rig, op: Op, error: AkliteError, code: int
) -> None:
    rig.device.faults.fail(op, error)

    with pytest.raises(type(error)) as raised:
        await rig.engine.check(rig.bundle(make_target(2)), deep=True)

    assert raised.value is error
    assert raised.value.code == code
    assert await rig.installs() == []
    assert await rig.events() == []


# ---- current ------------------------------------------------------------------------------


async def test_current_before_any_record_is_the_factory_image(rig: Rig) -> None:
    current = await rig.engine.current()

    assert (current.name, current.version, current.initial) == (INITIAL_TARGET, 0, True)
    assert (current.ostree_commit, current.booted_commit) == (FACTORY_COMMIT, FACTORY_COMMIT)
    assert (current.apps, current.app_states) == ({}, {})
    assert await rig.installs() == []


async def test_current_of_a_device_that_cannot_tell_what_it_booted(tmp_path: Path) -> None:
    rig = await Rig.open(tmp_path, FakeDevice(booted=None))
    try:
        current = await rig.engine.current()
    finally:
        await rig.aclose()

    assert (current.name, current.ostree_commit, current.booted_commit) == ("unknown", "", None)
    assert current.initial


async def test_current_after_an_update(rig: Rig) -> None:
    v2 = make_target(2, apps=("web", "db"))
    await rig.update_to(v2)

    current = await rig.engine.current()

    assert (current.name, current.version, current.initial) == (v2.name, 2, False)
    assert (current.ostree_commit, current.booted_commit) == (v2.ostree_commit, v2.ostree_commit)
    assert current.apps == v2.apps
    assert current.app_states == {"web": "running", "db": "running"}


async def test_current_tells_an_app_that_stopped(rig: Rig) -> None:
    v2 = make_target(2, apps=("web", "db"))
    await rig.update_to(v2)
    del rig.device.apps.running["db"]

    current = await rig.engine.current()

    assert current.app_states == {"web": "running", "db": "not running"}


async def test_current_while_an_install_waits_for_its_reboot_is_the_running_target(
    rig: Rig,
) -> None:
    v1 = make_target(1)
    await rig.update_to(v1)
    await rig.engine.install(rig.bundle(make_target(2)))

    current = await rig.engine.current()

    assert (current.name, current.booted_commit) == (v1.name, v1.ostree_commit)


@pytest.mark.parametrize("apps", [(), ("web",)], ids=["rootfs-only", "apps-running"])
async def test_check_of_the_factory_image_as_a_target_is_0_and_writes_nothing(
    rig: Rig, apps: tuple[str, ...]
) -> None:
    target = make_target(1, commit=FACTORY_COMMIT, apps=apps)
    rig.device.apps.running.update(target.apps)

    result = await rig.engine.check(rig.bundle(target))

    assert result.code == StatusCode.OK
    assert await rig.installs() == []
    assert rig.device.current_file.written == []


async def test_check_of_the_factory_image_with_an_app_down_offers_it(rig: Rig) -> None:
    target = make_target(1, commit=FACTORY_COMMIT)

    assert (await rig.engine.check(rig.bundle(target))).code == StatusCode.UPDATE_AVAILABLE


async def test_check_without_a_readable_sysroot_offers_the_target(rig: Rig) -> None:
    # A check needs no sysroot: what it cannot tell, the install finds out.
    rig.device.faults.fail("rootfs.booted_commit", RootfsSysrootError("no OSTree sysroot"))
    target = make_target(1, commit=FACTORY_COMMIT, apps=())

    assert (await rig.engine.check(rig.bundle(target))).code == StatusCode.UPDATE_AVAILABLE
