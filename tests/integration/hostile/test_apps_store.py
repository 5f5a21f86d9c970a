"""A bundle's app store with a hostile entry: an app's ``uri`` file, a blob of its Merkle tree
(app manifest, compose bundle, image index, manifest, config, layer) or one of the store's
directories. The install refuses it (70) naming the entry, never reads outside the bundle,
never hangs, and leaves the device as it was. Links that stay inside the bundle are fine.

The update is apps-only (the target's rootfs is the one the device runs), so nothing but the
app store is read from the bundle's content.
"""

from __future__ import annotations

import pytest

from tests.integration.hostile.kit import (
    KINDS,
    NEEDS_DOCKER_RESTART,
    QUICK_S,
    VERIFICATION_FAILED,
    Planted,
    Ran,
    assert_refused,
    plant,
    relocate_inside,
    relocate_outside,
    watching,
)
from tests.integration.hostile.worlds import AppsWorld, Case

pytestmark = [pytest.mark.root, pytest.mark.ostree, pytest.mark.docker]

# Every kind for the layer (streamed, the largest); a share of the kinds for the nodes that
# are read whole, so every kind meets a small blob too.
BLOB_CASES = [
    *(("layer", kind) for kind in KINDS),
    *(
        ("app-manifest", kind)
        for kind in ("fifo", "symlink-outside-file", "symlink-dev-zero", "directory")
    ),
    *(("image-manifest", kind) for kind in ("chardev", "symlink-outside-fifo")),
    *(("image-config", kind) for kind in ("fifo", "symlink-loop")),
    *(("image-index", kind) for kind in ("symlink-dev-zero",)),
    *(("compose-bundle", kind) for kind in ("fifo", "symlink-outside-file")),
]
URI_KINDS = ("fifo", "chardev", "symlink-outside-file", "symlink-dev-zero", "directory")
DIRECTORIES = ("apps", "apps/blobs", "apps/blobs/sha256")


def check_refusal(case: Case, ran: Ran, planted: Planted, *, names: str) -> None:
    assert_refused(ran, VERIFICATION_FAILED, names=names)
    if planted.kind == "symlink-dev-zero":
        assert ran.elapsed_s < QUICK_S, str(ran)
    # `run` and `current` answer from what the light checks read: ask them now and then
    full = planted.kind in ("fifo", "directory", "dir-symlink-outside")
    case.assert_unchanged(VERIFICATION_FAILED, full=full)


def test_the_untampered_bundle_installs(apps_case: Case) -> None:
    # the control: every refusal below is the planted entry's doing
    ran = apps_case.install()
    assert ran.returncode == NEEDS_DOCKER_RESTART, str(ran)


@pytest.mark.parametrize("kind", URI_KINDS)
def test_hostile_uri_file_is_refused(apps_case: Case, apps_world: AppsWorld, kind: str) -> None:
    planted = plant(apps_case.path(apps_world.uri_file), kind, outside=apps_case.outside)
    with watching([planted]) as outside:
        ran = apps_case.install()
    outside.assert_untouched()
    check_refusal(apps_case, ran, planted, names=apps_world.uri_file.removeprefix("apps/"))


@pytest.mark.parametrize(("node", "kind"), BLOB_CASES)
def test_hostile_blob_is_refused(
    apps_case: Case, apps_world: AppsWorld, node: str, kind: str
) -> None:
    relative = f"apps/blobs/sha256/{apps_world.blobs()[node]}"
    planted = plant(apps_case.path(relative), kind, outside=apps_case.outside)
    with watching([planted]) as outside:
        ran = apps_case.install()
    outside.assert_untouched()
    check_refusal(apps_case, ran, planted, names=relative.removeprefix("apps/"))


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_store_directory_linked_outside_is_refused(apps_case: Case, directory: str) -> None:
    # The outside copy is complete and valid: only a reader that follows the link finds it.
    # Every directory and file of it is watched: not even a listing may happen.
    planted = relocate_outside(apps_case.path(directory), outside=apps_case.outside)
    with watching([planted]) as outside:
        ran = apps_case.install()
    outside.assert_untouched()
    check_refusal(apps_case, ran, planted, names=directory)


@pytest.mark.parametrize("what", ["uri", "apps/blobs", "layer"])
def test_symlink_that_stays_inside_the_bundle_installs(
    apps_case: Case, apps_world: AppsWorld, what: str
) -> None:
    relative = {
        "uri": apps_world.uri_file,
        "apps/blobs": "apps/blobs",
        "layer": f"apps/blobs/sha256/{apps_world.blobs()['layer']}",
    }[what]
    relocate_inside(apps_case.path(relative), bundle=apps_case.bundle)
    ran = apps_case.install()
    assert ran.returncode == NEEDS_DOCKER_RESTART, str(ran)
