"""The small interfaces the engine drives: trust, rootfs, apps, services, reboot.

The engine imports none of pyudev, dbus-fast, aiodocker or the ostree CLI; it receives
objects that satisfy these protocols (``aklited.wiring`` builds the real ones from the
configuration), so the CLI, the daemon and the tests drive the very same engine code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aklited.host.systemd import ServiceManager, UnitState

__all__ = [
    "AppsPort",
    "EngineObserver",
    "RootfsPort",
    "ServiceManager",
    "TargetSpec",
    "TrustPort",
    "UnitState",
]


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A verified target: what the engine installs and records."""

    name: str
    version: int
    ostree_hash: str
    apps: Mapping[str, str]  # app name -> URI (hub.../factory/app@sha256:...)
    custom: Mapping[str, Any] = field(default_factory=dict)
    tag: str | None = None
    # Said with the outcome: e.g. the drive's TUF metadata is older than the device's and
    # the stored copy was used (a rollback on the drive, not "nothing to do").
    note: str | None = None


@dataclass(frozen=True, slots=True)
class CurrentTarget:
    """What the engine believes the device runs (for selection: downgrade, already installed)."""

    name: str
    version: int
    ostree_hash: str


class TrustPort(Protocol):
    async def select(
        self,
        src_dir: Path,
        *,
        target_name: str | None,
        force: bool,
        current: CurrentTarget | None,
    ) -> TargetSpec:
        """Verify the bundle's metadata (persisting what verified) and choose the target.

        Raises:
            TrustError, BundleError: with codes 4, 6, 8, 11, 12, 14, 15, 20, 102.
        """
        ...


class RootfsPort(Protocol):
    async def booted_commit(self) -> str | None:
        """The commit of the deployment the device booted, from the kernel command line."""
        ...

    async def pending_commit(self) -> str | None:
        """The commit of a deployment that becomes active at the next boot, if any."""
        ...

    async def has_commit(self, commit: str) -> bool: ...

    async def pull(self, src_repo: Path, commit: str) -> None:
        """Copy ``commit`` from the bundle's repo (60 no space, 50 copy, 70 mismatch)."""
        ...

    async def deploy(self, commit: str) -> None:
        """Deploy ``commit`` as the default for the next boot."""
        ...

    async def prune(self) -> None:
        """Keep the booted and the rollback deployment; free everything else."""
        ...


class AppsPort(Protocol):
    async def stage(self, src_store: Path, apps: Mapping[str, str]) -> None:
        """Verify the apps in the bundle, copy them into the device store, load their images."""
        ...

    async def start(self, apps: Mapping[str, str]) -> None:
        """Install the compose projects from the device store, start them, check they run.

        Raises:
            AppsError: code 80 with the failing service's logs when an app does not run.
        """
        ...

    async def in_place(self, apps: Mapping[str, str]) -> bool:
        """True when every app is installed at this version and running."""
        ...

    async def retire(self, keep: Mapping[str, str]) -> None:
        """Stop and remove every app not in ``keep``; prune images and blobs only they used."""
        ...

    async def states(self, apps: Mapping[str, str]) -> dict[str, str]:
        """Each app's state for humans: "running", "not running", "failed: ..."."""
        ...


class EngineObserver(Protocol):
    """Receives progress; the daemon turns it into D-Bus properties."""

    def on_state(self, state: str, detail: Mapping[str, Any]) -> None: ...

    def on_progress(self, percent: int, message: str) -> None: ...


class NullObserver:
    def on_state(self, state: str, detail: Mapping[str, Any]) -> None:
        return None

    def on_progress(self, percent: int, message: str) -> None:
        return None
