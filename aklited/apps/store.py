"""Read and verify Compose Apps from a composectl app store (a bundle's ``apps/`` or the device's).

The walk follows the app's Merkle tree from the digest in the target's URI: app manifest ->
compose bundle -> docker-compose.yml -> each service's image root -> the one manifest for the
device platform -> config and layers. Every node's exact digest and size are checked, and the
format's size limits enforced, before anything is trusted. Large blobs are hashed in chunks in
worker threads.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from aklited.apps import blobs as blobstore
from aklited.apps.blobs import Blob, parse_digest
from aklited.apps.composecli import ComposeCli
from aklited.apps.model import App, AppImage, Service, parse_app_uri, parse_image_ref
from aklited.apps.platforms import Platform
from aklited.apps.tarsafe import COMPOSE_FILE, extract_bundle
from aklited.drivefs import DriveEntryError, MissingEntryError
from aklited.errors import AppsContentMissingError, AppsCorruptError
from aklited.tasks import side_by_side, to_completion

log = structlog.get_logger(__name__)

APP_MANIFEST_MAX_SIZE = 50 * 1024  # composeapp AppManifestMaxSize; reaching it is an error
IMAGE_ROOT_MAX_SIZE = 100 * 1024  # composeapp ImageRootMaxSize
IMAGE_MANIFEST_MAX_SIZE = 4 * 1024 * 1024
SIDE_BLOB_MAX_SIZE = 1024 * 1024  # bundle index, layers-meta: small JSON documents
MAX_URI_SIZE = 4096
CONFIG_HASH_LABEL = "io.compose-spec.config-hash"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
BUNDLE_MEDIA_TYPE = "application/octet-stream"
BUNDLE_INDEX_DIGEST = "org.foundries.app.bundle.index.digest"
BUNDLE_INDEX_SIZE = "org.foundries.app.bundle.index.size"


def app_dir(store_root: Path, name: str, hex_: str) -> Path:
    """``<store>/apps/<name>/<hex>``: one version of an app in a store."""
    return store_root / "apps" / name / hex_


# Apps read side by side (each extracts its compose bundle and runs `docker compose config`).
_APPS_AT_ONCE = 4


class StoreReader:
    """Verifies apps in one store for one device platform."""

    def __init__(
        self,
        store_root: Path,
        *,
        platform: Platform,
        compose: ComposeCli,
        work_dir: Path | None = None,
        quick: bool = False,
    ) -> None:
        """Set up a reader.

        Args:
            store_root: the store root (holds ``apps/`` and ``blobs/sha256/``).
            platform: the device platform images are chosen for.
            compose: how to run ``docker compose config``.
            work_dir: where bundles are unpacked for reading (default: the system temp dir).
            quick: check config and layer blobs by size only (metadata blobs and compose
                bundles are always hashed): for the device's own store, whose blobs were hashed
                when copied in, and for a drive whose blobs are hashed as they are copied in.
        """
        self._root = store_root
        self._files = blobstore.store_files(store_root)
        self._quick = quick
        self._platform = platform
        self._compose = compose
        self._work_dir = work_dir

    @property
    def root(self) -> Path:
        return self._root

    async def read_apps(
        self, target_apps: Mapping[str, str], *, shortlist: tuple[str, ...] | None = None
    ) -> tuple[App, ...]:
        """Verify the target's apps (``name -> uri``), restricted to ``shortlist`` if given.

        Raises:
            AppsError: 8 if an app or blob is missing, 70 if any node fails verification.
        """
        names = (
            sorted(target_apps) if shortlist is None else sorted(set(shortlist) & set(target_apps))
        )
        # Side by side: each app waits mostly on its `docker compose config`.
        turns = asyncio.Semaphore(_APPS_AT_ONCE)

        async def read_one(name: str) -> App:
            async with turns:
                return await self.read_app(name, target_apps[name])

        try:
            # The first failure is the answer; the other reads end before the store closes.
            return tuple(await side_by_side(*[asyncio.ensure_future(read_one(n)) for n in names]))
        finally:
            self._files.close()

    async def read_app(self, name: str, uri: str) -> App:
        """Verify one app from its target URI and describe it.

        Raises:
            AppsError: 8 if the app or one of its blobs is absent from the store, 70 if a node
                does not match its digest or size, breaks a size limit or is malformed.
        """
        what = f"app {name}"
        ref = parse_app_uri(uri, what=what)
        if ref.name != name:
            # The app name is also its store dir, project dir and compose project name.
            raise AppsCorruptError(f"{what}: the target's URI {uri!r} names app {ref.name!r}")
        await asyncio.to_thread(self._check_uri_file, ref.name, ref.hex, uri, what)
        raw = await asyncio.to_thread(
            blobstore.read_small_blob,
            self._files,
            ref.hex,
            what=f"{what} manifest",
            limit=APP_MANIFEST_MAX_SIZE,
        )
        manifest = Blob(hex=ref.hex, size=len(raw), media_type=OCI_MANIFEST)
        bundle, extras = _parse_app_manifest(_json(raw, what=f"{what} manifest"), what=what)
        extras = tuple([b for b in extras if await self._verify_optional(b, what=what)])
        services = await self._read_services(name, bundle, what=what)
        images: dict[str, AppImage] = {}
        for service in services:
            if service.image not in images:
                images[service.image] = await self._read_image(service.image, what=what)
        log.debug("app verified", app=name, uri=uri, images=len(images))
        return App(
            name=name,
            uri=uri,
            manifest=manifest,
            bundle=bundle,
            extras=extras,
            services=services,
            images=tuple(images.values()),
        )

    def _check_uri_file(self, dir_name: str, hex_: str, uri: str, what: str) -> None:
        relative = f"apps/{dir_name}/{hex_}/uri"
        name = self._files.name(relative)
        try:
            content = self._files.read(relative, limit=MAX_URI_SIZE).decode("utf-8")
        except MissingEntryError as e:
            raise AppsContentMissingError(
                f"{what}: {name} is missing: the store lacks this app version"
            ) from e
        except DriveEntryError as e:
            raise blobstore.drive_refusal(e, what) from e
        except UnicodeDecodeError as e:
            raise AppsCorruptError(f"{what}: {name} is not UTF-8: {e}") from e
        if content != uri:
            raise AppsCorruptError(
                f"{what}: {name} names {content.strip()!r}, the target says {uri!r}"
            )

    async def _check_blob(self, blob: Blob, *, what: str) -> None:
        check = blobstore.check_blob_size if self._quick else blobstore.verify_blob_file
        await asyncio.to_thread(check, self._files, blob, what=what)

    async def _verify_optional(self, blob: Blob, *, what: str) -> bool:
        # The bundle index and layers-meta blobs help but are not required: composectl skips
        # them when they are absent. When present they must match.
        try:
            present = await asyncio.to_thread(self._files.exists, f"blobs/sha256/{blob.hex}")
        except DriveEntryError as e:
            raise blobstore.drive_refusal(e, what) from e
        if not present:
            return False
        if blob.size >= SIDE_BLOB_MAX_SIZE:
            raise AppsCorruptError(f"{what}: side blob {blob.hex[:12]} is over its 1 MiB limit")
        await asyncio.to_thread(blobstore.verify_blob_file, self._files, blob, what=what)
        return True

    async def _read_services(self, name: str, bundle: Blob, *, what: str) -> tuple[Service, ...]:
        base = self._work_dir or Path(await asyncio.to_thread(tempfile.gettempdir))
        # Named here and made in a thread, each to its end: a read cancelled at any point
        # (another app failed beside it) still removes what it made.
        tmp = base / f"aklited-app-{secrets.token_hex(8)}"
        try:
            await to_completion(lambda: asyncio.to_thread(tmp.mkdir, mode=0o700))
            project = tmp / "project"

            def extract() -> None:
                # Hashed always, quick or not (what the compose file says decides which
                # images are read): copied off the drive once, hashed as it is copied, and
                # extracted from that verified copy, never from a second read of the drive.
                verified = tmp / "verified"
                blobstore.copy_blob(self._files, verified, bundle, what=f"{what} compose bundle")
                with blobstore.blob_path(verified, bundle.hex).open("rb") as archive:
                    extract_bundle(archive, project, what=f"{what} compose bundle")

            await to_completion(lambda: asyncio.to_thread(extract))
            return await read_compose_services(self._compose, project, project_name=name, what=what)
        finally:
            await to_completion(lambda: asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True))

    async def _read_image(self, image_ref: str, *, what: str) -> AppImage:
        ref = parse_image_ref(image_ref, what=what)
        iwhat = f"{what} image {ref.ref}"
        raw = await asyncio.to_thread(
            blobstore.read_small_blob, self._files, ref.hex, what=iwhat, limit=IMAGE_ROOT_MAX_SIZE
        )
        doc = _json(raw, what=iwhat)
        media_type = doc.get("mediaType")
        root = Blob(hex=ref.hex, size=len(raw), media_type=str(media_type or ""))
        if _is_manifest(doc):
            manifest, manifest_doc = root, doc
        else:
            entry = self._pick_manifest(doc, what=iwhat)
            manifest = _descriptor(entry, what=f"{iwhat} index entry")
            raw_manifest = await asyncio.to_thread(
                blobstore.read_small_blob,
                self._files,
                manifest.hex,
                what=f"{iwhat} manifest",
                limit=IMAGE_MANIFEST_MAX_SIZE,
                size=manifest.size,
            )
            manifest_doc = _json(raw_manifest, what=f"{iwhat} manifest")
            if not _is_manifest(manifest_doc):
                raise AppsCorruptError(
                    f"{iwhat}: manifest {manifest.hex[:12]} is not an image manifest"
                )
        config = _descriptor(manifest_doc.get("config"), what=f"{iwhat} config")
        layers_raw = manifest_doc.get("layers")
        if not isinstance(layers_raw, list) or not layers_raw:
            raise AppsCorruptError(f"{iwhat}: manifest {manifest.hex[:12]} lists no layers")
        layers = tuple(_descriptor(d, what=f"{iwhat} layer") for d in layers_raw)
        await self._check_blob(config, what=f"{iwhat} config")
        for layer in dict.fromkeys(layers):
            await self._check_blob(layer, what=f"{iwhat} layer")
        return AppImage(
            ref=ref.ref,
            locator=ref.locator,
            root=root,
            manifest=manifest,
            config=config,
            layers=layers,
        )

    def _pick_manifest(self, doc: dict[str, Any], *, what: str) -> object:
        manifests = doc.get("manifests")
        media_type = doc.get("mediaType")
        if media_type in INDEX_TYPES:
            if not isinstance(manifests, list):
                raise AppsCorruptError(f"{what}: image index has no manifests list")
            chosen = [
                m
                for m in manifests
                if isinstance(m, dict) and self._platform.matches(m.get("platform"))
            ]
        elif (
            media_type is None
            and doc.get("schemaVersion") == 2
            and isinstance(manifests, list)
            and manifests
        ):
            chosen = list(manifests)  # a skopeo index: written for the device arch only
        elif doc.get("schemaVersion") == 1 or "fsLayers" in doc:
            raise AppsCorruptError(f"{what}: schema 1 image manifests are not supported")
        else:
            raise AppsCorruptError(f"{what}: image root has unknown media type {media_type!r}")
        if len(chosen) != 1:
            raise AppsCorruptError(
                f"{what}: image index has {len(chosen)} manifests for {self._platform},"
                " exactly 1 needed"
            )
        return chosen[0]


async def read_compose_services(
    compose: ComposeCli, project: Path, *, project_name: str, what: str
) -> tuple[Service, ...]:
    """Render a project's compose file with ``docker compose config`` and list its services.

    compose v2 renders any YAML the way ``up`` will read it, without a daemon.

    Raises:
        AppsError: 70 if compose rejects the file or a service has no pinned image.
    """
    args = [
        "-p",
        project_name,
        "-f",
        COMPOSE_FILE,
        "config",
        "--format",
        "json",
        "--no-path-resolution",
    ]
    try:
        done = await compose.run(args, cwd=project, timeout_s=60)
    except (OSError, TimeoutError) as e:
        raise AppsCorruptError(f"{what}: cannot run {compose.name} config: {e}") from e
    if done.returncode != 0:
        raise AppsCorruptError(f"{what}: {COMPOSE_FILE} is invalid: {done.last_error_line()}")
    services = _json(done.stdout.encode(), what=f"{what} {COMPOSE_FILE}").get("services")
    if not isinstance(services, dict) or not services:
        raise AppsCorruptError(f"{what}: {COMPOSE_FILE} defines no services")
    result = []
    for service_name, spec in sorted(services.items()):
        image = spec.get("image") if isinstance(spec, dict) else None
        if not isinstance(image, str) or not image:
            raise AppsCorruptError(f"{what}: service {service_name} has no image")
        parse_image_ref(image, what=f"{what} service {service_name}")
        labels = spec.get("labels")
        config_hash = labels.get(CONFIG_HASH_LABEL) if isinstance(labels, dict) else None
        result.append(
            Service(
                name=str(service_name),
                image=image,
                config_hash=config_hash if isinstance(config_hash, str) else None,
            )
        )
    return tuple(result)


def _parse_app_manifest(doc: dict[str, Any], *, what: str) -> tuple[Blob, tuple[Blob, ...]]:
    if doc.get("mediaType") != OCI_MANIFEST:
        raise AppsCorruptError(
            f"{what}: app manifest media type is {doc.get('mediaType')!r}, not OCI"
        )
    annotations = doc.get("annotations")
    if not isinstance(annotations, dict) or annotations.get("compose-app") != "v1":
        raise AppsCorruptError(f"{what}: app manifest lacks the compose-app=v1 annotation")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict):
        raise AppsCorruptError(f"{what}: app manifest has no compose bundle layer")
    if layers[0].get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise AppsCorruptError(
            f"{what}: compose bundle media type is {layers[0].get('mediaType')!r}"
        )
    bundle = _descriptor(layers[0], what=f"{what} compose bundle")
    extras: list[Blob] = []
    notes = layers[0].get("annotations")
    if isinstance(notes, dict) and BUNDLE_INDEX_DIGEST in notes:
        size = notes.get(BUNDLE_INDEX_SIZE)
        if not isinstance(size, str) or not size.isdigit():
            raise AppsCorruptError(f"{what}: bundle index size annotation {size!r} is not a number")
        extras.append(Blob(hex=parse_digest(notes[BUNDLE_INDEX_DIGEST], what=what), size=int(size)))
    for layer in layers[1:]:
        notes = layer.get("annotations") if isinstance(layer, dict) else None
        if isinstance(notes, dict) and notes.get("layers-meta") == "v1":
            extras.append(_descriptor(layer, what=f"{what} layers-meta"))
    return bundle, tuple(extras)


def _descriptor(value: object, *, what: str) -> Blob:
    if not isinstance(value, dict):
        raise AppsCorruptError(f"{what}: descriptor is not an object")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise AppsCorruptError(f"{what}: descriptor size {size!r} is invalid")
    media_type = value.get("mediaType", "")
    return Blob(
        hex=parse_digest(value.get("digest"), what=what),
        size=size,
        media_type=media_type if isinstance(media_type, str) else "",
    )


def _is_manifest(doc: dict[str, Any]) -> bool:
    media_type = doc.get("mediaType")
    if media_type in MANIFEST_TYPES:
        return True
    # OCI allows a manifest without mediaType; it is recognised by its config and layers.
    return media_type is None and "config" in doc and "layers" in doc and "manifests" not in doc


def _json(raw: bytes, *, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise AppsCorruptError(f"{what}: not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise AppsCorruptError(f"{what}: JSON document is not an object")
    return doc
