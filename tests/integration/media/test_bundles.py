"""find_bundle on mounted drives: where fioctl puts a bundle, and what a hostile drive
may try instead (links to the host's files, which must never be followed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from aklited.daemon.media import MediaWatcher, find_bundle
from aklited.daemon.mounts import mount_drive
from aklited_sim.udev import LoopDrives
from tests.integration.media.kit import added_image, fuse_helper, make_image

pytestmark = pytest.mark.root

Layout = Callable[[Path], object]
OnDrive = Callable[[str, Layout], Awaitable[tuple[Path | None, Path]]]


def bundle_at(root: Path, *, content: str = "ostree_repo") -> Path:
    (root / "tuf").mkdir(parents=True)
    (root / "tuf" / "1.root.json").write_text("{}")
    (root / content).mkdir()
    return root


async def bundle_on_drive(
    fs: str,
    layout: Layout,
    *,
    watcher: MediaWatcher,
    loops: LoopDrives,
    media_root: Path,
    tmp_path: Path,
) -> tuple[Path | None, Path]:
    """Write ``layout`` onto a fresh ``fs`` drive, mount it; (bundle found, mountpoint)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    layout(tree)
    image = make_image(fs, tmp_path / "drive.img", label="BUNDLES", tree=tree)
    drive = await added_image(watcher.events(), loops.attach(image), image)
    async with mount_drive(drive, media_root) as mounted:
        return await find_bundle(mounted.mountpoint), mounted.mountpoint


@pytest.fixture
def on_drive(watcher: MediaWatcher, loops: LoopDrives, media_root: Path, tmp_path: Path) -> OnDrive:
    async def run(fs: str, layout: Layout) -> tuple[Path | None, Path]:
        return await bundle_on_drive(
            fs, layout, watcher=watcher, loops=loops, media_root=media_root, tmp_path=tmp_path
        )

    return run


async def test_a_bundle_at_the_root_of_the_drive(on_drive: OnDrive) -> None:
    found, mountpoint = await on_drive("ext4", bundle_at)
    assert found == mountpoint


async def test_a_bundle_one_level_down(on_drive: OnDrive) -> None:
    def layout(tree: Path) -> None:
        bundle_at(tree / "lmp-offline-42", content="apps")
        (tree / "notes").mkdir()

    found, mountpoint = await on_drive("ext4", layout)
    assert found == mountpoint / "lmp-offline-42"


async def test_a_bundle_one_level_down_on_fat(on_drive: OnDrive) -> None:
    fuse_helper("vfat")
    found, mountpoint = await on_drive("vfat", lambda tree: bundle_at(tree / "bundle"))
    assert found is not None
    # fusefat lists a name that fits 8.3 in upper case (it ignores the lower-case flag).
    assert found.parent == mountpoint and found.name.lower() == "bundle"


async def test_a_drive_without_a_bundle(on_drive: OnDrive) -> None:
    def layout(tree: Path) -> None:
        (tree / "photos").mkdir()
        (tree / "photos" / "tuf").mkdir()  # not a bundle: nothing beside it
        bundle_at(tree / "a" / "b")  # two levels down: not where a bundle is looked for

    found, _ = await on_drive("ext4", layout)
    assert found is None


async def test_links_off_the_drive_are_not_followed(on_drive: OnDrive, tmp_path: Path) -> None:
    host_bundle = bundle_at(tmp_path / "host-bundle")

    def layout(tree: Path) -> None:
        (tree / "tuf").symlink_to("/etc")
        (tree / "ostree_repo").mkdir()
        (tree / "elsewhere").symlink_to(host_bundle)
        (tree / "deeper").mkdir()
        (tree / "deeper" / "tuf").symlink_to(host_bundle / "tuf")
        (tree / "deeper" / "apps").mkdir()

    found, _ = await on_drive("ext4", layout)
    assert found is None
