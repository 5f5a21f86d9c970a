"""What the engine reads and answers: targets, installed targets, outcomes, check results.

Outcomes carry no front-end wording: the CLI says "then run 'aklite-offline run'", the
daemon says it reboots; both read the same code, target and message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aklited.outcomes import StatusCode


@dataclass(frozen=True, slots=True)
class Target:
    """A verified target: what the engine installs and records."""

    name: str
    version: int
    ostree_commit: str
    apps: Mapping[str, str]  # app name -> app URI (<registry>/<factory>/<app>@sha256:<hex>)
    custom: Mapping[str, Any] = field(default_factory=dict)
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The target a bundle offers this device, and how its metadata was verified."""

    target: Target
    # Set when the drive's TUF metadata is older than the device's and the stored copy was
    # used: a rollback on the drive, not "nothing to do". Says why, for a human.
    stored_metadata_used: str | None = None


@dataclass(frozen=True, slots=True)
class GuardTarget:
    """The running target as the downgrade guard sees it (absent for the factory image)."""

    name: str
    version: int


@dataclass(frozen=True, slots=True)
class InstalledTarget:
    """What the device runs, as the journal and the sysroot tell."""

    name: str
    version: int
    ostree_commit: str
    apps: Mapping[str, str]
    app_states: Mapping[str, str]  # name -> "running" | "not running" | "not installed (...)"
    booted_commit: str | None
    initial: bool = False  # the factory image: no offline update recorded yet


@dataclass(frozen=True, slots=True)
class ContentReport:
    """What a deep check verified: OSTree file objects and app blobs hashed."""

    objects: int  # 0: the repo is not an archive repo (objects checked, not hashed)
    apps: int = 0
    blobs: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of install or run: a code, one line for a human, the target it names."""

    code: StatusCode
    message: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What an install of the bundle would do; nothing on the device changed.

    ``code`` is 16 when the target can be installed, 0 when the device already runs it.
    """

    code: StatusCode
    target: Target
    current: InstalledTarget | None  # None: the journal records no target yet
    stored_metadata_used: str | None = None
    content: ContentReport | None = None  # None: metadata only (not a deep check)
