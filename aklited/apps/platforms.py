"""Device platforms and containerd's strict platform match, as composectl applies it."""

from __future__ import annotations

import platform as _host
from collections.abc import Mapping
from dataclasses import dataclass

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
}
_ARCH_DEFAULT_VARIANT = {"armhf": "v7", "armel": "v6", "armv7l": "v7", "armv6l": "v6"}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform (``linux/arm64``, ``linux/arm/v7``), kept in normalized form."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def of(cls, os: str, architecture: str, variant: str = "") -> Platform:
        """Build a normalized platform the way containerd normalizes one."""
        arch = architecture.lower()
        variant = variant.lower() or _ARCH_DEFAULT_VARIANT.get(arch, "")
        arch = _ARCH_ALIASES.get(arch, arch)
        if variant and not variant.startswith("v") and variant.isdigit():
            variant = f"v{variant}"
        if arch == "arm64" and variant == "v8":
            variant = ""
        elif arch == "arm" and not variant:
            variant = "v7"
        elif arch == "amd64" and variant == "v1":
            variant = ""
        return cls(os=os.lower(), architecture=arch, variant=variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (``linux/arm64``, ``linux/arm/v7``)."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant]")
        return cls.of(*parts)

    @classmethod
    def host(cls) -> Platform:
        """The platform of the machine aklited runs on (composectl's default)."""
        return cls.of(_host.system(), _host.machine())

    def matches(self, spec: object) -> bool:
        """Strict match with an index entry's ``platform`` (no fallback to older variants)."""
        if not isinstance(spec, Mapping):
            return False
        os_, arch, variant = spec.get("os"), spec.get("architecture"), spec.get("variant", "")
        if not isinstance(os_, str) or not isinstance(arch, str) or not isinstance(variant, str):
            return False
        return Platform.of(os_, arch, variant) == self

    def __str__(self) -> str:
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.os}/{self.architecture}{tail}"
