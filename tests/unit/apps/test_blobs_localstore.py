from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from aklited.apps.blobs import (
    Blob,
    blob_path,
    copy_blob,
    read_small_blob,
    store_files,
    verify_blob_file,
)
from aklited.apps.loader import TarStream
from aklited.apps.localstore import LocalStore
from aklited.apps.model import App, AppImage, Service
from aklited.errors import AppsError
from aklited.outcomes import StatusCode


def _put(store: Path, data: bytes, media_type: str = "") -> Blob:
    hex_ = hashlib.sha256(data).hexdigest()
    path = blob_path(store, hex_)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Blob(hex_, len(data), media_type)


def _app(store: Path, name: str = "app1", layer: bytes = b"L" * 3000) -> App:
    layer_blob = _put(store, layer)
    config = _put(store, b'{"rootfs":{}}')
    manifest = _put(store, b'{"m":1}')
    image = AppImage(
        ref=f"h/f/img@sha256:{manifest.hex}",
        locator="h/f/img",
        root=manifest,
        manifest=manifest,
        config=config,
        layers=(layer_blob,),
    )
    return App(
        name=name,
        uri=f"h/f/{name}@sha256:{'0' * 64}",
        manifest=_put(store, name.encode()),
        bundle=_put(store, b"bundle" + name.encode()),
        extras=(),
        services=(Service("web", image.ref, None),),
        images=(image,),
    )


def test_small_blob_limits_are_exclusive(tmp_path: Path) -> None:
    blob = _put(tmp_path, b"x" * 100)
    assert read_small_blob(store_files(tmp_path), blob.hex, what="m", limit=101) == b"x" * 100
    with pytest.raises(AppsError, match="over its limit") as err:
        read_small_blob(store_files(tmp_path), blob.hex, what="m", limit=100)
    assert err.value.code == StatusCode.VERIFICATION_FAILED
    with pytest.raises(AppsError, match="size differs"):
        read_small_blob(store_files(tmp_path), blob.hex, what="m", limit=1000, size=99)


def test_missing_blob_is_missing_content(tmp_path: Path) -> None:
    with pytest.raises(AppsError) as err:
        verify_blob_file(store_files(tmp_path), Blob("0" * 64, 1), what="layer")
    assert err.value.code == StatusCode.NO_TARGET_CONTENT


