"""End-to-end: aklite-offline install / run / current on a simulated device, every exit code
of the offline-update table, with a real sysroot, dockerd, bus and signed bundles."""

from __future__ import annotations

from pathlib import Path

import pytest

from aklited_sim.bus import SystemdMock
from aklited_sim.factory import HWID, Factory, Release
from tests.integration.engine.harness import Device, usb_drive

pytestmark = [pytest.mark.root, pytest.mark.docker]

E2E = tuple[Device, Factory, SystemdMock]


def aklite_jobs(systemd: SystemdMock) -> list[str]:
    """The Stop/Start calls aklited made on aktualizr-lite.service, in order."""
    # the first StartUnit is the fixture bringing the service up
    return systemd.jobs()[1:]


def assert_code(done: object, code: int) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)  # type: ignore[attr-defined]


async def test_rootfs_and_apps_update_then_finalize(e2e: E2E, tmp_path: Path) -> None:
    device, factory, systemd = e2e
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    with usb_drive(tmp_path) as drive:
        bundle = await factory.write_bundle(drive.mountpoint / "update", [v2])
        drive.remount(options="ro,nosuid,nodev,noexec")
        done = device.cli("install", "-s", str(bundle))
    # the drive is gone: everything the update needs is on the device now
    assert_code(done, 100)
    assert "reboot" in done.stdout
    # one summary line: what, from where, to what, the result and how long it took
    summary = [line for line in done.stderr.splitlines() if "install finished" in line]
    assert len(summary) == 1
    for field in (f"target={v2.name}", "from_target=initial-target", "result=100", "duration_s="):
        assert field in summary[0], summary[0]
    assert any(c.startswith('StopUnit "aktualizr-lite.service"') for c in systemd.calls())
    assert device.sentinel.exists()

    # before the reboot, run says so and changes nothing
    assert_code(device.cli("run"), 100)

    await device.reboot()
    done = device.cli("run")
    assert_code(done, 0)
    assert "run finished" in done.stderr
    assert "result=0" in done.stderr
    current = device.current()
    assert current["Target"] == v2.name
    assert current["Version"] == "2"
    assert current["Ostree hash"] == v2.commit
    assert "app1: running" in device.cli("current").stdout
    assert device.running_projects() == {"app1": ["running"]}
    text = device.current_target_file.read_text()
    assert f'TARGET_NAME="{v2.name}"' in text
    assert 'CUSTOM_VERSION="2"' in text
    # aktualizr-lite was running before, so it runs again
    assert aklite_jobs(systemd) == ["StopUnit", "StartUnit"]
    assert_code(device.cli("run"), 40)


async def test_apps_only_update_then_already_installed(e2e: E2E, tmp_path: Path) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    v3 = await factory.release(3, apps={"app1": factory.app("app1", version=3)}, same_rootfs_as=2)
    with usb_drive(tmp_path) as drive:
        b2 = await factory.write_bundle(drive.mountpoint / "v2", [v2])
        b3 = await factory.write_bundle(drive.mountpoint / "v3", [v3])
        await device.update_to(b2)

        done = device.cli("install", "-s", str(b3))
        assert_code(done, 101)
        assert "restart dockerd" in done.stdout
        assert_code(device.cli("run"), 0)
        assert device.current()["Target"] == v3.name

        # the same bundle again: nothing to do
        assert_code(device.cli("install", "-s", str(b3)), 0)
    assert device.running_projects() == {"app1": ["running"]}


async def test_downgrade_refused_then_forced(e2e: E2E, tmp_path: Path) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2)
    v3 = await factory.release(3)
    with usb_drive(tmp_path) as drive:
        b3 = await factory.write_bundle(drive.mountpoint / "v3", [v3])
        b2 = await factory.write_bundle(drive.mountpoint / "v2", [v2])
        await device.update_to(b3)

        done = device.cli("install", "-s", str(b2))
        assert_code(done, 102)
        assert "--force" in done.stderr
        # one line for the operator; the rest of stderr is the log
        errors = [line for line in done.stderr.splitlines() if line.startswith("aklite-offline")]
        assert len(errors) == 1
        assert "older than the current version" in errors[0]
        assert device.current()["Target"] == v3.name

        assert_code(device.cli("install", "-s", str(b2), "--force"), 100)
        await device.reboot()
        assert_code(device.cli("run"), 0)
    assert device.current()["Target"] == v2.name


