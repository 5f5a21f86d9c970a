"""``/var/sota/current-target``: aktualizr-lite's shell-style summary of the running target.

Other tools on LmP (and users' scripts) source it, so it keeps aktualizr-lite's keys and is
replaced atomically on every finalize.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aklited.engine.model import Target
from aklited.errors import HostFileError
from aklited.host.files import atomic_write

# Key in the file -> key in the target's `custom` block.
_CUSTOM_KEYS = (
    ("LMP_MANIFEST_SHA", "lmp-manifest-sha"),
    ("META_SUBSCRIBER_OVERRIDES_SHA", "meta-subscriber-overrides-sha"),
    ("CONTAINERS_SHA", "containers-sha"),
)


def _quote(value: str) -> str:
    # Values are sourced by sh: keep them to one safe, double-quoted line.
    cleaned = re.sub(r"[\x00-\x1f\x7f]", "", value)
    return '"' + re.sub(r'(["\\$`])', r"\\\1", cleaned) + '"'


def render(name: str, version: int, custom: Mapping[str, Any], tag: str | None) -> str:
    lines = [f"TARGET_NAME={_quote(name)}", f"CUSTOM_VERSION={_quote(str(version))}"]
    for key, custom_key in _CUSTOM_KEYS:
        value = custom.get(custom_key)
        if isinstance(value, str) and value:
            lines.append(f"{key}={_quote(value)}")
    if tag:
        lines.append(f"TAG={_quote(tag)}")
    return "\n".join(lines) + "\n"


def write_current_target(
    path: Path, *, name: str, version: int, custom: Mapping[str, Any], tag: str | None
) -> None:
    atomic_write(path, render(name, version, custom, tag).encode())


class CurrentTargetFile:
    """The engine's current-target port: the file, replaced atomically off the loop."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def write(self, target: Target) -> None:
        try:
            await asyncio.to_thread(
                write_current_target,
                self.path,
                name=target.name,
                version=target.version,
                custom=target.custom,
                tag=target.tag,
            )
        except OSError as e:
            raise HostFileError(f"{self.path}: cannot be written: {e.strerror or e}") from e
