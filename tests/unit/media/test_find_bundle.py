"""Bundle discovery on plain directories (no drive needed): where a bundle may be, and
what a hostile drive may put there instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from aklited.daemon.media import AmbiguousBundleError, find_bundle, find_bundles
from aklited.errors import MediaError


def bundle_at(root: Path, *content: str) -> Path:
    (root / "tuf").mkdir(parents=True)
    for name in content or ("ostree_repo",):
        (root / name).mkdir()
    return root


async def test_the_root_itself(tmp_path: Path) -> None:
    drive = bundle_at(tmp_path / "drive", "ostree_repo", "apps")
    bundle_at(drive / "inner")  # the root wins; nothing below is looked at

    assert await find_bundle(drive) == drive


@pytest.mark.parametrize("content", ["ostree_repo", "apps"])
async def test_one_level_down(tmp_path: Path, content: str) -> None:
    drive = tmp_path / "drive"
    bundle = bundle_at(drive / "offline-update", content)
    (drive / "README.txt").parent.mkdir(exist_ok=True)
    (drive / "README.txt").write_text("not a directory")

    assert await find_bundle(drive) == bundle


async def test_nothing_that_is_not_a_bundle(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    (drive / "tuf").mkdir(parents=True)  # metadata alone
    (drive / "only-content" / "apps").mkdir(parents=True)
    bundle_at(drive / "two" / "levels")
    (drive / "file-tuf").mkdir()
    (drive / "file-tuf" / "tuf").write_text("a file, not a directory")
    (drive / "file-tuf" / "apps").mkdir()

    assert await find_bundle(drive) is None


async def test_several_bundles_are_not_guessed_between(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    bundle_at(drive / "a")
    bundle_at(drive / "b", "apps")

    assert await find_bundles(drive) == [drive / "a", drive / "b"]
    with pytest.raises(AmbiguousBundleError, match="2 bundles"):
        await find_bundle(drive)


async def test_links_off_the_drive_are_not_followed(tmp_path: Path) -> None:
    host = bundle_at(tmp_path / "host-bundle")
    drive = tmp_path / "drive"
    drive.mkdir()
    (drive / "tuf").symlink_to("/etc")
    (drive / "ostree_repo").mkdir()
    (drive / "absolute").symlink_to(host)
    (drive / "relative").symlink_to("../host-bundle")
    (drive / "halfway").mkdir()
    (drive / "halfway" / "tuf").symlink_to("../../host-bundle/tuf")
    (drive / "halfway" / "ostree_repo").mkdir()

    assert await find_bundle(drive) is None


async def test_links_inside_a_bundle_are_followed(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    (drive / "bundle" / "data" / "tuf").mkdir(parents=True)
    (drive / "bundle" / "tuf").symlink_to("data/tuf")
    (drive / "bundle" / "apps").mkdir()

    assert await find_bundle(drive) == drive / "bundle"


async def test_a_linked_directory_is_no_bundle_even_on_the_drive(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    bundle_at(drive / ".hidden" / "real")
    (drive / "alias").symlink_to(".hidden/real")

    assert await find_bundle(drive) is None


async def test_a_root_too_large_to_list_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drive = tmp_path / "drive"
    for i in range(5):
        (drive / f"d{i}").mkdir(parents=True)
    monkeypatch.setattr("aklited.daemon.media.MAX_ROOT_ENTRIES", 4)

    with pytest.raises(MediaError, match="more than 4 entries"):
        await find_bundle(drive)


async def test_a_missing_mountpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError):
        await find_bundle(tmp_path / "gone")