async def test_pending_install_blocks_another(e2e: E2E, tmp_path: Path) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2)
    v3 = await factory.release(3)
    with usb_drive(tmp_path) as drive:
        b2 = await factory.write_bundle(drive.mountpoint / "v2", [v2])
        b3 = await factory.write_bundle(drive.mountpoint / "v3", [v3])
        assert_code(device.cli("install", "-s", str(b2)), 100)
        done = device.cli("install", "-s", str(b3))
        assert_code(done, 30)
        assert v2.name in done.stderr
        # the pending install is untouched
        await device.reboot()
        assert_code(device.cli("run"), 0)
    assert device.current()["Target"] == v2.name


async def test_bootloader_rollback_keeps_old_target(e2e: E2E, tmp_path: Path) -> None:
    device, factory, systemd = e2e
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    v3 = await factory.release(3, apps={"app1": factory.app("app1", version=3)})
    with usb_drive(tmp_path) as drive:
        b2 = await factory.write_bundle(drive.mountpoint / "v2", [v2])
        b3 = await factory.write_bundle(drive.mountpoint / "v3", [v3])
        await device.update_to(b2)
        assert_code(device.cli("install", "-s", str(b3)), 100)
    # the bootloader gives up on the new deployment and boots the previous one
    await device.reboot(position=1)
    done = device.cli("run")
    assert_code(done, 99)
    current = device.current()
    assert current["Target"] == v2.name
    assert current["Ostree hash"] == v2.commit
    assert device.running_projects() == {"app1": ["running"]}
    failed = [i for i in device.installs() if i["target_name"] == v3.name]
    assert failed[-1]["state"] == "failed"
    assert failed[-1]["result_code"] == 99
    assert 'TARGET_NAME="' + v2.name in device.current_target_file.read_text()
    assert aklite_jobs(systemd)[-1] == "StartUnit"


async def test_app_failure_rolls_back_to_previous_target(e2e: E2E, tmp_path: Path) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    v3 = await factory.release(3, apps={"app1": factory.app("app1", version=3, failing=True)})
    with usb_drive(tmp_path) as drive:
        b2 = await factory.write_bundle(drive.mountpoint / "v2", [v2])
        b3 = await factory.write_bundle(drive.mountpoint / "v3", [v3])
        await device.update_to(b2)
        assert_code(device.cli("install", "-s", str(b3)), 100)
    await device.reboot()
    done = device.cli("run")
    # the new rootfs booted but its app exits 1: the previous target is deployed again
    assert_code(done, 100)
    assert "exit" in done.stdout or "status 1" in done.stdout
    await device.reboot()
    assert_code(device.cli("run"), 0)
    current = device.current()
    assert current["Target"] == v2.name
    assert current["Ostree hash"] == v2.commit
    assert device.running_projects() == {"app1": ["running"]}
    failed = [i for i in device.installs() if i["target_name"] == v3.name][-1]
    assert failed["state"] == "failed"


async def test_no_rollback_target_is_120(e2e: E2E, tmp_path: Path) -> None:
    device, factory, _ = e2e
    # The device cannot tell what it booted (no ostree= argument): no target to go back to.
    device.sim.kernel_cmdline.write_text("console=ttyS0,115200\n")
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2, failing=True)})
    with usb_drive(tmp_path) as drive:
        b2 = await factory.write_bundle(drive.mountpoint / "v2", [v2])
        assert_code(device.cli("install", "-s", str(b2)), 100)
    await device.reboot()
    done = device.cli("run")
    assert_code(done, 120)
    assert "no previous target" in done.stderr


async def test_nothing_pending_is_40(e2e: E2E) -> None:
    device, _, _ = e2e
    done = device.cli("run")
    assert_code(done, 40)


