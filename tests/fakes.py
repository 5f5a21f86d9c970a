"""In-memory fakes of the engine's ports, and a device that holds them.

These play the role python-tuf's ``RepositorySimulator`` plays for TUF clients: a
:class:`FakeDevice` keeps the state a real device keeps on disk (the OSTree repo and its
deployments, the app store and the running apps, systemd units, the reboot marker on
``/run``, ``/var/sota/current-target``, the update lock) so that a *second* :class:`Engine`
built on the same device and the same journal file sees what the first one left. That is how
the unit tests prove recovery from a crash: :class:`SimulatedKill` (not an ``Exception``, so
the engine cannot settle it) stands in for SIGKILL, and :meth:`Rig.restart` for the next
process.

Every port call goes through one :class:`FaultPlan`: a test makes any call fail
(``faults.fail("rootfs.pull", RootfsCopyError(...))``) or wait until it lets it go
(``gate = faults.gate("rootfs.pull")``; ``await gate.entered.wait()``; ``gate.open()``).
Nothing here sleeps or needs root.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aklited.engine.engine import (
    AKLITE_UNIT,
    AKLITE_WAS_RUNNING_KEY,
    Checkpoint,
    Engine,
    EngineSettings,
)
from aklited.engine.journal import Event, InstallRecord, Journal
from aklited.engine.model import GuardTarget, Selection, Target
from aklited.engine.phases import Phase
from aklited.engine.ports import ByteProgress, EngineObserver, UnitState
from aklited.errors import (
    AppsContentMissingError,
    AppsRunError,
    DowngradeRefusedError,
    LockHeldError,
    MetadataMissingError,
    RootfsCopyError,
    TargetNotFoundError,
)
from aklited.outcomes import StatusCode

# The phases an install of a rootfs+apps target passes, in order ("verifying" comes
# before the install row exists); the engine's tests, unit and end to end, expect these.
ROOTFS_AND_APPS_INSTALL = [
    Phase.VERIFYING,
    Phase.STARTED,
    Phase.STOPPING_AKLITE,
    Phase.STAGING_APPS,
    Phase.PULLING,
    Phase.DEPLOYING,
    Phase.AWAITING_REBOOT,
]

HWID = "intel-corei7-64"
TAG = "main"
# What a pull copies and a stage loads when a test does not say otherwise.
DEFAULT_COMMIT_BYTES = 3000
DEFAULT_APP_BYTES = 1000
DEFAULT_OBJECTS = 12  # file objects a deep check hashes in a commit
DEFAULT_BLOBS = 3  # blobs of one app
PROGRESS_STEPS = 3  # progress reports of a pull or a stage, after the first (0 done)

# Every port call a test can make fail or hold. "rootfs.deploy.after" is reached once the
# deployment took effect (pending for the next boot), before deploy returns.
Op = Literal[
    "trust.select",
    "rootfs.booted_commit",
    "rootfs.pending_commit",
    "rootfs.has_commit",
    "rootfs.pull_size",
    "rootfs.fits_beside",
    "rootfs.pull",
    "rootfs.pull.copying",
    "rootfs.deploy",
    "rootfs.deploy.after",
    "rootfs.prune",
    "rootfs.verify_content",
    "apps.ready",
    "apps.stage_size",
    "apps.copy",
    "apps.copy.app_copied",
    "apps.load",
    "apps.start",
    "apps.in_place",
    "apps.retire",
    "apps.states",
    "apps.verify_content",
    "services.unit_state",
    "services.stop_unit",
    "services.start_unit",
    "services.restart_unit",
    "reboot.mark_needed",
    "reboot.needed",
    "lock.hold",
    "current_file.write",
]


class SimulatedKill(BaseException):
    """SIGKILL, as a test can raise it: not an Exception, so the engine does not settle it."""


def crash_at(phase: Phase) -> Checkpoint:
    """An engine checkpoint that kills the "process" right after ``phase`` is journalled."""

    def checkpoint(reached: Phase) -> None:
        if reached == phase:
            raise SimulatedKill(f"killed after the journal recorded {phase}")

    return checkpoint


# ---- targets ------------------------------------------------------------------------------


def commit_for(label: str) -> str:
    """A 64-hex OSTree commit name, stable for ``label``."""
    return hashlib.sha256(f"commit:{label}".encode()).hexdigest()


def app_uri(name: str, version: int) -> str:
    digest = hashlib.sha256(f"app:{name}:{version}".encode()).hexdigest()
    return f"hub.foundries.io/factory/{name}@sha256:{digest}"


FACTORY_COMMIT = commit_for("factory")


def make_target(
    version: int,
    *,
    apps: tuple[str, ...] = ("web",),
    commit: str | None = None,
    app_version: int | None = None,
) -> Target:
    """Target ``version`` of this device; ``commit`` reuses a rootfs (an apps-only update)."""
    return Target(
        name=f"{HWID}-lmp-{version}",
        version=version,
        ostree_commit=commit or commit_for(f"rootfs-{version}"),
        apps={name: app_uri(name, app_version or version) for name in apps},
        custom={"lmp-manifest-sha": f"{version:040x}"},
        tag=TAG,
    )


# ---- faults -------------------------------------------------------------------------------


class Gate:
    """Holds a port call: ``entered`` is set once the call waits, :meth:`open` lets it go."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self._released = asyncio.Event()

    def open(self) -> None:
        self._released.set()

    async def pass_through(self) -> None:
        self.entered.set()
        await self._released.wait()


