"""The apps port of a device without Compose Apps (``pacman.type = "ostree"``).

Kept apart from :mod:`aklited.apps.port` so that such a device never imports the Docker
client libraries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from aklited.engine.ports import ByteProgress


class NoApps:
    """AppsPort of a device without Compose Apps (``pacman.type = "ostree"``)."""

    async def stage_size(self, src_store: Path, apps: Mapping[str, str]) -> int:
        return 0

    async def copy(
        self,
        src_store: Path,
        apps: Mapping[str, str],
        *,
        progress: ByteProgress | None = None,
        on_copied: Callable[[str], None] | None = None,
    ) -> None:
        return None

    async def load(self, apps: Mapping[str, str], *, progress: ByteProgress | None = None) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def verify_content(self, src_store: Path, apps: Mapping[str, str]) -> tuple[int, int]:
        return 0, 0

    async def start(self, apps: Mapping[str, str]) -> None:
        return None

    async def in_place(self, apps: Mapping[str, str]) -> bool:
        return True

    async def retire(self, keep: Mapping[str, str]) -> None:
        return None

    async def states(self, apps: Mapping[str, str]) -> dict[str, str]:
        return {}
