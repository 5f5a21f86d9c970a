"""Load verified images into Docker: `POST /images/load` with a docker-save tar made from blobs.

The tar is built on the fly from the store (``manifest.json`` first, then each unique blob named
by its hex, gzip layers as stored), so nothing is unpacked to disk and no layer is held in memory.
Unless the caller has just verified the blobs (they were hashed as they were copied into the
store, a moment before), every blob is hashed again as it streams: a blob that changed since it
was verified aborts the upload, and dockerd discards a truncated load. Either way a blob of the
wrong size aborts it, and Docker checks every layer against the image's config itself.

An LmP-patched dockerd also accepts ``LayersRoot`` (read blobs from the store directly) and digest
references in ``RepoTags``; that mode is tried first, and a vanilla engine's refusal switches this
loader to tag-only loads for good, as composectl does. Only an answer from the engine counts as a
refusal: a connection that fails or drops leaves the mode as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tarfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiodocker
import aiohttp
import structlog

from aklited.apps import blobs as blobstore
from aklited.apps.blobs import Blob
from aklited.apps.model import AppImage
from aklited.errors import AppsCorruptError, AppsError, AppsRunError

log = structlog.get_logger(__name__)


class _DigestLoadRefusedError(AppsRunError):
    """The engine answered a digest-ref load with an error: a vanilla dockerd (80)."""


STREAM_CHUNK = 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BLOCK = 512


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    """What a load did: images it sent to the engine and images already there."""

    loaded: tuple[str, ...]
    present: tuple[str, ...]


class ImageLoader:
    """Loads images from one store into one engine."""

    def __init__(self, docker: aiodocker.Docker, *, store_root: Path) -> None:
        self._docker = docker
        self._root = store_root
        self._patched: bool | None = None  # unknown until the first load
        # The images a load under way owns, by config digest: a load (of another app) that
        # shares one waits for it to end, then finds the image present or loads it itself,
        # and a load that fails removes only what it owned.
        self._owned: dict[str, asyncio.Future[None]] = {}

    @property
    def engine_is_patched(self) -> bool | None:
        """Whether the engine took a digest-ref load (None: no load tried yet)."""
        return self._patched

    async def load(
        self, images: Sequence[AppImage], *, what: str, rehash: bool = True
    ) -> LoadOutcome:
        """Load ``images`` that the engine lacks, tag them and check their ids.

        On failure, images this call created are removed again, so a bad app leaves nothing.

        Raises:
            AppsError: 80 if the engine refuses an image or a layer format it cannot read,
                70 if a blob no longer matches its digest while streaming.
        """
        unique = list({image.config.hex: image for image in images}.values())
        while busy := [self._owned[i.config.hex] for i in unique if i.config.hex in self._owned]:
            await asyncio.wait(busy)
        # Taken with no await since the loop above found them free.
        owned = {image.config.hex: asyncio.get_running_loop().create_future() for image in unique}
        self._owned.update(owned)
        try:
            return await self._load_owned(unique, what=what, rehash=rehash)
        finally:
            for hex_, done in owned.items():
                del self._owned[hex_]
                done.set_result(None)

    async def _load_owned(
        self, unique: Sequence[AppImage], *, what: str, rehash: bool
    ) -> LoadOutcome:
        present = [image for image in unique if await self._has_image(image)]
        missing = [image for image in unique if image not in present]
        for image in present:
            await self._ensure_tags(image, what=what)
        if missing:
            await self._check_layer_formats(missing, what=what)
            try:
                await self._load_missing(missing, what=what, rehash=rehash)
                for image in missing:
                    await self._confirm(image, what=what)
            except BaseException as e:
                try:
                    await self.remove_images(missing)
                except Exception as cleanup:
                    log.warning("removing half-loaded images failed", error=str(cleanup))
                    e.add_note(f"removing the half-loaded images failed too: {cleanup}")
                raise
        for image in missing:
            log.info("image loaded", image=image.ref, id=image.image_id, tags=list(image.tags))
        return LoadOutcome(
            loaded=tuple(i.ref for i in missing), present=tuple(i.ref for i in present)
        )

    async def remove_images(self, images: Sequence[AppImage]) -> None:
        """Force-remove images by id (all their tags); absent ones are skipped."""
        for image in images:
            try:
                await self._docker.images.delete(image.image_id, force=True)
            except aiodocker.DockerError as e:
                if e.status != 404:
                    log.warning("image not removed", image=image.ref, reason=e.message)

    async def _has_image(self, image: AppImage) -> bool:
        try:
            await self._docker.images.inspect(image.image_id)
        except aiodocker.DockerError as e:
            if e.status == 404:
                return False
            raise _engine_error(e, what=f"image {image.ref}") from e
        return True

    async def _ensure_tags(self, image: AppImage, *, what: str) -> None:
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            try:
                await self._docker.images.tag(image.image_id, repo, tag=name)
            except aiodocker.DockerError as e:
                raise _engine_error(e, what=f"{what}: tagging image {image.ref} as {tag}") from e

    async def _check_layer_formats(self, images: Sequence[AppImage], *, what: str) -> None:
        try:
            version = await self._docker.version()
        except aiodocker.DockerError as e:
            raise _engine_error(e, what=f"{what}: asking Docker its version") from e
        major = str(version.get("Version", "0")).split(".", 1)[0]
        if major.isdigit() and int(major) >= 23:
            return  # zstd layers are readable from Docker 23 on
        for image in images:
            for layer in dict.fromkeys(image.layers):
                if "zstd" in layer.media_type or await self._is_zstd(layer, what=what):
                    raise AppsRunError(
                        f"{what}: image {image.ref} layer {layer.hex[:12]} is zstd-compressed,"
                        f" which Docker {version.get('Version')} cannot load"
                    )

    async def _is_zstd(self, layer: Blob, *, what: str) -> bool:
        def read_magic() -> bytes:
            with blobstore.blob_path(self._root, layer.hex).open("rb") as f:
                return f.read(len(ZSTD_MAGIC))

        try:
            return await asyncio.to_thread(read_magic) == ZSTD_MAGIC
        except OSError as e:
            raise AppsRunError(
                f"{what}: blob {layer.hex[:12]} cannot be read: {e.strerror or e}"
            ) from e

    async def _load_missing(self, images: Sequence[AppImage], *, what: str, rehash: bool) -> None:
        if self._patched is not False:
            try:
                await self._post_load(images, patched=True, what=what, rehash=rehash)
            except _DigestLoadRefusedError as e:
                log.info("engine refused a digest-ref load; loading by tags", reason=e.message)
            else:
                self._patched = True
                return
        await self._post_load(images, patched=False, what=what, rehash=rehash)
        self._patched = False

    async def _post_load(
        self, images: Sequence[AppImage], *, patched: bool, what: str, rehash: bool
    ) -> None:
        """POST one load; an engine's answer refusing a digest-ref load is a
        :class:`_DigestLoadRefusedError`, any other failure (a connection that drops) is not."""
        body = TarStream(self._root, images, patched=patched, what=what, rehash=rehash)
        refused = _DigestLoadRefusedError if patched else AppsRunError
        messages: list[str] = []
        try:
            async with self._docker._query(
                "images/load",
                "POST",
                params={"quiet": "0"},
                data=body.chunks(),
                headers={"Content-Type": "application/x-tar"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                chunked=True,
            ) as response:
                error = await _scan_load_stream(response, messages)
        except aiodocker.DockerError as e:
            # aiodocker reports a connection failure as status 900: no answer, no refusal.
            answered = 400 <= e.status < 600
            raise body.failure or _engine_error(
                e, what=what, error=refused if answered else AppsRunError
            ) from e
        except (aiohttp.ClientError, OSError) as e:
            raise body.failure or AppsRunError(f"{what}: image load was cut off: {e}") from e
        if body.failure is not None:
            raise body.failure
        if error is not None:
            raise refused(f"{what}: Docker refused the images: {error}")
        log.debug("load stream", patched=patched, messages=messages)

    async def _confirm(self, image: AppImage, *, what: str) -> None:
        for tag in image.tags:
            try:
                info = await self._docker.images.inspect(tag)
            except aiodocker.DockerError as e:
                raise AppsRunError(
                    f"{what}: image {tag} is missing after the load: {e.message}"
                ) from e
            if info.get("Id") != image.image_id:
                raise AppsRunError(
                    f"{what}: image {tag} has id {info.get('Id')}, expected {image.image_id}"
                )


async def _scan_load_stream(response: aiohttp.ClientResponse, messages: list[str]) -> str | None:
    # dockerd answers 200 and reports failures inside the JSON-lines stream.
    error: str | None = None
    async for line in response.content:
        text = line.strip()
        if not text:
            continue
        try:
            item: Any = json.loads(text)
        except ValueError:
            messages.append(text.decode(errors="replace"))
            continue
        if not isinstance(item, dict):
            continue
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail")
            message = detail.get("message") if isinstance(detail, dict) else None
            error = str(message or item.get("error"))
        elif isinstance(item.get("stream"), str):
            messages.append(item["stream"].strip())
    return error


def _engine_error(
    e: aiodocker.DockerError, *, what: str, error: type[AppsRunError] = AppsRunError
) -> AppsRunError:
    return error(f"{what}: Docker engine error {e.status}: {e.message}")


class TarStream:
    """A docker-save tar of some images, produced chunk by chunk from the store's blobs."""

    def __init__(
        self,
        store_root: Path,
        images: Sequence[AppImage],
        *,
        patched: bool,
        what: str,
        rehash: bool = True,
    ) -> None:
        self._root = store_root
        self._images = images
        self._patched = patched
        self._what = what
        self._rehash = rehash
        self.failure: AppsError | None = None

    def manifest(self) -> bytes:
        """The tar's ``manifest.json``: one item per image, blobs named by bare hex."""
        items = []
        for image in self._images:
            item: dict[str, object] = {
                "Config": image.config.hex,
                "RepoTags": [*image.tags, *image.digest_refs]
                if self._patched
                else list(image.tags),
                "Layers": [layer.hex for layer in image.layers],
            }
            if self._patched:
                item["LayersRoot"] = str(blobstore.blobs_dir(self._root))
            items.append(item)
        return json.dumps(items).encode()

    def blobs(self) -> tuple[Blob, ...]:
        """The blobs the tar carries: none for a patched engine, which reads the store itself."""
        if self._patched:
            return ()
        unique: dict[str, Blob] = {}
        for image in self._images:
            for blob in (image.config, *image.layers):
                unique.setdefault(blob.hex, blob)
        return tuple(unique.values())

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the tar: ``manifest.json``, each blob, then the end-of-archive blocks."""
        manifest = self.manifest()
        yield _header("manifest.json", len(manifest)) + manifest + _padding(len(manifest))
        for blob in self.blobs():
            yield _header(blob.hex, blob.size)
            path = blobstore.blob_path(self._root, blob.hex)
            try:
                f = await asyncio.to_thread(path.open, "rb")
            except OSError as e:
                self.failure = AppsRunError(
                    f"{self._what}: blob {blob.hex[:12]} cannot be read: {e.strerror}"
                )
                raise self.failure from e
            digest = hashlib.sha256() if self._rehash else None
            sent = 0
            # Read (and hash) the next chunk while the current one is on its way to dockerd.
            pending = asyncio.ensure_future(asyncio.to_thread(_read_chunk, f, digest))
            try:
                while chunk := await pending:
                    sent += len(chunk)
                    if sent > blob.size:
                        break
                    pending = asyncio.ensure_future(asyncio.to_thread(_read_chunk, f, digest))
                    yield chunk
            finally:
                try:
                    await _drop_read(pending)
                finally:
                    await asyncio.to_thread(f.close)
            if sent != blob.size or (digest is not None and digest.hexdigest() != blob.hex):
                self.failure = AppsCorruptError(
                    f"{self._what}: blob {blob.hex[:12]} changed since it was verified"
                )
                raise self.failure
            yield _padding(blob.size)
        yield b"\0" * (2 * _BLOCK)


async def _drop_read(pending: asyncio.Future[bytes]) -> None:
    """Stop waiting for a read ahead nobody wants any more.

    Its own end (cancelled, or an error: the stream is over either way) is not reported,
    but a cancellation of the task running the stream propagates.
    """
    pending.cancel()
    await asyncio.wait([pending])
    if not pending.cancelled():
        pending.exception()  # mark it retrieved: asyncio would log it as never retrieved


def _read_chunk(f: BinaryIO, digest: Any | None) -> bytes:
    chunk = f.read(STREAM_CHUNK)
    if digest is not None:
        digest.update(chunk)
    return chunk


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


async def write_docker_save_tar(
    store_root: Path, images: Sequence[AppImage], dest: Path, *, what: str = "images"
) -> None:
    """Write the same tar a load streams to a file (``docker load -i`` comparisons)."""
    stream = TarStream(store_root, images, patched=False, what=what)
    f = await asyncio.to_thread(dest.open, "wb")
    try:
        async for chunk in stream.chunks():
            await asyncio.to_thread(f.write, chunk)
    finally:
        await asyncio.to_thread(f.close)