class FaultPlan:
    """Failures and gates per port call, and the calls made, in order."""

    def __init__(self) -> None:
        self.errors: dict[Op, BaseException] = {}
        self.gates: dict[Op, Gate] = {}
        self.calls: list[Op] = []

    def fail(self, op: Op, error: BaseException) -> None:
        """Every later ``op`` raises ``error`` (until :meth:`clear`)."""
        self.errors[op] = error

    def clear(self, op: Op | None = None) -> None:
        if op is None:
            self.errors.clear()
        else:
            self.errors.pop(op, None)

    def gate(self, op: Op) -> Gate:
        """Later ``op`` calls wait for the gate to open (before they act or fail)."""
        gate = self.gates[op] = Gate()
        return gate

    async def enter(self, op: Op) -> None:
        self.calls.append(op)
        gate = self.gates.get(op)
        if gate is not None:
            await gate.pass_through()
        error = self.errors.get(op)
        if error is not None:
            raise error.with_traceback(None)


# ---- trust --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelectCall:
    src_dir: Path
    target_name: str | None
    force: bool
    guard: GuardTarget | None
    persist: bool


class FakeTrust:
    """TrustPort: the bundles "on the drive", by path; the real guard's downgrade rule."""

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self.bundles: dict[Path, Selection] = {}
        self.calls: list[SelectCall] = []

    def publish(self, src_dir: Path, selection: Selection) -> None:
        self.bundles[src_dir.resolve()] = selection

    async def select(
        self,
        src_dir: Path,
        *,
        target_name: str | None,
        force: bool,
        guard: GuardTarget | None,
        persist: bool,
    ) -> Selection:
        self.calls.append(SelectCall(src_dir, target_name, force, guard, persist))
        await self._faults.enter("trust.select")
        selection = self.bundles.get(src_dir)
        if selection is None:
            raise MetadataMissingError(f"{src_dir}: no offline update bundle here")
        target = selection.target
        if target_name is not None and target_name != target.name:
            raise TargetNotFoundError(f"{target_name} is not in the bundle at {src_dir}")
        if guard is not None and target.version < guard.version and not force:
            raise DowngradeRefusedError(
                f"{target.name} is older than the running {guard.name}; use --force"
            )
        return selection


# ---- rootfs -------------------------------------------------------------------------------


