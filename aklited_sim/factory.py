"""A simulated factory: what ``fioctl`` and CI would produce for a fleet.

It signs TUF metadata with ``aklite_bundle``, commits rootfs trees with the ``ostree`` CLI,
builds app stores from busybox-static, and writes offline-update bundles. The tests, the
demo and the benchmarks publish releases through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aklite_bundle.appstore import AppStoreBuilder, BuiltLayer, ServiceSpec, busybox_rootfs_tar
from aklite_bundle.build import BundleOptions, TargetSpec, create_bundle
from aklite_bundle.signing import Keyring
from aklited_sim.sysroot import commit_tree, make_tree

HWID = "intel-corei7-64"
TAG = "main"


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
    ) -> str:
        """An app whose single service runs (or exits 1); a new version differs in its command.

        ``command`` replaces the service's default one (e.g. to print what it is first).
        """
        builder, base = self._layers()
        image = builder.image(f"{name}-img", [base])
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

    async def release(
        self,
        version: int,
        *,
        apps: Mapping[str, str] | None = None,
        same_rootfs_as: int | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Release:
        """A release: a new rootfs (with extra ``files``) or another release's, and ``apps``."""
        if same_rootfs_as is not None:
            commit = self.releases[same_rootfs_as].commit
        else:
            tree = await make_tree(self.root / f"tree-{version}", version=str(version), files=files)
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
