"""The small interfaces the engine drives: trust, rootfs, apps, services, reboot, lock.

The engine imports none of pyudev, dbus-fast, aiodocker or the ostree CLI; it receives
objects that satisfy these protocols (:mod:`aklited.wiring` builds the real ones from the
configuration, ``tests/fakes.py`` in-memory ones), so the CLI, the daemon and the tests
drive the very same engine code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aklited.engine.model import ContentReport, GuardTarget, Selection, Target
from aklited.engine.phases import Phase

# Called with (bytes done, bytes in all, what is happening) as a step copies.
ByteProgress = Callable[[int, int, str], None]


class TrustPort(Protocol):
    async def select(
        self,
        src_dir: Path,
        *,
        target_name: str | None,
        force: bool,
        guard: GuardTarget | None,
        persist: bool,
    ) -> Selection:
        """Verify the bundle's metadata and choose the target; the one verify+select.

        ``persist`` keeps what verified in the journal (install); a check keeps nothing.
        ``guard`` is the running target the downgrade guard protects, if any.

        Raises:
            TrustError, SelectionError: 4, 6, 8, 11, 12, 14, 15, 20, 102 (and 50/70 for
            bundle content the drive reader refused).
        """
        ...


class RootfsPort(Protocol):
    def kept_readings(self) -> AbstractContextManager[None]:
        """Within it, the port keeps what it read (the deployments, until it changes them
        itself; the walk behind :meth:`pull_size`, for the pull): one engine call holding
        the update lock."""
        ...

    async def booted_commit(self) -> str | None:
        """The commit of the deployment the device booted, from the kernel command line."""
        ...

    async def pending_commit(self) -> str | None:
        """The commit of a deployment that becomes active at the next boot, if any."""
        ...

    async def has_commit(self, commit: str) -> bool: ...

    async def pull_size(self, *, source_repo: Path, commit: str) -> int:
        """The bytes :meth:`pull` copies (for the overall progress; 0 when it copies none).

        The walk behind it checks what the pull reads; the pull reuses it. Raises what the
        pull's checks would (50, 70), and 60 when the commit does not fit even now.
        """
        ...

    async def fits_beside(self, *, commit: str, beside: int) -> bool:
        """Whether ``commit``, as :meth:`pull_size` just sized it, still fits once ``beside``
        more bytes are written to the sysroot's file system: against the space free now.

        False when it does not, when that commit was not sized, or when the free space
        cannot be read: the answer only lets work begin before the pull's own check.
        """
        ...

    async def pull(
        self,
        *,
        source_repo: Path,
        commit: str,
        on_progress: ByteProgress | None = None,
        on_space_checked: Callable[[], None] | None = None,
    ) -> object:
        """Copy ``commit`` from the bundle's repo (60 no space, 50 copy, 70 mismatch).

        ``on_space_checked`` is called once the space check passed: nothing else should
        write before it (the copy itself may have begun, where the adapter checks beside
        it), or once the commit turns out to be there already.
        """
        ...

    async def deploy(self, *, commit: str) -> object:
        """Deploy ``commit`` as the default for the next boot."""
        ...

    async def prune(self) -> object:
        """Keep the booted and the rollback deployment; free everything else."""
        ...

    async def verify_content(self, *, source_repo: Path, commit: str) -> int:
        """Check every object of ``commit`` on the drive; the number of file objects hashed."""
        ...


class AppsPort(Protocol):
    async def stage_size(self, src_store: Path, apps: Mapping[str, str]) -> int:
        """The bytes :meth:`copy` copies (for the overall progress)."""
        ...

    async def copy(
        self,
        src_store: Path,
        apps: Mapping[str, str],
        *,
        progress: ByteProgress | None = None,
        on_copied: Callable[[str], None] | None = None,
    ) -> None:
        """Verify the apps in the bundle and copy them into the device store, every blob
        hashed as it is copied (60 no space, 50 copy, 70 mismatch, 8 missing).

        ``on_copied`` is called with an app's name as soon as all of its blobs are in the
        store, while the other apps may still be copied.
        """
        ...

    async def load(self, apps: Mapping[str, str], *, progress: ByteProgress | None = None) -> None:
        """Load the images of apps in the device store into the engine (80 refused); the
        blobs of apps :meth:`copy` has just checked into the store are not hashed again
        (each was hashed as it was copied in), any others are. Loads of different apps
        may run side by side."""
        ...

    async def ready(self) -> None:
        """Return once apps can be installed here; raise AppsError (80) saying what is missing
        (no Docker engine answers)."""
        ...

    async def start(self, apps: Mapping[str, str]) -> None:
        """Install the compose projects from the device store, start them, check they run.

        Raises:
            AppsError: when an app does not run (80, with the failing service's logs).
        """
        ...

    async def in_place(self, apps: Mapping[str, str]) -> bool:
        """True when every app is installed at this version and running, and no other app
        is installed."""
        ...

    async def retire(self, keep: Mapping[str, str]) -> None:
        """Stop and remove every app not in ``keep``; prune images and blobs only they used."""
        ...

    async def states(self, apps: Mapping[str, str]) -> dict[str, str]:
        """Each app's state for humans: "running", "not running", "failed: ..."."""
        ...

    async def verify_content(self, src_store: Path, apps: Mapping[str, str]) -> tuple[int, int]:
        """Verify every blob of ``apps`` on the drive; (apps verified, blobs hashed)."""
        ...


@dataclass(frozen=True, slots=True)
class UnitState:
    """A systemd unit as the engine needs to know it."""

    name: str
    load_state: str  # loaded, not-found, masked, ... ; "unavailable" without systemd
    active_state: str  # active, inactive, failed, activating, deactivating, ...

    @property
    def running(self) -> bool:
        return self.active_state in {"active", "activating", "reloading"}


class ServicesPort(Protocol):
    """systemd, as far as the engine needs it (aktualizr-lite, dockerd)."""

    @property
    def available(self) -> bool: ...

    async def unit_state(self, name: str) -> UnitState: ...

    async def stop_unit(self, name: str) -> None: ...

    async def start_unit(self, name: str) -> None: ...

    async def restart_unit(self, name: str) -> None: ...

    async def close(self) -> None: ...


class RebootPort(Protocol):
    """Whether the device rebooted since a deployment (a marker on a tmpfs), and holding
    shutdowns off while the rootfs is copied and deployed."""

    async def mark_needed(self) -> None:
        """Remember, until the next boot, that a deployment waits for a reboot."""
        ...

    async def needed(self) -> bool:
        """True until the device rebooted after :meth:`mark_needed`."""
        ...

    def inhibit(self, why: str) -> AbstractAsyncContextManager[None]:
        """Keep the device from shutting down while held (best effort: logind may be absent)."""
        ...


class LockPort(Protocol):
    """The update lock shared with aktualizr-lite's tools."""

    def hold(self) -> AbstractAsyncContextManager[None]:
        """Hold the lock; raises LockHeldError when another tool holds it."""
        ...


class CurrentTargetPort(Protocol):
    """``/var/sota/current-target``, which aktualizr-lite and scripts read."""

    async def write(self, target: Target) -> None: ...


class EngineObserver(Protocol):
    """Receives each journal phase and the overall progress; the daemon shows them."""

    def on_phase(self, phase: Phase, detail: Mapping[str, Any]) -> None: ...

    def on_progress(self, percent: int, message: str) -> None: ...


class NullObserver:
    def on_phase(self, phase: Phase, detail: Mapping[str, Any]) -> None:
        return None

    def on_progress(self, percent: int, message: str) -> None:
        return None


__all__ = [
    "AppsPort",
    "ByteProgress",
    "ContentReport",
    "CurrentTargetPort",
    "EngineObserver",
    "LockPort",
    "NullObserver",
    "RebootPort",
    "RootfsPort",
    "ServicesPort",
    "TrustPort",
    "UnitState",
]