async def test_tampered_bundle_after_interrupted_install_leaves_device_as_it_was(
    e2e: E2E, tmp_path: Path
) -> None:
    device, factory, systemd = e2e
    v2 = await factory.release(2)
    good = await factory.write_bundle(tmp_path / "bundles/good", [v2])
    # an install killed while pulling: aktualizr-lite was stopped, nothing deployed
    assert device.cli("install", "-s", str(good), crash_at="pulling").returncode == -9
    assert aklite_jobs(systemd) == ["StopUnit"]

    # newer metadata, tampered: the device must not trust it
    bad = await factory.write_bundle(tmp_path / "bundles/bad", [v2])
    targets = bad / "tuf/targets.json"
    targets.write_bytes(targets.read_bytes().replace(v2.commit.encode(), b"f" * 64))
    done = device.cli("install", "-s", str(bad))
    assert_code(done, 11)
    assert "targets.json" in done.stderr
    # the interrupted install is abandoned and aktualizr-lite runs again
    assert aklite_jobs(systemd) == ["StopUnit", "StartUnit"]
    assert_code(device.cli("run"), 40)
    assert device.current()["Ostree hash"] == device.sim.initial_commit
    states = [i["state"] for i in device.installs()]
    assert states == ["current", "abandoned"]


async def test_rootfs_only_device_needs_no_docker(e2e: E2E, tmp_path: Path) -> None:
    device, factory, _ = e2e
    sota = device.config_dir / "sota.toml"
    text = sota.read_text().replace('type = "ostree+compose_apps"', 'type = "ostree"')
    text = text.replace("docker_host = ", 'docker_host = "unix:///nonexistent.sock"\n# was: ')
    sota.write_text(text)
    # apps in the target are ignored by a device that runs none
    v2 = await factory.release(2, apps={"app1": factory.app("app1", version=2)})
    bundle = await factory.write_bundle(tmp_path / "bundles/v2", [v2])
    await device.update_to(bundle)
    current = device.current()
    assert current["Target"] == v2.name
    assert current["Apps"] == "none"
    assert device.running_projects() == {}


async def test_an_older_drive_says_its_metadata_is_older(e2e: E2E, tmp_path: Path) -> None:
    device, factory, _ = e2e
    v2 = await factory.release(2)
    older = await factory.write_bundle(tmp_path / "older", [v2])  # signed first: older metadata
    newer = await factory.write_bundle(tmp_path / "newer", [v2])
    await device.update_to(newer)
    # The drive's TUF metadata is older than what the device trusts: the stored copy is used,
    # and the outcome says so instead of looking like "nothing to do".
    done = device.cli("install", "-s", str(older))
    assert_code(done, 0)
    assert "already installed" in done.stdout
    assert "older than the device's" in done.stdout
    assert "timestamp.json" in done.stdout


@pytest.mark.parametrize("kind", ["ostree", "ostree+compose_apps"])
async def test_a_bundle_of_the_factory_image_is_the_installed_target(
    e2e: E2E, tmp_path: Path, kind: str
) -> None:
    # A drive made for the whole fleet meets a device still on its factory image.
    device, factory, systemd = e2e
    if kind == "ostree":
        sota = device.config_dir / "sota.toml"
        sota.write_text(sota.read_text().replace('type = "ostree+compose_apps"', 'type = "ostree"'))
    factory_image = Release(
        name=f"{HWID}-lmp-1", version=1, commit=device.sim.initial_commit, apps={}
    )
    bundle = await factory.write_bundle(tmp_path / "bundles/v1", [factory_image])

    checked = device.cli("check", "-s", str(bundle))
    assert_code(checked, 0)
    assert f"the device already runs {factory_image.name}" in checked.stdout
    installed = device.cli("install", "-s", str(bundle))
    assert_code(installed, 0)
    assert f"the device already runs {factory_image.name}" in installed.stdout

    current = device.current()
    assert (current["Target"], current["Ostree hash"]) == (factory_image.name, factory_image.commit)
    assert factory_image.name in device.current_target_file.read_text()
    assert aklite_jobs(systemd) == []  # nothing was stopped, nothing staged
    assert device.running_projects() == {}
    assert_code(device.cli("run"), 40)  # nothing waits to be finished
