"""Build a composectl-layout app store from rootfs tarballs, without a registry.

Used by the tests, the demo and ``aklite-bundle`` users who publish their own apps: each image is
made of layers (gzip-compressed tarballs), a config, a Docker schema2 manifest and optionally an
index that also names other platforms (whose blobs are absent, as in a real bundle). Apps get a
compose bundle (.tgz), an app manifest and the ``apps/<app>/<hex>/uri`` file.

Blocking; run it in a worker thread from async code. Blobs are streamed, never held whole.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aklited.apps.blobs import CHUNK, blob_path, blobs_dir
from aklited.apps.platforms import Platform
from aklited.apps.store import (
    BUNDLE_INDEX_DIGEST,
    BUNDLE_INDEX_SIZE,
    BUNDLE_MEDIA_TYPE,
    CONFIG_HASH_LABEL,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    app_dir,
)
from aklited.apps.tarsafe import COMPOSE_FILE

LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
EMPTY_CONFIG = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}
BUSYBOX_APPLETS = ("sh", "echo", "sleep", "cat", "true", "false", "ls")


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI descriptor of a blob written to the store."""

    media_type: str
    hex: str
    size: int

    @property
    def digest(self) -> str:
        return f"sha256:{self.hex}"

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class BuiltLayer:
    """A layer blob and the sha256 of its uncompressed tar (the config's diff_id)."""

    descriptor: Descriptor
    diff_id: str


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image in the store; ``ref`` is what a compose file pins."""

    locator: str
    root: Descriptor
    manifest: Descriptor
    config: Descriptor
    layers: tuple[BuiltLayer, ...]

    @property
    def ref(self) -> str:
        return f"{self.locator}@{self.root.digest}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A compose service: the image it runs and any other compose keys (command, init, ...)."""

    image: BuiltImage | str
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BuiltApp:
    """An app in the store: what a TUF target's ``docker_compose_apps.<name>.uri`` names."""

    name: str
    uri: str
    manifest: Descriptor
    bundle: Descriptor
    compose_yaml: bytes