@pytest.mark.parametrize("change", ["flip", "append", "truncate"])
def test_copy_refuses_a_changed_blob_and_leaves_nothing(tmp_path: Path, change: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    blob = _put(src, b"payload" * 1000)
    path = blob_path(src, blob.hex)
    data = bytearray(path.read_bytes())
    if change == "flip":
        data[10] ^= 1
    elif change == "append":
        data += b"!"
    else:
        del data[-1]
    path.write_bytes(bytes(data))
    with pytest.raises(AppsError) as err:
        copy_blob(store_files(src), dst, blob, what="app a layer")
    assert err.value.code == StatusCode.VERIFICATION_FAILED
    assert err.value.message.startswith("app a layer: blob ")
    assert list((dst / "blobs" / "sha256").iterdir()) == []


async def test_local_store_copies_then_writes_uri_and_prunes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    app1, app2 = _app(src, "app1"), _app(src, "app2", layer=b"M" * 10)
    store = LocalStore(tmp_path / "local", space_reserve=0)
    plan = await store.copy_in(src, [app1, app2])
    assert {b.hex for b in plan.missing} == {b.hex for a in (app1, app2) for b in a.blobs()}
    for blob in plan.missing:
        assert await asyncio.to_thread(store.has_blob, blob)
    uri = tmp_path / "local" / "apps" / "app1" / app1.hex / "uri"
    assert uri.read_text() == app1.uri
    index = next((uri.parent / "images").glob("**/index.json"))
    assert json.loads(index.read_text())["manifests"][0]["digest"] == app1.images[0].manifest.digest
    assert (await store.plan([app1, app2])).missing == ()
    stored = await store.list_apps()
    assert {s.name for s in stored} == {"app1", "app2"}
    tags = await store.image_tags(next(s for s in stored if s.name == "app1"))
    assert tags == app1.images[0].tags
    apps_removed, blobs_removed = await store.prune([app2])
    assert apps_removed == 1
    assert blobs_removed == len({b.hex for b in app1.blobs()} - {b.hex for b in app2.blobs()})
    assert not uri.parent.exists()
    assert all([await asyncio.to_thread(store.has_blob, b) for b in app2.blobs()])


def test_local_store_tells_each_app_once_it_is_in_the_store(tmp_path: Path) -> None:
    # Not an async test: the callback looks at the store on the loop, at the moment it is
    # told (the store's own code would not be allowed to).
    src = tmp_path / "src"
    app1, app2 = _app(src, "app1"), _app(src, "app2", layer=b"M" * 10)
    app3 = _app(src, "app3", layer=b"N" * 20)
    store = LocalStore(tmp_path / "local", space_reserve=0)
    asyncio.run(store.copy_in(src, [app3]))  # already in the store before this copy
    seen: list[tuple[str, bool, bool, bool]] = []

    def copied(app: App) -> None:
        uri = tmp_path / "local" / "apps" / app.name / app.hex / "uri"
        seen.append(
            (
                app.name,
                all(store.has_blob(b) for b in app.blobs()),
                uri.is_file(),
                store.has_blob(app2.images[0].layers[0]),  # the last app's own layer
            )
        )

    asyncio.run(store.copy_in(src, [app3, app1, app2], on_app_copied=copied))

    assert seen == [
        ("app3", True, True, False),  # told before anything is copied
        ("app1", True, True, False),  # told before app2's layer is copied
        ("app2", True, True, True),
    ]


async def test_local_store_refuses_when_blobs_do_not_fit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    app = _app(src)
    store = LocalStore(tmp_path / "local", space_reserve=1 << 60)
    with pytest.raises(AppsError) as err:
        await store.copy_in(src, [app])
    assert err.value.code == StatusCode.NO_SPACE
    assert "bytes free" in err.value.message
    assert list((tmp_path / "local" / "blobs" / "sha256").iterdir()) == []
    assert not (tmp_path / "local" / "apps").exists()


async def test_tar_stream_is_a_docker_save_archive(tmp_path: Path) -> None:
    app = _app(tmp_path)
    image = app.images[0]
    stream = TarStream(tmp_path, [image, image], patched=False, what="app a")
    data = b"".join([chunk async for chunk in stream.chunks()])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names == ["manifest.json", image.config.hex, image.layers[0].hex]
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = tar.extractfile(image.layers[0].hex)
        assert layer is not None and layer.read() == b"L" * 3000
    assert manifest[0] == {
        "Config": image.config.hex,
        "RepoTags": list(image.tags),
        "Layers": [image.layers[0].hex],
    }


async def test_patched_tar_stream_names_the_store_and_carries_no_blobs(tmp_path: Path) -> None:
    image = _app(tmp_path).images[0]
    stream = TarStream(tmp_path, [image], patched=True, what="app a")
    item = json.loads(stream.manifest())[0]
    assert item["LayersRoot"] == str(tmp_path / "blobs" / "sha256")
    assert f"h/f/img@sha256:{image.root.hex}" in item["RepoTags"]
    assert stream.blobs() == ()


async def test_tar_stream_stops_at_a_changed_blob(tmp_path: Path) -> None:
    image = _app(tmp_path).images[0]
    path = blob_path(tmp_path, image.layers[0].hex)
    path.write_bytes(b"X" + path.read_bytes()[1:])
    stream = TarStream(tmp_path, [image], patched=False, what="app a")
    with pytest.raises(AppsError, match="changed since it was verified"):
        async for _ in stream.chunks():
            pass
    assert stream.failure is not None
    assert stream.failure.code == StatusCode.VERIFICATION_FAILED
