"""The worlds the hostile-drive tests tamper with: bundles built once, devices made per case.

Building a signed bundle costs far more than a case, so each kind of bundle is built once per
session and every case gets ``cp -a`` copies: of the bundle (to tamper with one path) and of a
template device (so every device boots the same initial commit, which an apps-only target
names).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aklite_bundle.appstore import AppStoreBuilder, BuiltApp, BuiltImage, ServiceSpec
from aklite_bundle.appstore import busybox_rootfs_tar as make_busybox_rootfs_tar
from aklite_bundle.signing import (
    Keyring,
    expires_in,
    meta_entry,
    publish_top_level,
    sign_document,
)
from aklited_sim.bus import SystemdMock
from aklited_sim.factory import HWID, Factory, Release
from aklited_sim.sysroot import SimDevice, commit_tree, make_device, make_tree, remove_tree
from tests.helpers.dockerd import Dockerd
from tests.integration.engine.harness import Device, clean_engine, write_config
from tests.integration.hostile.kit import (
    Ran,
    aklite_jobs,
    assert_device_unchanged,
    copy_bundle,
    deployments,
    run_cli,
)

AKLITE_UNIT = "aktualizr-lite.service"
# A file and a directory only the new rootfs has, so the device must read their objects.
PAYLOAD_DIR = "usr/share/hostile"
PAYLOAD = f"{PAYLOAD_DIR}/payload"
PAYLOAD_DIR_MODE = 0o750  # no directory of the factory image has it: a new dirmeta object


@dataclass(frozen=True)
class NoDocker:
    """Stands in for a Dockerd in ``write_config`` on a device without Compose Apps."""

    host: str = "unix:///nonexistent.sock"


@dataclass
class World:
    """A bundle built once, the factory that signed it, and the device template it fits."""

    root: Path
    template: SimDevice
    factory: Factory
    release: Release
    bundle: Path


@dataclass
class RootfsWorld(World):
    """A rootfs-only update; ``objects`` maps an object kind to its path in the bundle."""

    objects: dict[str, str]


@dataclass
class AppsWorld(World):
    """An apps-only update (same rootfs as the template) of one app, ``app1``."""

    app: BuiltApp
    image: BuiltImage

    @property
    def uri_file(self) -> str:
        return f"apps/apps/{self.app.name}/{self.app.manifest.hex}/uri"

    def blobs(self) -> dict[str, str]:
        """Node of the app's Merkle tree -> its blob's sha256 hex."""
        return {
            "app-manifest": self.app.manifest.hex,
            "compose-bundle": self.app.bundle.hex,
            "image-index": self.image.root.hex,
            "image-manifest": self.image.manifest.hex,
            "image-config": self.image.config.hex,
            "layer": self.image.layers[0].descriptor.hex,
        }


def _ostree_ls(repo: Path, commit: str, path: str) -> list[str]:
    done = subprocess.run(
        ["ostree", f"--repo={repo}", "ls", "-C", "-d", commit, path],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.split()


def _object(checksum: str, objtype: str) -> str:
    return f"ostree_repo/objects/{checksum[:2]}/{checksum[2:]}.{objtype}"


async def build_rootfs_world(root: Path) -> RootfsWorld:
    template = await make_device(root / "template", osname="lmp", version="1")
    factory = Factory(root=root / "factory", repo=template.repo)
    factory.root.mkdir(parents=True)
    # a second root in the bundle: the device must read 2.root.json too
    factory.ring.rotate("targets")
    tree = await make_tree(
        root / "tree-2", version="2", files={PAYLOAD: b"only the new rootfs has this\n" * 64}
    )
    (tree / PAYLOAD_DIR).chmod(PAYLOAD_DIR_MODE)
    commit = await commit_tree(factory.repo, tree, subject="v2", version="2")
    release = Release(name=f"{HWID}-lmp-2", version=2, commit=commit, apps={})
    factory.releases[2] = release
    bundle = await factory.write_bundle(root / "bundle", [release])

    repo = bundle / "ostree_repo"
    _mode, _uid, _gid, _size, dirtree, dirmeta, _name = _ostree_ls(repo, commit, f"/{PAYLOAD_DIR}")
    _mode, _uid, _gid, _size, file_sum, _name = _ostree_ls(repo, commit, f"/{PAYLOAD}")
    objects = {
        "commit": _object(commit, "commit"),
        "dirtree": _object(dirtree, "dirtree"),
        "dirmeta": _object(dirmeta, "dirmeta"),
        "filez": _object(file_sum, "filez"),
        "config": "ostree_repo/config",
    }
    device_repo = template.sysroot / "ostree/repo/objects"
    for kind, relative in objects.items():
        assert (bundle / relative).is_file(), relative
        if kind != "config":
            # the device lacks it, so an install must read it from the bundle
            stem = Path(relative).relative_to("ostree_repo/objects").with_suffix("")
            assert not list(device_repo.glob(f"{stem}.*")), f"the device already has {kind}"
    return RootfsWorld(root, template, factory, release, bundle, objects)


async def build_apps_world(root: Path) -> AppsWorld:
    template = await make_device(root / "template", osname="lmp", version="1")
    factory = Factory(root=root / "factory", repo=template.repo)
    factory.root.mkdir(parents=True)
    builder = AppStoreBuilder(factory.store, factory="e2e")
    base = builder.layer_from_tar(make_busybox_rootfs_tar(factory.root / "busybox-rootfs.tar"))
    image = builder.image("app1-img", [base])
    spec = {"command": ["sleep", "3600"], "init": True, "network_mode": "none"}
    app = builder.app("app1", {"main": ServiceSpec(image, spec)})
    # the rootfs the device runs: an apps-only update
    release = Release(
        name=f"{HWID}-lmp-2", version=2, commit=template.initial_commit, apps={"app1": app.uri}
    )
    factory.releases[2] = release
    bundle = await factory.write_bundle(root / "bundle", [release])
    return AppsWorld(root, template, factory, release, bundle, app, image)


def new_device(
    world: World, root: Path, *, bus_address: str, dockerd: Dockerd | None = None
) -> Device:
    """A device under ``root`` booted into the template's commit, trusting the world's root.

    Without ``dockerd`` it is a rootfs-only device (``pacman.type = "ostree"``).
    """
    rootfs = root / "rootfs"
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(world.template.root), str(rootfs)], check=True, timeout=60)
    template = world.template
    sim = SimDevice(
        root=rootfs,
        sysroot=rootfs / template.sysroot.relative_to(template.root),
        osname=template.osname,
        kernel_cmdline=rootfs / template.kernel_cmdline.relative_to(template.root),
        repo=rootfs / template.repo.relative_to(template.root),
        initial_commit=template.initial_commit,
    )
    provisioned = root / "device/usr/lib/sota/tuf/ci"
    provisioned.mkdir(parents=True)
    (provisioned / "1.root.json").write_bytes(world.factory.ring.roots[0])
    config_dir = write_config(root / "device", sim, dockerd or NoDocker())  # type: ignore[arg-type]
    if dockerd is None:
        sota = config_dir / "sota.toml"
        text = sota.read_text().replace('type = "ostree+compose_apps"', 'type = "ostree"')
        sota.write_text(text)
    return Device(
        root=root / "device",
        sim=sim,
        dockerd=dockerd,  # type: ignore[arg-type]
        bus_address=bus_address,
        config_dir=config_dir,
    )


@dataclass
class Case:
    """One case: a fresh device, a private copy of the bundle, a place outside it."""

    device: Device
    systemd: SystemdMock
    bundle: Path
    outside: Path
    initial_commit: str
    cgroup: Path | None = None  # every command runs in it (a memory cap)
    calls_before: int = 0

    def path(self, relative: str) -> Path:
        return self.bundle / relative

    def cli(self, *args: str) -> Ran:
        self.calls_before = len(self.systemd.calls())
        return run_cli(self.device, *args, cgroup=self.cgroup)

    def install(self, *extra: str) -> Ran:
        return self.cli("install", "-s", str(self.bundle), *extra)

    def assert_unchanged(
        self, code: int, *, full: bool = True, transaction: bool | None = None
    ) -> None:
        """The last install was refused with ``code`` and left the device as it was."""
        assert_device_unchanged(
            self.device,
            self.systemd,
            code=code,
            calls_before=self.calls_before,
            initial_commit=self.initial_commit,
            transaction=transaction,
            full=full,
            cgroup=self.cgroup,
        )


def case(
    world: World,
    tmp_path: Path,
    systemd: SystemdMock,
    dockerd: Dockerd | None,
    cgroup: Path | None,
) -> Iterator[Case]:
    """The body of a case fixture: device and bundle copy made, cleaned up afterwards."""
    # aktualizr-lite runs when the case begins, whatever an earlier case did
    jobs = aklite_jobs(systemd, since=0)
    if jobs and jobs[-1] == "StopUnit":
        systemd.call("org.freedesktop.systemd1.Manager.StartUnit", AKLITE_UNIT, "replace")
    device = new_device(world, tmp_path / "dev", bus_address=systemd.address, dockerd=dockerd)
    bundle = copy_bundle(world.bundle, tmp_path / "drive" / "bundle")
    try:
        yield Case(
            device=device,
            systemd=systemd,
            bundle=bundle,
            outside=tmp_path / "outside",
            initial_commit=world.template.initial_commit,
            cgroup=cgroup,
        )
    finally:
        if dockerd is not None:
            clean_engine(dockerd)  # images a successful install loaded
        if len(deployments(device)) > 1:
            # ostree made the new deployment immutable: pytest could not delete it
            asyncio.run(remove_tree(device.sim.root))


def bundle_targets(bundle: Path) -> dict[str, Any]:
    """The ``targets`` entries of a bundle's ``tuf/targets.json``."""
    document = json.loads((bundle / "tuf/targets.json").read_bytes())
    return dict(document["signed"]["targets"])


def resign_top_level(
    bundle: Path,
    ring: Keyring,
    *,
    targets: Mapping[str, Any],
    version: int,
    timestamp_version: int | None = None,
) -> None:
    """Sign new targets, snapshot and timestamp for ``bundle`` with the factory's keys.

    Args:
        targets: the ``targets`` entries to publish.
        version: the version of targets and snapshot, and the versions the snapshot and
            timestamp name them by (also the timestamp's own, unless given apart).
        timestamp_version: the timestamp's own ``version``, when it differs.
    """
    top = publish_top_level(ring, targets, version=version)
    timestamp = top.timestamp
    if timestamp_version is not None:
        timestamp = sign_document(
            {
                "_type": "Timestamp",
                "expires": expires_in(30),
                "meta": {"snapshot.json": meta_entry(top.snapshot, version)},
                "version": timestamp_version,
            },
            ring.roles["timestamp"],
        )
    tuf = bundle / "tuf"
    (tuf / "targets.json").write_bytes(top.targets)
    (tuf / "snapshot.json").write_bytes(top.snapshot)
    (tuf / "timestamp.json").write_bytes(timestamp)
