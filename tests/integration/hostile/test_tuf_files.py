"""A bundle's TUF metadata with a hostile entry in place of a file the device must read
(the rotated root 2.root.json, bundle-targets.json, timestamp, snapshot, targets): refused
as a TUF security error (11) before any install starts, naming the file, never leaving the
bundle, never hanging."""

from __future__ import annotations

import pytest

from tests.integration.hostile.kit import (
    NEEDS_REBOOT,
    QUICK_S,
    TUF_SECURITY_ERROR,
    assert_refused,
    plant,
    relocate_inside,
    watching,
)
from tests.integration.hostile.worlds import Case

pytestmark = [pytest.mark.root, pytest.mark.ostree]

CASES = [
    *(
        ("timestamp.json", kind)
        for kind in ("fifo", "symlink-dev-zero", "chardev", "symlink-outside-file")
    ),
    *(
        ("targets.json", kind)
        for kind in ("fifo", "symlink-dev-zero", "symlink-outside-fifo", "directory")
    ),
    ("snapshot.json", "symlink-loop"),
    ("2.root.json", "fifo"),
    ("bundle-targets.json", "symlink-outside-file"),
]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_hostile_metadata_file_is_refused(rootfs_case: Case, name: str, kind: str) -> None:
    relative = f"tuf/{name}"
    planted = plant(rootfs_case.path(relative), kind, outside=rootfs_case.outside)

    with watching([planted]) as outside:
        ran = rootfs_case.install()

    assert_refused(ran, TUF_SECURITY_ERROR, names=relative)
    if kind == "symlink-dev-zero":
        assert ran.elapsed_s < QUICK_S, str(ran)
    outside.assert_untouched()
    # refused while verifying: no install began, aktualizr-lite was never stopped
    rootfs_case.assert_unchanged(TUF_SECURITY_ERROR, transaction=False, full=kind == "fifo")


@pytest.mark.parametrize("name", ["timestamp.json", "targets.json"])
def test_check_refuses_a_fifo_for_metadata_too(rootfs_case: Case, name: str) -> None:
    relative = f"tuf/{name}"
    plant(rootfs_case.path(relative), "fifo", outside=rootfs_case.outside)
    ran = rootfs_case.cli("check", "-s", str(rootfs_case.bundle))
    assert ran.returncode == TUF_SECURITY_ERROR, str(ran)
    assert "Traceback" not in ran.stderr, str(ran)
    assert relative in ran.stderr.rstrip("\n").splitlines()[-1], str(ran)


def test_metadata_symlink_that_stays_inside_the_bundle_installs(rootfs_case: Case) -> None:
    relocate_inside(rootfs_case.path("tuf/timestamp.json"), bundle=rootfs_case.bundle)
    ran = rootfs_case.install()
    assert ran.returncode == NEEDS_REBOOT, str(ran)
