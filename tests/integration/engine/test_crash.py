"""SIGKILL at every journal transition of install and run, in turn: each time a new
``install``/``run`` must end in a consistent state (the new target current, or the old one
current with the failure recorded), never a half-installed device, a lost journal or a
wedged lock."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from aklited.engine.phases import Phase
from aklited_sim.bus import SystemdMock
from aklited_sim.factory import Factory, Release
from tests.fakes import ROOTFS_AND_APPS_INSTALL
from tests.integration.engine.harness import Device

pytestmark = [pytest.mark.root, pytest.mark.docker]

E2E = tuple[Device, Factory, SystemdMock]

INSTALL_POINTS = ROOTFS_AND_APPS_INSTALL
RUN_POINTS = [Phase.FINALIZING, Phase.CURRENT]
# run of a target whose app fails: back to the previous target over a second reboot
ROLLBACK_POINTS = [
    Phase.FINALIZING,
    Phase.ROLLING_BACK,
    Phase.AWAITING_ROLLBACK_REBOOT,
    Phase.FINALIZING_ROLLBACK,
    Phase.FAILED,
]


def test_the_points_cover_every_phase_an_update_passes() -> None:
    # The engine unit tests crash at every phase; here every phase of a real update and
    # rollback but the factory image's and the abandoned install's (settled, never acted on).
    covered = {*INSTALL_POINTS, *RUN_POINTS, *ROLLBACK_POINTS}
    assert set(Phase) - covered == {
        Phase.INITIAL,
        Phase.AWAITING_DOCKER_RESTART,
        Phase.ABANDONED,
    }


def killed(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode == -signal.SIGKILL


def code(done: subprocess.CompletedProcess[str]) -> int:
    return done.returncode


def assert_consistent(device: Device, expected: Release, systemd: SystemdMock) -> None:
    """The device runs ``expected``: journal, sysroot, apps, current-target, aktualizr-lite."""
    current = device.current()
    assert current["Target"] == expected.name
    assert current["Ostree hash"] == expected.commit
    assert current.get("Booted commit") is None  # booted == current
    assert f'TARGET_NAME="{expected.name}"' in device.current_target_file.read_text()
    if expected.apps:
        assert device.running_projects() == {app: ["running"] for app in expected.apps}
    # nothing is left pending, and the lock is free: another run says so at once
    assert code(device.cli("run")) == 40
    # aktualizr-lite was running before the update, so it runs again
    jobs = systemd.jobs()
    assert jobs[-1] == "StartUnit", jobs


async def setup_two_releases(
    device: Device, factory: Factory, tmp_path: Path, *, failing_v3: bool
) -> tuple[Release, Release, Path, Path]:
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    v3 = await factory.release(3, apps={"app1": factory.app("app1", version=3, failing=failing_v3)})
    bundles = tmp_path / "bundles"
    b2 = await factory.write_bundle(bundles / "v2", [v2])
    b3 = await factory.write_bundle(bundles / "v3", [v3])
    return v2, v3, b2, b3


async def test_kill_points_cover_every_transition(e2e: E2E, tmp_path: Path) -> None:
    """The lists above are exactly what a clean update and a clean rollback journal."""
    device, factory, _ = e2e
    _, _, b2, b3 = await setup_two_releases(device, factory, tmp_path, failing_v3=True)
    await device.update_to(b2)
    clean = device.journal_states()
    assert code(device.cli("install", "-s", str(b3))) == 100
    await device.reboot()
    assert code(device.cli("run")) == 100
    await device.reboot()
    assert code(device.cli("run")) == 0
    rollback = device.journal_states()[len(clean) :]

    def transitions(states: list[str]) -> list[str]:
        return [s for s in states if not s.endswith("-failed")]

    first_install = transitions(clean)
    # the first update also records the factory image as the initial target
    assert first_install[first_install.index("verifying") :] == INSTALL_POINTS + RUN_POINTS
    assert transitions(rollback) == INSTALL_POINTS + ROLLBACK_POINTS
    assert "finalizing-failed" in rollback  # the app failure itself is journalled


@pytest.mark.parametrize("point", INSTALL_POINTS)
async def test_install_killed(e2e: E2E, tmp_path: Path, point: str) -> None:
    device, factory, systemd = e2e
    v2, _, b2, _ = await setup_two_releases(device, factory, tmp_path, failing_v3=False)
    assert killed(device.cli("install", "-s", str(b2), crash_at=point))
    # a new install settles what the killed one left and ends ready for the reboot
    await device.update_to(b2)
    assert_consistent(device, v2, systemd)


@pytest.mark.parametrize("point", RUN_POINTS)
async def test_run_killed(e2e: E2E, tmp_path: Path, point: str) -> None:
    device, factory, systemd = e2e
    v2, _, b2, _ = await setup_two_releases(device, factory, tmp_path, failing_v3=False)
    assert code(device.cli("install", "-s", str(b2))) == 100
    await device.reboot()
    assert killed(device.cli("run", crash_at=point))
    # killed before the result was journalled: run finishes it; after: nothing is pending
    assert code(device.cli("run")) in (0, 40)
    assert_consistent(device, v2, systemd)


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
async def test_rollback_killed(e2e: E2E, tmp_path: Path, point: str) -> None:
    device, factory, systemd = e2e
    v2, v3, b2, b3 = await setup_two_releases(device, factory, tmp_path, failing_v3=True)
    await device.update_to(b2)
    assert code(device.cli("install", "-s", str(b3))) == 100
    await device.reboot()
    killed_in_first_run = killed(device.cli("run", crash_at=point))
    if killed_in_first_run:
        # the next run picks the rollback up where it stopped
        done = device.cli("run")
        assert code(done) in (100, 0, 40), done.stderr
        if code(done) == 100:
            await device.reboot()
            assert code(device.cli("run")) == 0
    else:
        # the point lies in the second run, after the rollback reboot
        await device.reboot()
        assert killed(device.cli("run", crash_at=point))
        assert code(device.cli("run")) in (0, 40)
    assert_consistent(device, v2, systemd)
    failed = [i for i in device.installs() if i["target_name"] == v3.name][-1]
    assert failed["state"] == "failed"