class FakeRootfs:
    """RootfsPort: the sysroot repo's commits and the booted, pending and rollback deployments."""

    def __init__(self, faults: FaultPlan, *, booted: str | None) -> None:
        self._faults = faults
        self.commits: set[str] = {booted} if booted is not None else set()
        self.booted: str | None = booted
        self.pending: str | None = None
        self.rollback: str | None = None
        self.sizes: dict[str, int] = {}  # bytes a pull of the commit copies
        self.objects: dict[str, int] = {}  # file objects a deep check of the commit hashes
        self.pulled: list[str] = []
        self.deployed: list[str] = []
        self.prunes = 0
        self.sized: str | None = None  # the commit pull_size() sized last
        self.room: int | None = None  # bytes that fit beside the sized commit (None: any)
        self.fit_checks: list[int] = []  # the bytes each fits_beside() weighed beside it

    def kept_readings(self) -> AbstractContextManager[None]:
        return nullcontext()  # every answer is read from memory

    async def booted_commit(self) -> str | None:
        await self._faults.enter("rootfs.booted_commit")
        return self.booted

    async def pending_commit(self) -> str | None:
        await self._faults.enter("rootfs.pending_commit")
        return self.pending

    async def has_commit(self, commit: str) -> bool:
        await self._faults.enter("rootfs.has_commit")
        return commit in self.commits

    async def pull_size(self, *, source_repo: Path, commit: str) -> int:
        self.sized = None
        await self._faults.enter("rootfs.pull_size")
        self.sized = commit
        return 0 if commit in self.commits else self.sizes.get(commit, DEFAULT_COMMIT_BYTES)

    async def fits_beside(self, *, commit: str, beside: int) -> bool:
        await self._faults.enter("rootfs.fits_beside")
        self.fit_checks.append(beside)
        return self.sized == commit and (self.room is None or beside <= self.room)

    async def pull(
        self,
        *,
        source_repo: Path,
        commit: str,
        on_progress: ByteProgress | None = None,
        on_space_checked: Callable[[], None] | None = None,
    ) -> object:
        await self._faults.enter("rootfs.pull")  # the walk and the space check
        if on_space_checked is not None:
            on_space_checked()
        if commit in self.commits:  # as ostree: nothing to copy
            if on_progress is not None:
                on_progress(1, 1, f"commit {commit} already present")
            return None
        await self._faults.enter("rootfs.pull.copying")
        total = self.sizes.get(commit, DEFAULT_COMMIT_BYTES)
        for step in range(PROGRESS_STEPS + 1):
            if on_progress is not None:
                on_progress(total * step // PROGRESS_STEPS, total, f"copying {commit[:12]}")
        self.commits.add(commit)
        self.pulled.append(commit)
        return None

    async def deploy(self, *, commit: str) -> object:
        await self._faults.enter("rootfs.deploy")
        if commit not in self.commits:
            raise RootfsCopyError(f"commit {commit} is not in the sysroot repo: pull it first")
        self.deployed.append(commit)
        self.pending = None if commit == self.booted else commit
        await self._faults.enter("rootfs.deploy.after")
        return None

    async def prune(self) -> object:
        await self._faults.enter("rootfs.prune")
        self.prunes += 1
        kept = {self.booted, self.pending, self.rollback}
        self.commits = {c for c in self.commits if c in kept}
        return None

    async def verify_content(self, *, source_repo: Path, commit: str) -> int:
        await self._faults.enter("rootfs.verify_content")
        return self.objects.get(commit, DEFAULT_OBJECTS)

    def boot(self, *, rolled_back: bool = False) -> None:
        """The next boot: the pending deployment, unless the bootloader gives up on it."""
        if self.pending is not None and not rolled_back:
            self.rollback, self.booted = self.booted, self.pending
        self.pending = None


# ---- apps ---------------------------------------------------------------------------------


class FakeApps:
    """AppsPort: the device's app store (URIs) and the apps running (name -> URI)."""

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self.store: set[str] = set()
        self.running: dict[str, str] = {}
        self.sizes: dict[str, int] = {}  # bytes a stage of the app loads, by URI
        self.blobs: dict[str, int] = {}  # blobs a deep check of the app hashes, by URI
        self.failing: set[str] = set()  # URIs whose containers exit at once
        self.started: list[dict[str, str]] = []
        self.loaded: list[dict[str, str]] = []  # the images loaded into the engine, by call
        self.fail_on_cancel: BaseException | None = None  # what a cancelled load raises
        self.tells_copied = True  # copy() names each app once it is in (a port may not)
        self.retired: list[dict[str, str]] = []

    def total(self, apps: Mapping[str, str]) -> int:
        """The bytes a stage of ``apps`` copies."""
        return sum(self.sizes.get(uri, DEFAULT_APP_BYTES) for uri in set(apps.values()))

    async def ready(self) -> None:
        await self._faults.enter("apps.ready")

    async def stage_size(self, src_store: Path, apps: Mapping[str, str]) -> int:
        await self._faults.enter("apps.stage_size")
        return self.total(apps)

    async def copy(
        self,
        src_store: Path,
        apps: Mapping[str, str],
        *,
        progress: ByteProgress | None = None,
        on_copied: Callable[[str], None] | None = None,
    ) -> None:
        await self._faults.enter("apps.copy")
        total = self.total(apps)
        names = sorted(apps)
        copied = 0
        for step in range(PROGRESS_STEPS + 1):
            if progress is not None:
                progress(total * step // PROGRESS_STEPS, total, f"copying {len(apps)} apps")
            # An app is in the store once its share of the bytes is.
            while copied < len(names) and step * len(names) >= (copied + 1) * PROGRESS_STEPS:
                name = names[copied]
                self.store.add(apps[name])
                copied += 1
                if on_copied is not None and self.tells_copied:
                    on_copied(name)
                await self._faults.enter("apps.copy.app_copied")

    async def load(self, apps: Mapping[str, str], *, progress: ByteProgress | None = None) -> None:
        try:
            await self._faults.enter("apps.load")
        except asyncio.CancelledError:
            if self.fail_on_cancel is not None:  # as a load cleaning up after itself can
                raise self.fail_on_cancel from None
            raise
        if missing := sorted(name for name, uri in apps.items() if uri not in self.store):
            raise AppsContentMissingError(f"apps not in the device store: {', '.join(missing)}")
        total = self.total(apps)
        if progress is not None:
            progress(total, total, f"loaded {len(apps)} apps")
        self.loaded.append(dict(apps))

    async def start(self, apps: Mapping[str, str]) -> None:
        await self._faults.enter("apps.start")
        self.started.append(dict(apps))
        missing = sorted(name for name, uri in apps.items() if uri not in self.store)
        if missing:
            raise AppsContentMissingError(f"apps not in the device store: {', '.join(missing)}")
        failed = []
        for name, uri in apps.items():
            if uri in self.failing:
                self.running.pop(name, None)
                failed.append(name)
            else:
                self.running[name] = uri
        if failed:
            raise AppsRunError(f"apps do not run: {', '.join(sorted(failed))} exited with 1")

    async def in_place(self, apps: Mapping[str, str]) -> bool:
        await self._faults.enter("apps.in_place")
        return set(self.running) <= set(apps) and all(
            self.running.get(name) == uri for name, uri in apps.items()
        )

    async def retire(self, keep: Mapping[str, str]) -> None:
        await self._faults.enter("apps.retire")
        self.retired.append(dict(keep))
        self.running = {name: uri for name, uri in self.running.items() if name in keep}
        self.store &= set(keep.values())

    async def states(self, apps: Mapping[str, str]) -> dict[str, str]:
        await self._faults.enter("apps.states")
        return {
            name: "running" if self.running.get(name) == uri else "not running"
            for name, uri in apps.items()
        }

    async def verify_content(self, src_store: Path, apps: Mapping[str, str]) -> tuple[int, int]:
        await self._faults.enter("apps.verify_content")
        return len(apps), sum(self.blobs.get(uri, DEFAULT_BLOBS) for uri in apps.values())


# ---- host ---------------------------------------------------------------------------------


class FakeServices:
    """ServicesPort: units and their active state; every job, in order."""

    def __init__(self, faults: FaultPlan, units: Mapping[str, str] | None = None) -> None:
        self._faults = faults
        self.units: dict[str, str] = dict(units or {})  # name -> active state
        self.jobs: list[tuple[str, str]] = []  # ("stop" | "start" | "restart", unit)
        self.is_available = True
        self.closed = False

    @property
    def available(self) -> bool:
        return self.is_available

    def running(self, name: str) -> bool:
        return self.units.get(name) == "active"

    async def unit_state(self, name: str) -> UnitState:
        await self._faults.enter("services.unit_state")
        if name not in self.units:
            return UnitState(name=name, load_state="not-found", active_state="inactive")
        return UnitState(name=name, load_state="loaded", active_state=self.units[name])

    async def stop_unit(self, name: str) -> None:
        await self._faults.enter("services.stop_unit")
        self.jobs.append(("stop", name))
        if name in self.units:
            self.units[name] = "inactive"

    async def start_unit(self, name: str) -> None:
        await self._faults.enter("services.start_unit")
        self.jobs.append(("start", name))
        self.units[name] = "active"

    async def restart_unit(self, name: str) -> None:
        await self._faults.enter("services.restart_unit")
        self.jobs.append(("restart", name))
        self.units[name] = "active"

    async def close(self) -> None:
        self.closed = True


class FakeRebootMarker:
    """RebootPort: the marker on /run, which a reboot empties."""

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self.marked = False
        self.inhibitors: list[str] = []  # shutdowns held off, and why

    async def mark_needed(self) -> None:
        await self._faults.enter("reboot.mark_needed")
        self.marked = True

    async def needed(self) -> bool:
        await self._faults.enter("reboot.needed")
        return self.marked

    @asynccontextmanager
    async def inhibit(self, why: str) -> AsyncIterator[None]:
        self.inhibitors.append(why)
        try:
            yield
        finally:
            self.inhibitors.remove(why)


class FakeLock:
    """LockPort: one holder at a time; ``other_tool`` holds it for aktualizr-lite's tools."""

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self.other_tool = False
        self.held = False
        self.taken = 0

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        await self._faults.enter("lock.hold")
        if self.other_tool or self.held:
            raise LockHeldError(
                "/var/lock/aklite.lock: another aklite tool holds the update lock "
                "(is aktualizr-lite running? stop it first)"
            )
        self.held = True
        self.taken += 1
        try:
            yield
        finally:
            self.held = False


class FakeCurrentTargetFile:
    """CurrentTargetPort: every target written to /var/sota/current-target, in order."""

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self.written: list[Target] = []

    @property
    def target(self) -> Target | None:
        return self.written[-1] if self.written else None

    async def write(self, target: Target) -> None:
        await self._faults.enter("current_file.write")
        self.written.append(target)


class RecordingObserver:
    """EngineObserver: phases and progress, each alone and in one timeline."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.details: list[dict[str, Any]] = []
        self.progress: list[tuple[int, str]] = []
        self.timeline: list[Phase | int] = []

    def on_phase(self, phase: Phase, detail: Mapping[str, Any]) -> None:
        self.phases.append(phase)
        self.details.append(dict(detail))
        self.timeline.append(phase)

    def on_progress(self, percent: int, message: str) -> None:
        self.progress.append((percent, message))
        self.timeline.append(percent)

    def clear(self) -> None:
        self.phases.clear()
        self.details.clear()
        self.progress.clear()
        self.timeline.clear()


# ---- the device -------------------------------------------------------------------------


class FakeDevice:
    """Everything a device keeps across processes, behind the engine's ports."""

    def __init__(self, *, booted: str | None = FACTORY_COMMIT, aklite_running: bool = True) -> None:
        self.faults = FaultPlan()
        self.trust = FakeTrust(self.faults)
        self.rootfs = FakeRootfs(self.faults, booted=booted)
        self.apps = FakeApps(self.faults)
        self.services = FakeServices(
            self.faults, {AKLITE_UNIT: "active" if aklite_running else "inactive"}
        )
        self.reboot_marker = FakeRebootMarker(self.faults)
        self.lock = FakeLock(self.faults)
        self.current_file = FakeCurrentTargetFile(self.faults)

    def engine(
        self,
        journal: Journal,
        *,
        observer: EngineObserver | None = None,
        checkpoint: Checkpoint | None = None,
        settings: EngineSettings | None = None,
    ) -> Engine:
        return Engine(
            journal=journal,
            trust=self.trust,
            rootfs=self.rootfs,
            apps=self.apps,
            services=self.services,
            reboot=self.reboot_marker,
            lock=self.lock,
            current_file=self.current_file,
            settings=settings,
            observer=observer,
            checkpoint=checkpoint,
        )

    @property
    def aklite_running(self) -> bool:
        return self.services.running(AKLITE_UNIT)

    def reboot(self, *, rolled_back: bool = False) -> None:
        """Boot the pending deployment (or, ``rolled_back``, the booted one again); /run is
        emptied, so the reboot marker is gone. Running apps come back (restart policies)."""
        self.rootfs.boot(rolled_back=rolled_back)
        self.reboot_marker.marked = False


class Rig:
    """A device, its journal file and the engine of the "process" that runs now.

    The journal is read and reopened off the event loop, as the engine itself does (the
    suite's blockbuster fixture fails an async test in which aklited's code blocks the loop).
    """

    def __init__(self, root: Path, device: FakeDevice | None = None) -> None:
        self.root = root
        self.db_path = root / "var/sota/aklited.db"
        self.device = device or FakeDevice()
        self.observer = RecordingObserver()
        self.journal = Journal.open(self.db_path)
        self.engine = self.device.engine(self.journal, observer=self.observer)

    @classmethod
    async def open(cls, root: Path, device: FakeDevice | None = None) -> Rig:
        return await asyncio.to_thread(cls, root, device)

    async def restart(self, *, checkpoint: Checkpoint | None = None) -> Engine:
        """The next process: the journal file opened again, a new engine on the same device."""
        await asyncio.to_thread(self.journal.close)
        self.journal = await asyncio.to_thread(Journal.open, self.db_path)
        self.engine = self.device.engine(
            self.journal, observer=self.observer, checkpoint=checkpoint
        )
        return self.engine

    def close(self) -> None:
        self.journal.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.journal.close)

    def bundle(
        self, target: Target, *, name: str | None = None, stored_metadata_used: str | None = None
    ) -> Path:
        """A bundle offering ``target`` on the "drive"; its path."""
        path = (self.root / "media" / (name or target.name)).resolve()
        self.device.trust.publish(path, Selection(target, stored_metadata_used))
        return path

    async def update_to(self, target: Target) -> Path:
        """A whole update: install, reboot or dockerd restart, run (0)."""
        bundle = self.bundle(target)
        installed = await self.engine.install(bundle)
        if installed.code == StatusCode.NEEDS_REBOOT:
            self.device.reboot()
        assert installed.code in (StatusCode.NEEDS_REBOOT, StatusCode.NEEDS_DOCKER_RESTART)
        ran = await self.engine.run()
        assert ran.code == StatusCode.OK, ran
        return bundle

    # ---- what the journal says ----

    async def installs(self) -> list[InstallRecord]:
        return await asyncio.to_thread(self.journal.installs)

    async def events(self, install_id: int | None = None) -> list[Event]:
        return await asyncio.to_thread(self.journal.events, install_id)

    async def latest(self) -> InstallRecord:
        latest = await asyncio.to_thread(self.journal.latest_install)
        assert latest is not None
        return latest

    async def current(self) -> InstallRecord:
        current = await asyncio.to_thread(self.journal.current_install)
        assert current is not None
        return current

    async def states(self, install_id: int) -> list[str]:
        return [event.state for event in await self.events(install_id)]

    async def failures(self, install_id: int) -> list[tuple[str, object]]:
        """The ``<phase>-failed`` events of an install: (state, code)."""
        return [
            (e.state, e.detail.get("code"))
            for e in await self.events(install_id)
            if e.state.endswith("-failed")
        ]

    async def aklite_setting(self) -> str | None:
        return await asyncio.to_thread(self.journal.get_setting, AKLITE_WAS_RUNNING_KEY)


async def assert_settled_on(rig: Rig, target: Target, *, code: StatusCode = StatusCode.OK) -> None:
    """The device runs ``target``, as journal, sysroot, apps, current-target and aktualizr-lite
    agree, and nothing of an update is left in flight or pending.

    ``code`` other than 0: the latest install failed with it and ``target`` stayed current.
    """
    device = rig.device
    current = await rig.current()
    assert (current.target_name, current.ostree_commit) == (target.name, target.ostree_commit)
    assert current.state == Phase.CURRENT
    for install in await rig.installs():
        assert install.state in {Phase.CURRENT, Phase.FAILED, Phase.ABANDONED}, install
    latest = await rig.latest()
    if code != StatusCode.OK:
        assert (latest.state, latest.result_code) == (Phase.FAILED, code)
    assert device.rootfs.booted == target.ostree_commit
    assert device.rootfs.pending is None
    assert not device.reboot_marker.marked
    assert device.apps.running == dict(target.apps)
    written = device.current_file.target
    assert written is not None
    assert (written.name, written.version) == (target.name, target.version)
    assert device.aklite_running
    assert await rig.aklite_setting() is None
    assert not device.lock.held
