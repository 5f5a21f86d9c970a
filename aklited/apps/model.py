"""What a verified Compose App is: frozen descriptions passed between the apps modules.

An :class:`App` is produced only by the store reader after every node of its tree was checked,
so holding one means its blobs were complete and intact when it was read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aklited.apps.blobs import Blob, parse_digest
from aklited.errors import AppsCorruptError

# Loose reference grammar: [host[:port]/]path[:tag]@sha256:hex, lowercase path components.
_LOCATOR = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class AppRef:
    """A parsed app URI ``<host>/<factory>/<app>@sha256:<hex>``."""

    uri: str
    locator: str
    hex: str

    @property
    def name(self) -> str:
        """The last path component: composectl's app dir name."""
        return self.locator.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A pinned image reference from a compose file: locator (no tag) and digest hex."""

    ref: str
    locator: str
    hex: str


def parse_app_uri(uri: str, *, what: str) -> AppRef:
    """Parse an app URI; the digest is mandatory.

    Raises:
        AppsError: 70 if it is not ``locator@sha256:<hex>``.
    """
    locator, sep, digest = uri.partition("@")
    if not sep or not _LOCATOR.fullmatch(locator):
        raise AppsCorruptError(f"{what}: app URI {uri!r} is not <locator>@sha256:<digest>")
    return AppRef(uri=uri, locator=locator, hex=parse_digest(digest, what=what))


def parse_image_ref(ref: str, *, what: str) -> ImageRef:
    """Parse a compose ``image:`` value pinned by digest, dropping a tag if one is present.

    Raises:
        AppsError: 70 if the image is not pinned by a sha256 digest.
    """
    name, sep, digest = ref.partition("@")
    if not sep:
        raise AppsCorruptError(f"{what}: image {ref!r} is not pinned by a sha256 digest")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash and _TAG.fullmatch(name[colon + 1 :]):
        name = name[:colon]
    if not _LOCATOR.fullmatch(name):
        raise AppsCorruptError(f"{what}: image {ref!r} has a malformed name")
    return ImageRef(ref=ref, locator=name, hex=parse_digest(digest, what=what))


@dataclass(frozen=True, slots=True)
class Service:
    """One service of a compose project: its image as written and its pinned config hash."""

    name: str
    image: str
    config_hash: str | None


@dataclass(frozen=True, slots=True)
class AppImage:
    """A verified image for the device platform: root (index or manifest) down to its layers."""

    ref: str
    locator: str
    root: Blob
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def local_tag(self) -> str:
        """The tag a compose service is pointed at on an engine without digest refs."""
        return f"{self.locator}:{self.root.hex[:7]}"

    @property
    def tags(self) -> tuple[str, ...]:
        """composectl's tags: ``<locator>:<first 7 hex>`` for the root and the arch manifest."""
        if self.manifest.hex == self.root.hex:
            return (self.local_tag,)
        return (self.local_tag, f"{self.locator}:{self.manifest.hex[:7]}")

    @property
    def digest_refs(self) -> tuple[str, ...]:
        """``<locator>@sha256:<hex>`` per level, which only an LmP-patched engine accepts."""
        hexes = dict.fromkeys((self.root.hex, self.manifest.hex))
        return tuple(f"{self.locator}@sha256:{h}" for h in hexes)

    @property
    def image_id(self) -> str:
        """The engine's image id for this image: the config digest."""
        return self.config.digest

    def blobs(self) -> tuple[Blob, ...]:
        """Every blob of the image once: root, arch manifest, config, unique layers."""
        unique = {b.hex: b for b in (self.root, self.manifest, self.config, *self.layers)}
        return tuple(unique.values())


@dataclass(frozen=True, slots=True)
class App:
    """A verified Compose App."""

    name: str
    uri: str
    manifest: Blob
    bundle: Blob
    extras: tuple[Blob, ...]
    services: tuple[Service, ...]
    images: tuple[AppImage, ...]

    @property
    def hex(self) -> str:
        """The app manifest's digest hex: the version's directory name in a store."""
        return self.manifest.hex

    def image_for(self, service: Service) -> AppImage:
        """The verified image a service runs."""
        for image in self.images:
            if image.ref == service.image:
                return image
        raise KeyError(service.image)

    def blobs(self) -> tuple[Blob, ...]:
        """Every blob of the app once: manifest, bundle, extras, then each image's blobs."""
        unique = {b.hex: b for b in (self.manifest, self.bundle, *self.extras)}
        for image in self.images:
            for blob in image.blobs():
                unique.setdefault(blob.hex, blob)
        return tuple(unique.values())