class AppStoreBuilder:
    """Writes blobs and apps into a composectl store root (``apps/`` + ``blobs/sha256/``)."""

    def __init__(self, root: Path, *, factory: str = "myfactory", host: str = "hub.foundries.io"):
        self.root = root
        self.factory = factory
        self.host = host
        blobs_dir(root).mkdir(parents=True, exist_ok=True)

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        """Store ``data`` as a blob named by its sha256."""
        hex_ = hashlib.sha256(data).hexdigest()
        path = blob_path(self.root, hex_)
        if not path.exists():
            tmp = path.with_name(f".tmp-{hex_}")
            tmp.write_bytes(data)
            tmp.rename(path)
        return Descriptor(media_type=media_type, hex=hex_, size=len(data))

    def put_json(self, doc: object, media_type: str) -> Descriptor:
        """Store a JSON document (indented as composeapp writes manifests)."""
        return self.put_bytes(json.dumps(doc, indent=3).encode(), media_type)

    def put_file(self, path: Path, media_type: str) -> Descriptor:
        """Copy a file of any size into the store as a blob, hashing it while copying."""
        digest = hashlib.sha256()
        tmp = blobs_dir(self.root) / f".tmp-put-{os.getpid()}-{path.name}"
        size = 0
        with path.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                fout.write(chunk)
                size += len(chunk)
        hex_ = digest.hexdigest()
        tmp.rename(blob_path(self.root, hex_))
        return Descriptor(media_type=media_type, hex=hex_, size=size)

    def layer_from_tar(self, tar_path: Path, *, compresslevel: int = 6) -> BuiltLayer:
        """gzip a layer tarball into the store; the diff_id is the sha256 of the plain tar."""
        diff = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=blobs_dir(self.root), prefix=".tmp-gz-") as tmp:
            with (
                tar_path.open("rb") as fin,
                gzip.GzipFile(
                    filename="", fileobj=tmp, mode="wb", compresslevel=compresslevel, mtime=0
                ) as gz,
            ):
                while chunk := fin.read(CHUNK):
                    diff.update(chunk)
                    gz.write(chunk)
            tmp.flush()
            descriptor = self.put_file(Path(tmp.name), LAYER_GZIP)
        return BuiltLayer(descriptor=descriptor, diff_id=diff.hexdigest())

    def layer_from_blob(self, blob: Path, *, diff_id: str, media_type: str) -> BuiltLayer:
        """Store an already-compressed layer (e.g. zstd) with the diff_id of its plain tar."""
        return BuiltLayer(descriptor=self.put_file(blob, media_type), diff_id=diff_id)

    def image(
        self,
        name: str,
        layers: Sequence[BuiltLayer],
        *,
        platform: Platform | None = None,
        index_platforms: Sequence[Platform] | None = None,
        cmd: Sequence[str] = ("/bin/sh",),
    ) -> BuiltImage:
        """Write config and manifest, and an index unless ``index_platforms`` is ``()``.

        Args:
            name: image path under the factory, e.g. ``busybox``.
            layers: the image's layers, bottom first.
            platform: the platform the config declares (default: this machine's).
            index_platforms: the index entries; entries equal to ``platform`` point at the real
                manifest, others at absent blobs. Default: ``platform`` and linux/arm64 (or
                linux/amd64 on an arm64 machine). ``()`` writes no index: the root is the manifest.
            cmd: the config's ``Cmd``.
        """
        platform = platform or Platform.host()
        config_doc = {
            "architecture": platform.architecture,
            "os": platform.os,
            **({"variant": platform.variant} if platform.variant else {}),
            "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{la.diff_id}" for la in layers]},
            "history": [{"created_by": "aklited app store builder"} for _ in layers],
        }
        config = self.put_bytes(json.dumps(config_doc).encode(), DOCKER_CONFIG)
        manifest = self.put_json(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": config.to_json(),
                "layers": [la.descriptor.to_json() for la in layers],
            },
            DOCKER_MANIFEST,
        )
        locator = f"{self.host}/{self.factory}/{name}"
        if index_platforms is None:
            other = "amd64" if platform.architecture == "arm64" else "arm64"
            index_platforms = (platform, Platform.of("linux", other))
        if not index_platforms:
            return BuiltImage(locator, manifest, manifest, config, tuple(layers))
        entries = []
        for entry_platform in index_platforms:
            spec = {"architecture": entry_platform.architecture, "os": entry_platform.os}
            if entry_platform.variant:
                spec["variant"] = entry_platform.variant
            target = manifest
            if entry_platform != platform:
                # Another arch's manifest: named but absent, as in bundles made for one arch.
                fake = hashlib.sha256(f"{name}/{entry_platform}".encode()).hexdigest()
                target = Descriptor(DOCKER_MANIFEST, fake, 528)
            entries.append({**target.to_json(), "platform": spec})
        root = self.put_json(
            {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries}, DOCKER_LIST
        )
        return BuiltImage(locator, root, manifest, config, tuple(layers))

    def bundle(self, members: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> Descriptor:
        """Store a compose bundle (.tgz) made of raw tar members (for crafted bundles)."""
        buf = io.BytesIO()
        with (
            gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self.put_bytes(buf.getvalue(), BUNDLE_MEDIA_TYPE)

    def app(
        self,
        name: str,
        services: Mapping[str, ServiceSpec],
        *,
        files: Mapping[str, bytes] | None = None,
        bundle: Descriptor | None = None,
        manifest_padding: int = 0,
    ) -> BuiltApp:
        """Write an app: compose bundle, bundle index, app manifest and its ``uri`` file.

        Args:
            name: the app name (target key, app dir and compose project name).
            services: service name -> spec; the compose file pins each image by digest.
            files: more files for the bundle (``.env``, configs).
            bundle: a ready bundle blob to use instead (crafted tests); no bundle index then.
            manifest_padding: bytes of extra annotation, to test the manifest size limit.
        """
        compose_yaml = render_compose(services)
        layer: dict[str, object]
        if bundle is None:
            contents = {COMPOSE_FILE: compose_yaml, **(files or {})}
            bundle = self.bundle(_file_members(contents))
            index = self.put_bytes(
                json.dumps(
                    {k: f"sha256:{hashlib.sha256(v).hexdigest()}" for k, v in contents.items()}
                ).encode(),
                "application/json",
            )
            layer = {
                **bundle.to_json(),
                "annotations": {
                    BUNDLE_INDEX_DIGEST: index.digest,
                    BUNDLE_INDEX_SIZE: str(index.size),
                },
            }
        else:
            layer = bundle.to_json()
        annotations = {"compose-app": "v1"}
        if manifest_padding:
            annotations["padding"] = "x" * manifest_padding
        manifest = self.put_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.fio+compose-app",
                "config": EMPTY_CONFIG,
                "layers": [layer],
                "annotations": annotations,
            },
            OCI_MANIFEST,
        )
        uri = f"{self.host}/{self.factory}/{name}@{manifest.digest}"
        directory = app_dir(self.root, name, manifest.hex)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "uri").write_text(uri, encoding="utf-8")
        return BuiltApp(name, uri, manifest, bundle, compose_yaml)


