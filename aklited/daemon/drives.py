"""What the daemon does with a drive that is plugged in: nobody is at a keyboard.

One drive at a time, and never while an update runs: the drive is mounted read-only,
searched for a bundle, checked, and installed when it holds a newer target; a drive
without a bundle, with the running target or with a bundle that fails verification is
noted with the reason. The drive is unmounted as soon as it is done with, and the daemon
says it is safe to remove (the Media property, a STATUS= line, a journald line).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from aklited.daemon.jobs import Jobs
from aklited.daemon.media import Drive, DriveAdded, DriveRemoved, MediaWatcher, find_bundle
from aklited.daemon.mounts import mount_drive
from aklited.daemon.readahead import reading_ahead
from aklited.engine.phases import Phase
from aklited.errors import AkliteError, BusyError
from aklited.outcomes import StatusCode

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DriveState:
    """One attached drive as the Media property shows it."""

    device: str
    label: str
    state: str = "waiting"  # waiting, mounted, unmounted, refused
    found: str = ""
    safe_to_remove: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "label": self.label,
            "state": self.state,
            "found": self.found,
            "safe_to_remove": self.safe_to_remove,
        }


class DriveHandler:
    """Takes drives from the watcher and handles them one by one."""

    def __init__(
        self,
        jobs: Jobs,
        media_root: Path,
        *,
        publish: Callable[[list[dict[str, Any]]], None],
        say: Callable[[str], None],
    ) -> None:
        self._jobs = jobs
        self._media_root = media_root
        self._publish = publish
        self._say = say
        self._drives: dict[str, DriveState] = {}
        self._waiting: asyncio.Queue[Drive] = asyncio.Queue()

    def _set(self, devnode: str, **changes: Any) -> None:
        if devnode in self._drives:
            self._drives[devnode] = replace(self._drives[devnode], **changes)
            self._publish([d.as_dict() for d in self._drives.values()])

    async def watch(self, watcher: MediaWatcher) -> None:
        """Follow the watcher's events for as long as it runs."""
        async for event in watcher.events():
            if isinstance(event, DriveAdded):
                drive = event.drive
                self._drives[drive.devnode] = DriveState(drive.devnode, drive.label)
                self._publish([d.as_dict() for d in self._drives.values()])
                self._waiting.put_nowait(drive)
            elif isinstance(event, DriveRemoved) and event.devnode in self._drives:
                del self._drives[event.devnode]
                self._publish([d.as_dict() for d in self._drives.values()])

    async def work(self) -> None:
        """Handle the drives in the order they came, each once no update runs."""
        while True:
            drive = await self._waiting.get()
            if drive.devnode not in self._drives:
                continue  # pulled out before its turn
            await self._jobs.wait()
            await self.handle(drive)

    async def handle(self, drive: Drive) -> None:
        """Mount, find, check, install; unmount as soon as done, and say so."""
        log.info("drive taken", devnode=drive.devnode, label=drive.label, fs_type=drive.fs_type)
        try:
            async with mount_drive(drive, self._media_root) as mounted:
                self._set(drive.devnode, state="mounted")
                found = await self._use(mounted.mountpoint)
        except AkliteError as e:
            log.warning(
                "drive refused",
                devnode=drive.devnode,
                label=drive.label,
                fs_type=drive.fs_type,
                error=e.message,
            )
            self._jobs.report(int(e.code), f"{drive.devnode}: {e.message}")
            self._set(drive.devnode, state="refused", found=e.message, safe_to_remove=True)
        else:
            self._set(drive.devnode, state="unmounted", found=found, safe_to_remove=True)
        name = drive.label or drive.devnode
        log.info("drive can be removed", devnode=drive.devnode, label=drive.label)
        self._say(f"{name}: safe to remove")

    async def _use(self, mountpoint: Path) -> str:
        bundle = await find_bundle(mountpoint)
        if bundle is None:
            self._jobs.report(0, "the drive holds no update bundle")
            return "no update bundle"
        # The drive reads the bundle into the page cache while the bundle is checked,
        # instead of sitting idle. Once the install starts, its reads are the drive's: the
        # update is sized (with apps, a walk of many small reads) and copied.
        async with reading_ahead(bundle) as ahead:

            def on_phase(phase: Phase) -> None:
                if phase is not Phase.VERIFYING:
                    ahead.stop(f"the install reached {phase}")

            with self._jobs.phases(on_phase):
                return await self._check_and_install(bundle)

    async def _check_and_install(self, bundle: Path) -> str:
        try:
            result = await self._jobs.check(bundle)
        except AkliteError as e:
            self._jobs.report(int(e.code), e.message)
            return f"refused [{int(e.code)}]: {e.message}"
        target = result.target.name
        if result.code == StatusCode.OK:
            self._jobs.report(0, f"{target} is already installed")
            return f"{target} (already installed)"
        code, message = await self._install(bundle)
        return (
            f"{target} [{code}]" if StatusCode(code).is_success else f"{target} [{code}]: {message}"
        )

    async def _install(self, bundle: Path) -> tuple[int, str]:
        while True:
            await self._jobs.wait()
            completion = self._jobs.next_completion()
            try:
                self._jobs.start_install(bundle)
            except BusyError:  # an install requested over D-Bus came first
                completion.cancel()
                continue
            # The drive is done with once the install ends, before the reboot it asks for.
            return await completion
