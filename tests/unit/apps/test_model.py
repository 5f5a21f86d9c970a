from __future__ import annotations

import pytest

from aklited.apps.blobs import Blob
from aklited.apps.model import AppImage, parse_app_uri, parse_image_ref
from aklited.errors import AppsError
from aklited.outcomes import StatusCode

HEX = "ab" * 32
HEX2 = "cd" * 32


def test_app_uri_gives_locator_name_and_digest() -> None:
    ref = parse_app_uri(f"hub.foundries.io/factory/app1@sha256:{HEX}", what="app app1")
    assert ref.locator == "hub.foundries.io/factory/app1"
    assert ref.name == "app1"
    assert ref.hex == HEX


@pytest.mark.parametrize(
    "uri",
    [
        "hub.foundries.io/factory/app1",
        f"hub.foundries.io/factory/app1@sha512:{HEX}",
        "hub.foundries.io/factory/app1@sha256:abc",
        f"Hub Foundries/app1@sha256:{HEX}",
    ],
)
def test_app_uri_without_valid_digest_is_refused(uri: str) -> None:
    with pytest.raises(AppsError) as err:
        parse_app_uri(uri, what="app app1")
    assert err.value.code == StatusCode.VERIFICATION_FAILED
    assert "app app1" in err.value.message


def test_image_ref_drops_tag_and_keeps_registry_port() -> None:
    ref = parse_image_ref(f"registry:5000/f/busybox:1.36@sha256:{HEX}", what="x")
    assert ref.locator == "registry:5000/f/busybox"
    assert ref.hex == HEX
    assert parse_image_ref(f"busybox@sha256:{HEX}", what="x").locator == "busybox"


def test_unpinned_image_is_refused() -> None:
    with pytest.raises(AppsError, match="not pinned"):
        parse_image_ref("hub.foundries.io/f/busybox:latest", what="x")


def test_image_tags_follow_composectl() -> None:
    blob = Blob(HEX, 10)
    image = AppImage(
        ref=f"h/f/i@sha256:{HEX}",
        locator="h/f/i",
        root=blob,
        manifest=Blob(HEX2, 5),
        config=Blob("ef" * 32, 3),
        layers=(Blob("01" * 32, 1), Blob("01" * 32, 1)),
    )
    assert image.tags == (f"h/f/i:{HEX[:7]}", f"h/f/i:{HEX2[:7]}")
    assert image.local_tag == f"h/f/i:{HEX[:7]}"
    assert image.digest_refs == (f"h/f/i@sha256:{HEX}", f"h/f/i@sha256:{HEX2}")
    assert image.image_id == f"sha256:{'ef' * 32}"
    # A layer repeated within an image is one blob.
    assert len(image.blobs()) == 4
