"""The image loader against a fake engine: which failures switch it to tag loads, and how
failures of the Docker client reach the engine (as AppsError leaves, cancellation untouched)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from aklited.apps.adapter import ComposeApps
from aklited.apps.loader import ImageLoader, LoadOutcome, _drop_read
from aklited.apps.model import AppImage
from aklited.errors import AppsRunError
from aklited.outcomes import StatusCode
from tests.unit.apps.test_blobs_localstore import _app

_OK = [b'{"stream":"Loaded image"}\n']


class _Lines:
    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        for line in self._lines:
            yield line


class _Response:
    def __init__(self, lines: list[bytes]) -> None:
        self.content = _Lines(lines)


class _Images:
    def __init__(self) -> None:
        self.present: dict[str, str] = {}  # name or id -> image id
        self.deleted: list[str] = []

    async def inspect(self, name: str) -> dict[str, Any]:
        if name not in self.present:
            raise aiodocker.DockerError(404, f"No such image: {name}")
        return {"Id": self.present[name]}

    async def delete(self, name: str, *, force: bool = False) -> None:
        self.deleted.append(name)
        self.present.pop(name, None)

    async def tag(self, image_id: str, repo: str, *, tag: str) -> None:
        self.present[f"{repo}:{tag}"] = image_id


class FakeDocker:
    """Answers each ``images/load`` with the next outcome: "ok", "refuse" (the engine says
    no in the stream), "http-refuse" (an HTTP 500), "no-connection" (aiodocker's status 900)
    or "drop" (the connection breaks while the engine answers)."""

    def __init__(self, image: AppImage, outcomes: list[str]) -> None:
        self.images = _Images()
        self._image = image
        self._outcomes = outcomes
        self.loads: list[bool] = []  # per load: was it a digest-ref (patched) load?
        self.queried = asyncio.Event()  # a load has reached the engine
        self.answer: asyncio.Event | None = None  # if set: loads wait for it to answer

    async def version(self) -> dict[str, Any]:
        return {"Version": "27.1.0"}

    @contextlib.asynccontextmanager
    async def _query(
        self, path: str, method: str, *, data: AsyncIterator[bytes], **_: Any
    ) -> AsyncIterator[_Response]:
        assert (path, method) == ("images/load", "POST")
        self.queried.set()
        if self.answer is not None:
            await self.answer.wait()
        body = b"".join([chunk async for chunk in data])
        # manifest.json comes first: its JSON follows the tar header (no tarfile here, whose
        # buffered reads blockbuster would count against the loader's stack).
        start = body.index(b'[{"Config"')
        manifest, _ = json.JSONDecoder().raw_decode(body[start:].decode("utf-8", "replace"))
        self.loads.append("LayersRoot" in manifest[0])
        outcome = self._outcomes.pop(0)
        if outcome == "no-connection":
            raise aiodocker.DockerError(
                900, "Cannot connect to Docker Engine via unix:///run/docker.sock"
            )
        if outcome == "http-refuse":
            raise aiodocker.DockerError(500, "invalid reference format")
        if outcome == "drop":
            raise aiohttp.ServerDisconnectedError()
        if outcome == "refuse":
            yield _Response([b'{"errorDetail":{"message":"unknown LayersRoot"}}\n'])
            return
        for tag in self._image.tags:
            self.images.present[tag] = self._image.image_id
        self.images.present[self._image.image_id] = self._image.image_id
        yield _Response(_OK)


def _loader(tmp_path: Path, outcomes: list[str]) -> tuple[ImageLoader, FakeDocker, AppImage]:
    image = _app(tmp_path).images[0]
    docker = FakeDocker(image, outcomes)
    return ImageLoader(docker, store_root=tmp_path), docker, image  # type: ignore[arg-type]


@pytest.mark.parametrize("failure", ["no-connection", "drop"])
async def test_connection_failure_keeps_digest_loads(tmp_path: Path, failure: str) -> None:
    loader, docker, image = _loader(tmp_path, [failure, "ok"])
    with pytest.raises(AppsRunError) as err:
        await loader.load([image], what="app a")
    assert err.value.code == StatusCode.IMAGE_LOAD_FAILED
    assert docker.loads == [True]  # no tag load was tried on a connection that failed
    assert loader.engine_is_patched is None
    await loader.load([image], what="app a")
    assert docker.loads == [True, True]
    assert loader.engine_is_patched is True


async def _second_load_while_the_first_streams(
    loader: ImageLoader, docker: FakeDocker, image: AppImage
) -> tuple[asyncio.Task[LoadOutcome], asyncio.Task[LoadOutcome]]:
    """Two apps' loads of one image: the second begins while the engine holds the first's
    answer (until ``docker.answer`` is set)."""
    docker.answer = asyncio.Event()
    first = asyncio.create_task(loader.load([image], what="app a"))
    await docker.queried.wait()  # the first load is streaming the image
    return first, asyncio.create_task(loader.load([image], what="app b"))


async def test_a_load_of_an_image_another_load_streams_waits_and_finds_it(
    tmp_path: Path,
) -> None:
    # Two apps that share an image, loaded side by side: it is streamed once.
    loader, docker, image = _loader(tmp_path, ["ok", "ok"])
    first, second = await _second_load_while_the_first_streams(loader, docker, image)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not second.done() and docker.loads == []

    docker.answer.set()

    assert (await first).loaded == (image.ref,)
    assert (await second).present == (image.ref,)
    assert docker.loads == [True]


async def test_an_image_whose_load_failed_beside_is_loaded_by_the_app_that_waited(
    tmp_path: Path,
) -> None:
    loader, docker, image = _loader(tmp_path, ["no-connection", "ok"])
    first, second = await _second_load_while_the_first_streams(loader, docker, image)
    await asyncio.sleep(0)

    docker.answer.set()

    with pytest.raises(AppsRunError):
        await first
    assert (await second).loaded == (image.ref,)
    assert docker.loads == [True, True]


@pytest.mark.parametrize("refusal", ["refuse", "http-refuse"])
async def test_engine_refusing_a_digest_load_switches_to_tags(tmp_path: Path, refusal: str) -> None:
    loader, docker, image = _loader(tmp_path, [refusal, "ok", "ok"])
    outcome = await loader.load([image], what="app a")
    assert outcome.loaded == (image.ref,)
    assert docker.loads == [True, False]
    assert loader.engine_is_patched is False
    docker.images.present.clear()
    await loader.load([image], what="app a")
    assert docker.loads == [True, False, False]  # for good


async def test_tag_load_refused_is_an_image_load_failure(tmp_path: Path) -> None:
    loader, docker, image = _loader(tmp_path, ["refuse", "refuse"])
    with pytest.raises(AppsRunError, match="Docker refused the images") as err:
        await loader.load([image], what="app a")
    assert type(err.value) is AppsRunError  # the private refusal type never escapes
    assert docker.loads == [True, False]


async def test_adapter_wraps_a_client_failure(tmp_path: Path) -> None:
    app = _app(tmp_path)

    class Unreachable(FakeDocker):
        async def version(self) -> dict[str, Any]:
            raise aiohttp.ClientConnectionError("connection reset")

    apps = ComposeApps(store_root=tmp_path, compose_root=tmp_path / "compose")
    apps._docker = Unreachable(app.images[0], [])  # type: ignore[assignment]
    with pytest.raises(AppsRunError, match=r"^loading app images: Docker connection failed") as err:
        await apps.load([app])
    assert isinstance(err.value.__cause__, aiohttp.ClientConnectionError)


async def test_adapter_tagging_failure_names_the_image(tmp_path: Path) -> None:
    app = _app(tmp_path)
    docker = FakeDocker(app.images[0], [])
    docker.images.present[app.images[0].image_id] = app.images[0].image_id

    async def refuse(image_id: str, repo: str, *, tag: str) -> None:
        raise aiodocker.DockerError(500, "tag refused")

    docker.images.tag = refuse  # type: ignore[method-assign]
    loader = ImageLoader(docker, store_root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(AppsRunError, match=r"app a: tagging image .* tag refused"):
        await loader.load(app.images, what="app a")


async def test_dropping_a_read_ahead_lets_cancellation_through() -> None:
    gate = asyncio.Event()

    async def slow_read() -> bytes:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await gate.wait()  # like a thread still finishing its read
            raise
        return b""

    pending = asyncio.ensure_future(slow_read())
    await asyncio.sleep(0)
    dropping = asyncio.create_task(_drop_read(pending))
    await asyncio.sleep(0.01)
    assert not dropping.done()
    dropping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropping
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_dropping_a_failed_read_ahead_is_quiet() -> None:
    async def failing_read() -> bytes:
        raise OSError(5, "Input/output error")

    pending = asyncio.ensure_future(failing_read())
    await asyncio.sleep(0)
    await _drop_read(pending)  # the stream is over either way: nothing to report
    assert pending.done()
