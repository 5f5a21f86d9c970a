"""A bundle's OSTree repo with a hostile entry where an object or the repo config should be:
the install refuses it (70) naming the file, never leaves the bundle, never hangs, and leaves
the device as it was. A link that stays inside the bundle is fine, except to a metadata
object, which ostree would not follow."""

from __future__ import annotations

import pytest

from tests.integration.hostile.kit import (
    KINDS,
    NEEDS_REBOOT,
    QUICK_S,
    VERIFICATION_FAILED,
    assert_refused,
    offending_name,
    plant,
    relocate_inside,
    watching,
)
from tests.integration.hostile.worlds import Case, RootfsWorld

pytestmark = [pytest.mark.root, pytest.mark.ostree]

# Every kind for the commit, a dirtree and a file object; the dirmeta and the config are read
# the same way, so they get a share of the kinds (together: every kind at least once more).
CASES = [
    *((obj, kind) for obj in ("commit", "dirtree", "filez") for kind in KINDS),
    *(
        ("dirmeta", kind)
        for kind in ("fifo", "symlink-outside-file", "symlink-dev-zero", "symlink-loop")
    ),
    *(("config", kind) for kind in ("fifo", "chardev", "symlink-outside-fifo", "directory")),
]


def test_the_untampered_bundle_installs(rootfs_case: Case) -> None:
    # the control: every refusal below is the planted entry's doing
    ran = rootfs_case.install()
    assert ran.returncode == NEEDS_REBOOT, str(ran)


@pytest.mark.parametrize(("obj", "kind"), CASES)
def test_hostile_entry_in_the_ostree_repo_is_refused(
    rootfs_case: Case, rootfs_world: RootfsWorld, obj: str, kind: str
) -> None:
    relative = rootfs_world.objects[obj]
    planted = plant(rootfs_case.path(relative), kind, outside=rootfs_case.outside)

    with watching([planted]) as outside:
        ran = rootfs_case.install()

    assert_refused(ran, VERIFICATION_FAILED, names=offending_name(relative))
    if kind == "symlink-dev-zero":
        assert ran.elapsed_s < QUICK_S, str(ran)
    outside.assert_untouched()
    # `run` and `current` answer from what the light checks read: ask them once per file
    rootfs_case.assert_unchanged(VERIFICATION_FAILED, full=kind == "fifo")


@pytest.mark.parametrize("obj", ("filez", "config"))
def test_symlink_that_stays_inside_the_bundle_installs(
    rootfs_case: Case, rootfs_world: RootfsWorld, obj: str
) -> None:
    relative = rootfs_world.objects[obj]
    relocate_inside(rootfs_case.path(relative), bundle=rootfs_case.bundle)
    ran = rootfs_case.install()
    assert ran.returncode == NEEDS_REBOOT, str(ran)


@pytest.mark.parametrize("obj", ("commit", "dirtree", "dirmeta"))
def test_metadata_object_as_a_link_inside_the_bundle_is_refused(
    rootfs_case: Case, rootfs_world: RootfsWorld, obj: str
) -> None:
    # ostree does not follow a link to a metadata object: it would call the object missing,
    # or pull without a dirmeta and fail the deploy. Refused before ostree sees it.
    relative = rootfs_world.objects[obj]
    relocate_inside(rootfs_case.path(relative), bundle=rootfs_case.bundle)
    ran = rootfs_case.install()
    assert_refused(ran, VERIFICATION_FAILED, names=offending_name(relative))
    assert "is a symlink" in ran.stderr
    rootfs_case.assert_unchanged(VERIFICATION_FAILED, full=False)
