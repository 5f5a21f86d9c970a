"""What verification and selection need to know about the device."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What selection needs to know about the device (from its configuration)."""

    hardware_id: str
    device_type: str
    tags: tuple[str, ...] = ()
    compose_apps: tuple[str, ...] | None = None
    with_apps: bool = True