def _file_members(contents: Mapping[str, bytes]) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name, data in contents.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        members.append((info, data))
    return members


def render_compose(services: Mapping[str, ServiceSpec]) -> bytes:
    """Render a pinned docker-compose.yml, with the config-hash label compose-publish adds."""
    rendered: dict[str, dict[str, object]] = {}
    for service_name, spec in services.items():
        image = spec.image.ref if isinstance(spec.image, BuiltImage) else spec.image
        body: dict[str, object] = {"image": image, **spec.options}
        config_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        body["labels"] = {CONFIG_HASH_LABEL: config_hash}
        rendered[service_name] = body
    return ("".join(_yaml({"services": rendered}, 0))).encode()


def _yaml(value: object, indent: int) -> Iterable[str]:
    # A small block-style emitter; scalars are JSON-quoted, which YAML reads as the same value.
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list | tuple) and item:
                yield f"{pad}{json.dumps(str(key))}:\n"
                yield from _yaml(item, indent + 2)
            else:
                yield f"{pad}{json.dumps(str(key))}: {json.dumps(_scalar(item))}\n"
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                yield f"{pad}-\n"
                yield from _yaml(item, indent + 2)
            else:
                yield f"{pad}- {json.dumps(_scalar(item))}\n"


def _scalar(value: object) -> object:
    if isinstance(value, Mapping | list | tuple):
        return {} if isinstance(value, Mapping) else []
    return value


def busybox_rootfs_tar(
    dest: Path,
    *,
    busybox: Path = Path("/bin/busybox"),
    applets: Sequence[str] = BUSYBOX_APPLETS,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a rootfs tarball with a static busybox at ``/bin/busybox`` and applet symlinks.

    Args:
        dest: the tarball to write.
        busybox: a statically linked busybox (Debian's busybox-static).
        applets: names linked to busybox under ``/bin``.
        files: more files (path -> bytes), e.g. a marker that tells two versions apart.
    """
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        info = tar.gettarinfo(str(busybox), arcname="bin/busybox")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        with busybox.open("rb") as f:
            tar.addfile(info, f)
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, data in (files or {}).items():
            item = tarfile.TarInfo(name.lstrip("/"))
            item.size = len(data)
            item.mode = 0o644
            tar.addfile(item, io.BytesIO(data))
    return dest


def data_layer_tar(dest: Path, *, name: str, size: int, seed: bytes = b"") -> Path:
    """Write a layer tarball holding one file of ``size`` incompressible bytes (benchmarks).

    The bytes come from a sha256 counter stream seeded by ``seed``, so they do not compress
    and are reproducible; they are produced in chunks, never held whole.
    """
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, _CounterStream(seed, size))
    return dest


class _CounterStream(io.RawIOBase):
    def __init__(self, seed: bytes, size: int) -> None:
        self._seed = hashlib.sha256(seed).digest()
        self._left = size
        self._counter = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        out = bytearray()
        while len(out) < want:
            block = hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big"))
            out += block.digest(min(CHUNK, want - len(out)))
            self._counter += 1
        self._left -= want
        return bytes(out)


def copy_store(src: Path, dst: Path) -> None:
    """Copy a whole store (tests: derive a broken store from a good one)."""
    shutil.copytree(src, dst, symlinks=True)
