"""The device store's image indexes (``apps/<app>/<hex>/images/**/index.json``): what a prune
learns from a damaged one, and that an unreadable one is an error, not an empty index."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aklited.apps.localstore import LocalStore, StoredApp
from aklited.apps.model import App
from aklited.errors import AppsCopyError
from aklited.outcomes import StatusCode
from tests.unit.apps.test_blobs_localstore import _app, _put


def _multi_platform_app(store: Path) -> App:
    """An app whose image root is an index, so its manifest tag differs from its root tag."""
    app = _app(store)
    image = replace(app.images[0], root=_put(store, b'{"index":1}'))
    return replace(app, images=(image,))


async def _stored(tmp_path: Path) -> tuple[LocalStore, App, StoredApp, Path]:
    app = _multi_platform_app(tmp_path / "src")
    assert len(app.images[0].tags) == 2
    store = LocalStore(tmp_path / "local", space_reserve=0)
    await store.copy_in(tmp_path / "src", [app])
    (stored,) = await store.list_apps()
    index = next(
        (tmp_path / "local" / "apps" / app.name / app.hex / "images").glob("**/index.json")
    )
    return store, app, stored, index


async def test_intact_index_gives_every_tag(tmp_path: Path) -> None:
    store, app, stored, _ = await _stored(tmp_path)
    assert await store.image_tags(stored) == app.images[0].tags


@pytest.mark.parametrize(
    "content",
    [
        b"not json {",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"manifests": []}',
        b'{"manifests": [{"size": 1}]}',
        b'{"manifests": [{"digest": 7}]}',
    ],
)
async def test_damaged_index_gives_the_root_tag_and_is_logged(
    tmp_path: Path, content: bytes
) -> None:
    store, app, stored, index = await _stored(tmp_path)
    index.write_bytes(content)
    with capture_logs() as logs:
        tags = await store.image_tags(stored)
    assert tags == (app.images[0].local_tag,)
    assert [e for e in logs if e["event"] == "damaged image index ignored"]


async def test_unreadable_index_is_an_apps_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, stored, index = await _stored(tmp_path)
    read_bytes = Path.read_bytes

    def failing(path: Path) -> bytes:
        if path == index:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", failing)
    with pytest.raises(AppsCopyError, match="Input/output error") as err:
        await store.image_tags(stored)
    assert err.value.code == StatusCode.DOWNLOAD_FAILED
    assert str(index) in err.value.message


async def test_index_gone_since_the_scan_gives_the_root_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, app, stored, index = await _stored(tmp_path)
    read_bytes = Path.read_bytes

    def vanished(path: Path) -> bytes:
        if path == index:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", vanished)
    assert await store.image_tags(stored) == (app.images[0].local_tag,)
