"""``aklite-offline check --deep`` verifies every byte an install verifies (the commit and
its objects, app manifests, blobs and archives) and exits as the install would for content it
refuses; plain ``check`` stays at the metadata. Neither changes anything on the device."""

from __future__ import annotations

import pytest

from tests.integration.hostile.kit import (
    UPDATE_AVAILABLE,
    VERIFICATION_FAILED,
    Ran,
    aklite_jobs,
    offending_name,
    plant,
    watching,
)
from tests.integration.hostile.worlds import AppsWorld, Case, RootfsWorld

pytestmark = [pytest.mark.root, pytest.mark.ostree]


def check(case: Case, *, deep: bool) -> Ran:
    return case.cli("check", *(["--deep"] if deep else []), "-s", str(case.bundle))


def assert_check_refused(ran: Ran, code: int, *, names: str) -> None:
    assert ran.returncode == code, str(ran)
    assert "Traceback" not in ran.stderr, str(ran)
    last = ran.stderr.rstrip("\n").splitlines()[-1]
    assert names in last, f"the last line does not name {names!r}: {last}"


def assert_nothing_changed(case: Case) -> None:
    assert case.device.journal_states() == []
    assert aklite_jobs(case.systemd, since=case.calls_before) == []
    assert not case.device.sentinel.exists()


def corrupt(case: Case, relative: str) -> None:
    """Same name and size, other bytes: a drive tampered with, or gone bad."""
    path = case.path(relative)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def test_deep_check_of_the_untampered_rootfs_bundle(rootfs_case: Case) -> None:
    ran = check(rootfs_case, deep=True)
    assert ran.returncode == UPDATE_AVAILABLE, str(ran)
    assert_nothing_changed(rootfs_case)


@pytest.mark.docker
def test_deep_check_of_the_untampered_apps_bundle(apps_case: Case) -> None:
    ran = check(apps_case, deep=True)
    assert ran.returncode == UPDATE_AVAILABLE, str(ran)
    assert_nothing_changed(apps_case)


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ("dirtree", "fifo"),
        ("filez", "symlink-outside-file"),
        ("config", "symlink-dev-zero"),
        ("dirmeta", "directory"),
        ("commit", "chardev"),
    ],
)
def test_deep_check_refuses_a_hostile_ostree_entry(
    rootfs_case: Case, rootfs_world: RootfsWorld, obj: str, kind: str
) -> None:
    relative = rootfs_world.objects[obj]
    planted = plant(rootfs_case.path(relative), kind, outside=rootfs_case.outside)
    with watching([planted]) as outside:
        ran = check(rootfs_case, deep=True)
    assert_check_refused(ran, VERIFICATION_FAILED, names=offending_name(relative))
    outside.assert_untouched()
    assert_nothing_changed(rootfs_case)
    if obj != "commit":
        # the metadata is fine: a plain check does not look at the objects
        with watching([planted]) as outside:
            ran = check(rootfs_case, deep=False)
        assert ran.returncode == UPDATE_AVAILABLE, str(ran)
        outside.assert_untouched()


@pytest.mark.docker
@pytest.mark.parametrize(("node", "kind"), [("layer", "fifo"), ("image-config", "chardev")])
def test_deep_check_refuses_a_hostile_blob(
    apps_case: Case, apps_world: AppsWorld, node: str, kind: str
) -> None:
    relative = f"apps/blobs/sha256/{apps_world.blobs()[node]}"
    plant(apps_case.path(relative), kind, outside=apps_case.outside)
    ran = check(apps_case, deep=True)
    assert_check_refused(ran, VERIFICATION_FAILED, names=relative.removeprefix("apps/"))
    assert_nothing_changed(apps_case)
    ran = check(apps_case, deep=False)
    assert ran.returncode == UPDATE_AVAILABLE, str(ran)


@pytest.mark.parametrize("obj", ["filez", "dirtree"])
def test_deep_check_finds_corrupted_ostree_content_as_install_does(
    rootfs_case: Case, rootfs_world: RootfsWorld, obj: str
) -> None:
    corrupt(rootfs_case, rootfs_world.objects[obj])
    deep = check(rootfs_case, deep=True)
    assert check(rootfs_case, deep=False).returncode == UPDATE_AVAILABLE
    assert_nothing_changed(rootfs_case)
    install = rootfs_case.install()
    assert install.returncode not in (0, 100), str(install)
    assert deep.returncode == install.returncode, f"{deep}\n{install}"
    assert "Traceback" not in deep.stderr, str(deep)


@pytest.mark.docker
@pytest.mark.parametrize("node", ["layer", "compose-bundle"])
def test_deep_check_finds_corrupted_blob_as_install_does(
    apps_case: Case, apps_world: AppsWorld, node: str
) -> None:
    corrupt(apps_case, f"apps/blobs/sha256/{apps_world.blobs()[node]}")
    deep = check(apps_case, deep=True)
    assert check(apps_case, deep=False).returncode == UPDATE_AVAILABLE
    assert_nothing_changed(apps_case)
    install = apps_case.install()
    assert install.returncode == VERIFICATION_FAILED, str(install)
    assert deep.returncode == install.returncode, f"{deep}\n{install}"
    assert "Traceback" not in deep.stderr, str(deep)
