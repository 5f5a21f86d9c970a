"""``make demo``: a simulated device takes an offline update from a simulated USB drive.

Everything is real but the hardware: the device is an OSTree sysroot in a temporary
directory (its "kernel command line" a file), its Docker engine an isolated ``dockerd``, the
USB drive a loop-mounted ext4 image. A simulated factory signs TUF metadata, commits a new
rootfs and publishes a Compose App; ``aklite-offline`` then installs the update from the
drive, the device "reboots", and ``aklite-offline run`` finalizes it.

Run as root: ``python -m aklited_sim.demo [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path

from aklite_bundle.appstore import AppStoreBuilder, ServiceSpec, busybox_rootfs_tar
from aklite_bundle.build import BundleOptions, TargetSpec, create_bundle
from aklite_bundle.signing import Keyring
from aklited.log import configure_logging
from aklited_sim.dockerd import Dockerd, start_dockerd
from aklited_sim.loopfs import loop_ext4
from aklited_sim.sysroot import SimDevice, commit_tree, make_device, make_tree, reboot, remove_tree

HWID = "raspberrypi4-64"
TAG = "main"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def device_config(root: Path, device: SimDevice, dockerd: Dockerd) -> Path:
    conf = root / "etc/sota/conf.d"
    conf.mkdir(parents=True)
    (conf / "40-hardware-id.toml").write_text(f'[provision]\nprimary_ecu_hardware_id = "{HWID}"\n')
    (conf / "sota.toml").write_text(
        f"""[pacman]
type = "ostree+compose_apps"
os = "{device.osname}"
sysroot = "{device.sysroot}"
tags = "{TAG}"
compose_apps_root = "{root}/var/sota/compose-apps"
reset_apps_root = "{root}/var/sota/reset-apps"

[storage]
path = "{root}/var/sota"
uptane_metadata_path = "{root}/usr/lib/sota/tuf"

[bootloader]
reboot_sentinel_dir = "{root}/run/aktualizr-session"

[aklited]
kernel_cmdline = "{device.kernel_cmdline}"
docker_host = "{dockerd.host}"
lock_path = "{root}/run/lock/aklite.lock"
"""
    )
    return conf


async def aklite_offline(conf: Path, *args: str) -> int:
    argv = ["aklite-offline", "-c", str(conf), "--log-level", "3", *args]
    print("$ " + " ".join(argv), flush=True)
    # No system bus here: aklited says so once and leaves services alone.
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    env["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=/nonexistent"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aklited.cli.offline", *argv[1:], env=env
    )
    code = await process.wait()
    print(f"(exit code {code})", flush=True)
    return code


async def publish(work: Path, repo: Path, ring: Keyring, drive: Path) -> tuple[TargetSpec, Path]:
    """The factory side: a new rootfs, an app, signed metadata, all written onto the drive."""
    tree = await make_tree(
        work / "tree-2", version="2", files={"usr/share/demo/motd": b"Welcome to release 2\n"}
    )
    commit = await commit_tree(repo, tree, subject="release 2", version="2")
    store = work / "app-store"
    builder = AppStoreBuilder(store, factory="demo-factory")
    base = builder.layer_from_tar(busybox_rootfs_tar(work / "busybox.tar"))
    image = builder.image("hello", [base])
    app = builder.app(
        "hello",
        {
            "hello": ServiceSpec(
                image,
                {"command": ["sh", "-c", "echo hello from release 2; sleep 3600"], "init": True},
            )
        },
    )
    target = TargetSpec(
        name=f"{HWID}-lmp-2",
        version=2,
        hardware_id=HWID,
        ostree_commit=commit,
        tags=(TAG,),
        apps={"hello": app.uri},
    )
    bundle = await create_bundle(
        drive / "offline-update",
        ring=ring,
        targets=[target],
        options=BundleOptions(bundle_type="ci", tag=TAG),
        ostree_repo=repo,
        app_store=store,
    )
    return target, bundle


async def demo(work: Path) -> int:
    say("A device running its factory image (release 1)")
    device = await make_device(work / "device-rootfs", osname="lmp", version="1")
    print(f"sysroot {device.sysroot}, booted commit {device.initial_commit[:12]}")
    ring = Keyring.generate()
    root = work / "device"
    provisioned = root / "usr/lib/sota/tuf/ci"
    provisioned.mkdir(parents=True)
    (provisioned / "1.root.json").write_bytes(ring.roots[0])
    dockerd = await asyncio.to_thread(start_dockerd, parent=work)
    try:
        conf = device_config(root, device, dockerd)
        with loop_ext4(work / "usb.img", size_mib=128, mountpoint=work / "usb") as drive:
            say("The factory publishes release 2 onto a USB drive (signed TUF metadata)")
            target, bundle = await publish(work / "factory", device.repo, ring, drive.mountpoint)
            print(f"bundle {bundle}: {target.name}, app hello")
            drive.remount(options="ro,nosuid,nodev,noexec")
            say("The drive is plugged in: check, then install")
            await aklite_offline(conf, "check", "-s", str(bundle))
            code = await aklite_offline(conf, "install", "-s", str(bundle))
        if code != 100:
            print("install did not ask for a reboot", file=sys.stderr)
            return 1
        say("The drive is removed; the device reboots into release 2")
        (root / "run/aktualizr-session/need_reboot").unlink(missing_ok=True)
        await reboot(device)
        say("After boot: finalize the update and start the apps")
        code = await aklite_offline(conf, "run")
        await aklite_offline(conf, "current")
        logs = await asyncio.to_thread(dockerd.cli, "logs", "hello-hello-1", check=False)
        print(f"app output: {logs.stdout.strip()}")
        motd = (root / "var/sota/current-target").read_text()
        print(f"/var/sota/current-target:\n{motd}")
        return 0 if code == 0 else 1
    finally:
        await asyncio.to_thread(dockerd.stop)


def main() -> int:
    parser = argparse.ArgumentParser(prog="aklited-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("aklited demo: run as root (it attaches a loop device and starts dockerd)")
        return 1
    configure_logging(target="console", level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="aklited-demo-"))
    try:
        result = asyncio.run(demo(work))
    finally:
        if args.keep:
            print(f"\nwork directory kept: {work}")
        else:
            asyncio.run(remove_tree(work))
    say("Demo " + ("finished: the device runs release 2" if result == 0 else "FAILED"))
    return result


if __name__ == "__main__":
    sys.exit(main())
