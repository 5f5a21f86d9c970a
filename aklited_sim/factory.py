"""A simulated factory: what ``fioctl`` and CI would produce for a fleet.

It signs TUF metadata with ``aklite_bundle``, commits rootfs trees with the ``ostree`` CLI,
builds app stores from busybox-static, and writes offline-update bundles. The tests, the
demo and the benchmarks publish releases through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aklite_bundle.appstore import (
    AppStoreBuilder,
    BuiltLayer,
    ServiceSpec,
    busybox_rootfs_tar,
    data_layer_tar,
)
from aklite_bundle.build import BundleOptions, TargetSpec, create_bundle
from aklite_bundle.signing import Keyring
from aklited.apps.blobs import blob_path
from aklited_sim.sysroot import commit_tree, make_tree, write_random_files

HWID = "intel-corei7-64"
TAG = "main"
# Payload files of a rootfs: large enough to be read like a real image's big files.
PAYLOAD_FILE_MIB = 4


@dataclass(frozen=True)
class Release:
    name: str
    version: int
    commit: str
    apps: Mapping[str, str]


@dataclass
class Factory:
    """What ``fioctl`` and CI would produce: signed targets, commits and apps."""

    root: Path
    repo: Path
    ring: Keyring = field(default_factory=Keyring.generate)
    _builder: AppStoreBuilder | None = None
    _base: BuiltLayer | None = None
    releases: dict[int, Release] = field(default_factory=dict)
    # Every publication is newer metadata, as the backend signs it: version N+1.
    metadata_version: int = 0

    @property
    def store(self) -> Path:
        return self.root / "app-store"

    def _layers(self) -> tuple[AppStoreBuilder, BuiltLayer]:
        if self._builder is None or self._base is None:
            self._builder = AppStoreBuilder(self.store, factory="e2e")
            tar = busybox_rootfs_tar(self.root / "busybox-rootfs.tar")
            self._base = self._builder.layer_from_tar(tar)
        return self._builder, self._base

    def app(
        self,
        name: str,
        *,
        version: int,
        failing: bool = False,
        command: Sequence[str] | None = None,
        layers: Sequence[BuiltLayer] = (),
    ) -> str:
        """An app whose single service runs (or exits 1); a new version differs in its command.

        ``command`` replaces the service's default one (e.g. to print what it is first);
        ``layers`` go on top of busybox in its image (e.g. :meth:`payload_layer`).
        """
        builder, base = self._layers()
        image = builder.image(f"{name}-img", [base, *layers])
        if command is None:
            command = ["sh", "-c", "exit 1"] if failing else ["sleep", f"{3600 + version}"]
        built = builder.app(
            name,
            {
                "main": ServiceSpec(
                    image, {"command": list(command), "init": True, "network_mode": "none"}
                )
            },
        )
        return built.uri

    def payload_layer(self, seed: str, *, size_mib: int) -> BuiltLayer:
        """A layer of one file of ``size_mib`` MiB of incompressible bytes, in the store.

        The bytes follow from ``seed``: another seed, another layer (nothing of it is on a
        device yet). Benchmarks load these; :meth:`forget_layer` drops one again.
        """
        builder, _ = self._layers()
        fd, name = tempfile.mkstemp(prefix="payload-", suffix=".tar", dir=self.root)
        os.close(fd)
        tar = data_layer_tar(
            Path(name), name=f"payload/{seed}", size=size_mib << 20, seed=seed.encode()
        )
        try:
            # Level 1: random bytes do not shrink, and gzip at 6 would only cost time here.
            return builder.layer_from_tar(tar, compresslevel=1)
        finally:
            tar.unlink()

    def forget_layer(self, layer: BuiltLayer) -> None:
        """Drop a layer's blob from the store once every bundle that needs it is written.

        A bundle gets the whole store (``create_bundle``): without this, every later bundle
        would carry every earlier release's payload too.
        """
        blob_path(self.store, layer.descriptor.hex).unlink(missing_ok=True)

    async def release(
        self,
        version: int,
        *,
        apps: Mapping[str, str] | None = None,
        same_rootfs_as: int | None = None,
        files: Mapping[str, bytes] | None = None,
        payload_mib: int = 0,
    ) -> Release:
        """A release: a new rootfs (with extra ``files``) or another release's, and ``apps``.

        ``payload_mib``: the new rootfs also carries that many MiB of random files (4 MiB
        each, the rest in one more) under ``usr/share/payload``, written to disk, never
        held in memory.
        """
        if same_rootfs_as is not None:
            commit = self.releases[same_rootfs_as].commit
        else:
            tree = await make_tree(self.root / f"tree-{version}", version=str(version), files=files)
            whole, rest = divmod(payload_mib, PAYLOAD_FILE_MIB)
            payload = tree / "usr/share/payload"
            if whole:
                await write_random_files(payload, count=whole, size=PAYLOAD_FILE_MIB << 20)
            if rest:
                await write_random_files(payload, count=1, size=rest << 20, prefix="rest")
            commit = await commit_tree(self.repo, tree, subject=f"v{version}", version=str(version))
        release = Release(
            name=f"{HWID}-lmp-{version}", version=version, commit=commit, apps=dict(apps or {})
        )
        self.releases[version] = release
        return release

    async def release_with_files(self, version: int, *, files: Mapping[str, bytes]) -> Release:
        """A rootfs-only release whose tree carries extra files (e.g. a large payload)."""
        tree = await make_tree(self.root / f"tree-{version}", version=str(version), files=files)
        commit = await commit_tree(self.repo, tree, subject=f"v{version}", version=str(version))
        release = Release(name=f"{HWID}-lmp-{version}", version=version, commit=commit, apps={})
        self.releases[version] = release
        return release

    async def write_bundle(self, dst: Path, releases: list[Release], *, tag: str = TAG) -> Path:
        self.metadata_version += 1
        return await create_bundle(
            dst,
            ring=self.ring,
            targets=[
                TargetSpec(
                    name=r.name,
                    version=r.version,
                    hardware_id=HWID,
                    ostree_commit=r.commit,
                    tags=(tag,),
                    apps=r.apps,
                )
                for r in releases
            ],
            options=BundleOptions(
                bundle_type="ci", tag=tag, metadata_version=self.metadata_version
            ),
            ostree_repo=self.repo,
            app_store=self.store if any(r.apps for r in releases) else None,
        )
