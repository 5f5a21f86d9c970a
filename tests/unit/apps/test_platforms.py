from __future__ import annotations

import pytest

from aklited.apps.platforms import Platform


def test_aliases_and_variants_are_normalized() -> None:
    assert Platform.of("linux", "x86_64") == Platform("linux", "amd64")
    assert Platform.of("linux", "aarch64", "v8") == Platform("linux", "arm64")
    assert Platform.of("linux", "arm") == Platform("linux", "arm", "v7")
    assert Platform.of("linux", "armhf") == Platform("linux", "arm", "v7")
    assert Platform.parse("linux/arm/7") == Platform("linux", "arm", "v7")
    assert str(Platform.parse("linux/arm/v6")) == "linux/arm/v6"


def test_strict_match_has_no_variant_fallback() -> None:
    arm7 = Platform.parse("linux/arm/v7")
    assert arm7.matches({"os": "linux", "architecture": "arm", "variant": "v7"})
    assert arm7.matches({"os": "linux", "architecture": "arm"})
    assert not arm7.matches({"os": "linux", "architecture": "arm", "variant": "v6"})
    arm64 = Platform.parse("linux/arm64")
    assert arm64.matches({"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert not arm64.matches({"os": "linux", "architecture": "amd64"})


@pytest.mark.parametrize(
    "spec",
    [None, "linux/amd64", {"architecture": "amd64"}, {"os": "unknown", "architecture": "unknown"}],
)
def test_malformed_or_foreign_entries_do_not_match(spec: object) -> None:
    assert not Platform.parse("linux/amd64").matches(spec)


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="os/arch"):
        Platform.parse("amd64")


def test_host_platform_is_linux() -> None:
    assert Platform.host().os == "linux"
