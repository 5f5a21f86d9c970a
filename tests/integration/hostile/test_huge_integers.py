"""Correctly signed metadata carrying integers no device stores: a ``version`` of 10**400 (a
JSON number of 401 digits) and a target whose ``custom.version`` is 10**30. Both are TUF
security errors (11) with one line for the operator, never a traceback, and the device is
left as it was."""

from __future__ import annotations

import copy
import json

import pytest

from tests.integration.hostile.kit import TUF_SECURITY_ERROR, assert_refused
from tests.integration.hostile.worlds import (
    Case,
    RootfsWorld,
    bundle_targets,
    resign_top_level,
)

pytestmark = [pytest.mark.root, pytest.mark.ostree]

HUGE = 10**400
CUSTOM_VERSION = 10**30


def assert_refused_as_security_error(case: Case, names: tuple[str, ...]) -> None:
    # `check` reads the same metadata and must say the same
    ran = case.cli("check", "-s", str(case.bundle))
    assert ran.returncode == TUF_SECURITY_ERROR, str(ran)
    assert "Traceback" not in ran.stderr, str(ran)

    ran = case.install()
    assert_refused(ran, TUF_SECURITY_ERROR, names=names)
    case.assert_unchanged(TUF_SECURITY_ERROR)


@pytest.mark.parametrize(
    ("roles", "names"),
    [
        # only the timestamp's own version
        ("timestamp", ("tuf/timestamp.json",)),
        # snapshot and targets, which the timestamp names by that version
        ("snapshot+targets", ("tuf/timestamp.json", "tuf/snapshot.json")),
        # all three
        ("all", ("tuf/timestamp.json",)),
    ],
)
def test_metadata_version_of_401_digits_is_refused(
    rootfs_case: Case, rootfs_world: RootfsWorld, roles: str, names: tuple[str, ...]
) -> None:
    targets = bundle_targets(rootfs_case.bundle)
    ring = rootfs_world.factory.ring
    match roles:
        case "timestamp":
            resign_top_level(
                rootfs_case.bundle, ring, targets=targets, version=1, timestamp_version=HUGE
            )
        case "snapshot+targets":
            resign_top_level(
                rootfs_case.bundle, ring, targets=targets, version=HUGE, timestamp_version=1
            )
        case _:
            resign_top_level(rootfs_case.bundle, ring, targets=targets, version=HUGE)
    raw = (rootfs_case.bundle / "tuf/timestamp.json").read_text()
    assert str(HUGE) in raw and len(str(HUGE)) == 401  # the JSON number itself, signed

    assert_refused_as_security_error(rootfs_case, names)


@pytest.mark.parametrize("form", ["string", "number"])
def test_target_custom_version_of_10_to_the_30_is_refused(
    rootfs_case: Case, rootfs_world: RootfsWorld, form: str
) -> None:
    # the backend writes custom.version as a string; a JSON number is read the same way
    targets = copy.deepcopy(bundle_targets(rootfs_case.bundle))
    name = rootfs_world.release.name
    targets[name]["custom"]["version"] = str(CUSTOM_VERSION) if form == "string" else CUSTOM_VERSION
    resign_top_level(rootfs_case.bundle, rootfs_world.factory.ring, targets=targets, version=1)
    signed = json.loads((rootfs_case.bundle / "tuf/targets.json").read_bytes())["signed"]
    assert signed["targets"][name]["custom"]["version"] in (CUSTOM_VERSION, str(CUSTOM_VERSION))

    assert_refused_as_security_error(rootfs_case, (name, "tuf/targets.json"))
