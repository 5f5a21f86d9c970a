"""Whether the device rebooted since a deployment: a marker file on a tmpfs.

The marker is written right after a deployment; ``/run`` is emptied at every boot, so its
absence means the device rebooted since. Both calls touch the filesystem: off the loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


def _mark(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


class RebootMarker:
    """The engine's reboot port over ``<reboot_sentinel_dir>/need_reboot``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def mark_needed(self) -> None:
        await asyncio.to_thread(_mark, self.path)

    async def needed(self) -> bool:
        return await asyncio.to_thread(self.path.exists)
