"""Parsing ``ostree admin status`` and the ``ostree=`` boot argument; deployment flags."""

from __future__ import annotations

import pytest

from aklited.rootfs.status import (
    Deployment,
    mark_deployments,
    parse_admin_status,
    parse_boot_argument,
)
from aklited.rootfs.sysroot import SysrootStatus

A = "a" * 64
B = "b" * 64
C = "c" * 64
CSUM = "0123456789abcdef" * 4

STATUS_BOOTED = f"""\
  lmp {A}.0 (pending)
    Version: 3
    origin refspec: {A}
* lmp {B}.1
    Version: 2
    Pinned: yes
    origin refspec: {B}
  lmp {C}.0 (rollback)
    Version: 1
    Unlocked: development
    origin refspec: {C}
  other {A}.0
    origin: none
"""


def test_parse_admin_status_keeps_order_and_details() -> None:
    found = parse_admin_status(STATUS_BOOTED)
    assert [(d.osname, d.name, d.index) for d in found] == [
        ("lmp", f"{A}.0", 0),
        ("lmp", f"{B}.1", 1),
        ("lmp", f"{C}.0", 2),
        ("other", f"{A}.0", 3),
    ]
    assert [d.version for d in found] == ["3", "2", "1", None]
    assert [d.pinned for d in found] == [False, True, False, False]
    assert found[0].origin == A
    assert found[3].origin is None
    # Flags come from aklited's own view of the boot, not from ostree's markers.
    assert not any(d.booted or d.pending or d.rollback for d in found)


def test_parse_admin_status_empty() -> None:
    assert parse_admin_status("No deployments.\n") == []
    assert parse_admin_status("") == []


def test_parse_admin_status_rejects_details_without_deployment() -> None:
    with pytest.raises(ValueError, match="before any deployment"):
        parse_admin_status("    Version: 1\n")


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (
            f"root=LABEL=otaroot ostree=/ostree/boot.1/lmp/{CSUM}/0 quiet",
            (1, "lmp", CSUM, 0),
        ),
        (
            f"ostree=/ostree/boot.0/lmp/{CSUM}/2/ console=ttyS0\n",
            (0, "lmp", CSUM, 2),
        ),
        # The last ostree= wins, as the kernel hands the last one to the init process.
        (
            f"ostree=/ostree/boot.0/x/{CSUM}/0 ostree=/ostree/boot.1/lmp/{CSUM}/1",
            (1, "lmp", CSUM, 1),
        ),
    ],
)
def test_parse_boot_argument(cmdline: str, expected: tuple[int, str, str, int]) -> None:
    argument = parse_boot_argument(cmdline)
    assert argument is not None
    assert (argument.bootversion, argument.osname, argument.bootcsum, argument.serial) == expected
    assert argument.path.startswith("/ostree/boot.")
    assert not argument.path.endswith("/")


@pytest.mark.parametrize(
    "cmdline",
    [
        "",
        "root=/dev/sda2 quiet",
        "ostree=/ostree/boot.2/lmp/" + CSUM + "/0",  # only boot.0 and boot.1 exist
        "ostree=/ostree/boot.1/lmp/short/0",
        "ostree=/ostree/boot.1/../../etc/" + CSUM + "/0",
        "ostree=/ostree/boot.1/lmp/" + CSUM + "/x",
    ],
)
def test_parse_boot_argument_rejects(cmdline: str) -> None:
    assert parse_boot_argument(cmdline) is None


def _deployments() -> list[Deployment]:
    return parse_admin_status(STATUS_BOOTED)


def test_mark_booted_in_the_middle() -> None:
    found = _deployments()
    marked = mark_deployments(found, osname="lmp", booted=found[1])
    status = SysrootStatus(osname="lmp", deployments=tuple(marked))
    assert status.booted == marked[1]
    assert status.pending == marked[0]
    assert status.rollback == marked[2]
    assert status.default == marked[0]
    assert sum(d.booted for d in marked) == 1


def test_mark_booted_default_has_no_pending() -> None:
    found = _deployments()
    marked = mark_deployments(found, osname="lmp", booted=found[0])
    status = SysrootStatus(osname="lmp", deployments=tuple(marked))
    assert status.booted == marked[0]
    assert status.pending is None
    assert status.rollback == marked[1]


def test_mark_unknown_boot_makes_default_pending() -> None:
    marked = mark_deployments(_deployments(), osname="lmp", booted=None)
    status = SysrootStatus(osname="lmp", deployments=tuple(marked))
    assert status.booted is None
    assert status.pending == marked[0]
    assert status.rollback is None


def test_mark_ignores_other_stateroots() -> None:
    found = _deployments()
    marked = mark_deployments(found, osname="other", booted=None)
    status = SysrootStatus(osname="other", deployments=tuple(marked))
    assert status.default == marked[3]
    assert status.pending == marked[3]
    assert not marked[0].pending


def test_deployment_is_frozen() -> None:
    deployment = _deployments()[0]
    with pytest.raises(AttributeError):
        deployment.booted = True  # type: ignore[misc]
