"""The update engine: ``check``, ``install``, ``run`` (finalize after boot) and ``current``.

Every step is a journal transition written before its side effect (``Journal.record``), so a
process killed at any point leaves a journal that names the step under way. Each call first
settles whatever an earlier, interrupted call left behind:

* interrupted before the deployment (verifying, pulling, staging apps): the install is
  abandoned; nothing on the device changed that a new install would not redo (OSTree and the
  app store keep what was already copied, so the next pull resumes);
* interrupted while deploying: the sysroot tells whether the deployment happened; if it did,
  the install waits for the reboot as if nothing had happened (and ``install`` reports 100);
* interrupted while finalizing or rolling back: ``run`` picks the step up again.

Any failure, cancellation included, is journalled, ends the install and starts
aktualizr-lite again when the install had stopped it. The engine talks to OSTree, apps,
systemd, the trust workflow and the host only through the protocols in
:mod:`aklited.engine.ports`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import structlog

from aklited.engine.journal import InstallRecord, Journal
from aklited.engine.model import (
    CheckResult,
    ContentReport,
    GuardTarget,
    InstalledTarget,
    Outcome,
    Selection,
    Target,
)
from aklited.engine.phases import IN_FLIGHT, PENDING, Phase
from aklited.engine.ports import (
    AppsPort,
    CurrentTargetPort,
    EngineObserver,
    LockPort,
    NullObserver,
    RebootPort,
    RootfsPort,
    ServicesPort,
    TrustPort,
)
from aklited.errors import (
    AkliteError,
    AppsError,
    BusyError,
    CancelledInstallError,
    InternalError,
    PendingInstallError,
    RootfsError,
)
from aklited.outcomes import StatusCode
from aklited.tasks import await_beside, side_by_side, stop_tasks, to_completion

log = structlog.get_logger(__name__)

# What a Compose App's images take once dockerd has unpacked them, against their blobs (gzip
# layers unpack to about two to three times their size): room an early load must leave.
UNPACKED_RATIO = 3

T = TypeVar("T")

AKLITE_UNIT = "aktualizr-lite.service"
AKLITE_WAS_RUNNING_KEY = "aktualizr-lite-was-running"
# The journal's name for the factory image, recorded before the first offline update.
INITIAL_TARGET = "initial-target"

# Called right after each journal write, before the step it announces acts. Tests pass one
# that stops the engine there, to prove recovery from a crash at every phase.
Checkpoint = Callable[[Phase], None]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    aklite_unit: str = AKLITE_UNIT


def _expected(error: BaseException) -> AkliteError:
    """Every failure as an AkliteError: a foreign one is logged with its traceback (debug)."""
    if isinstance(error, asyncio.CancelledError):
        return CancelledInstallError("the update was cancelled")
    wrapped = InternalError.wrap(error)
    if wrapped is not error:
        log.debug("unexpected failure", exc_info=error)
    return wrapped


def _reraise(err: AkliteError, original: BaseException) -> NoReturn:
    # Cancellation stays cancellation for the caller (asyncio relies on it).
    if err is original or isinstance(original, asyncio.CancelledError):
        raise original
    raise err from original


def _raised(task: asyncio.Future[Any], error: BaseException) -> bool:
    return task.done() and not task.cancelled() and task.exception() is error


def _succeeded(task: asyncio.Future[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _target(record: InstallRecord) -> Target:
    tag = record.custom.get("aklited-tag")
    return Target(
        name=record.target_name,
        version=record.version,
        ostree_commit=record.ostree_commit,
        apps=dict(record.apps),
        custom=dict(record.custom),
        tag=tag if isinstance(tag, str) else None,
    )


def _installed(
    record: InstallRecord,
    *,
    app_states: Mapping[str, str] | None = None,
    booted_commit: str | None = None,
) -> InstalledTarget:
    return InstalledTarget(
        name=record.target_name,
        version=record.version,
        ostree_commit=record.ostree_commit,
        apps=dict(record.apps),
        app_states=dict(app_states or {}),
        booted_commit=booted_commit,
        initial=record.target_name == INITIAL_TARGET,
    )


def _guard(record: InstallRecord | None) -> GuardTarget | None:
    """The running target the downgrade guard protects; the factory image has no version."""
    if record is None or record.target_name == INITIAL_TARGET:
        return None
    return GuardTarget(name=record.target_name, version=record.version)


class _Progress:
    """One overall percentage over the steps that copy, weighted by their bytes."""

    def __init__(self, observer: EngineObserver, *, apps_bytes: int, rootfs_bytes: int) -> None:
        self._observer = observer
        self._apps_total = apps_bytes
        self._rootfs = (0, rootfs_bytes)  # (done, total): the pull reports its own total
        self._apps_done = 0
        self._last: tuple[int, str] = (0, "")

    def rootfs(self, done: int, total: int, message: str) -> None:
        self._rootfs = (done, total)
        self._report(message)

    def apps(self, done: int, _total: int, message: str) -> None:
        self._apps_done = done
        self._report(message)

    def note(self, _done: int, _total: int, message: str) -> None:
        """A step's news without bytes of its own (an app's load, beside the copies)."""
        self._report(message)

    @property
    def apps_total(self) -> int:
        """The apps' bytes as sized before the copy (0: none, or not known)."""
        return self._apps_total

    @property
    def apps_left(self) -> int:
        """The apps' bytes the copy has yet to write."""
        return max(0, self._apps_total - self._apps_done)

    def _report(self, message: str) -> None:
        done = self._rootfs[0] + self._apps_done
        total = self._rootfs[1] + self._apps_total
        percent = min(100, done * 100 // total) if total > 0 else 0
        # Never backwards (a step's total becomes known when it starts); a new message
        # at the same percentage is news, the same one is not.
        percent = max(percent, self._last[0])
        if (percent, message) == self._last:
            return
        self._last = (percent, message)
        try:
            self._observer.on_progress(percent, message)
        except Exception:  # a broken display must not break the update
            log.exception("progress observer failed")


class _AppLoads:
    """The loads of a target's apps, each begun once :meth:`copied` says its app is in the
    device store: the loads of different apps run side by side, beside the rest of the copy.

    ``wait_for_room(name)``, if given, is awaited before an app's load begins.
    """

    def __init__(
        self,
        port: AppsPort,
        apps: Mapping[str, str],
        progress: _Progress,
        wait_for_room: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._port = port
        self._apps = apps
        self._progress = progress
        self._wait_for_room = wait_for_room
        self._in_store = {name: asyncio.Event() for name in apps}
        self.loaded: set[str] = set()

    def copied(self, name: str) -> None:
        if name in self._in_store:
            self._in_store[name].set()

    def all_copied(self) -> None:
        for event in self._in_store.values():
            event.set()

    async def run(self) -> None:
        # The tasks are made here: a cancellation before this runs leaves none behind.
        await side_by_side(
            *(asyncio.ensure_future(self._load(name)) for name in sorted(self._apps))
        )

    async def _load(self, name: str) -> None:
        await self._in_store[name].wait()
        if self._wait_for_room is not None:
            await self._wait_for_room(name)
        await self._port.load({name: self._apps[name]}, progress=self._progress.note)
        self.loaded.add(name)


class Engine:
    """Drives offline updates: one call at a time per device (busy, then the update lock)."""

    def __init__(
        self,
        *,
        journal: Journal,
        trust: TrustPort,
        rootfs: RootfsPort,
        apps: AppsPort,
        services: ServicesPort,
        reboot: RebootPort,
        lock: LockPort,
        current_file: CurrentTargetPort,
        settings: EngineSettings | None = None,
        observer: EngineObserver | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self._journal = journal
        self._trust = trust
        self._rootfs = rootfs
        self._apps = apps
        self._services = services
        self._reboot = reboot
        self._lock = lock
        self._current_file = current_file
        self._settings = settings or EngineSettings()
        self._observer: EngineObserver = observer or NullObserver()
        self._checkpoint = checkpoint
        self._busy = False
        # Failures already journalled by the step they broke (not journalled twice).
        self._journalled: list[BaseException] = []

    # ---- one call at a time -------------------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        # Checked before the flock: in this process the flock would blame another tool.
        if self._busy:
            raise BusyError("an update is already running")
        self._busy = True
        try:
            # Under the update lock nothing but this call changes the deployments: one
            # reading of them serves the whole call.
            async with self._lock.hold():
                with self._rootfs.kept_readings():
                    yield
        finally:
            self._busy = False
            self._journalled.clear()

    async def _cleanup(
        self, action: Callable[[], Awaitable[object]], failure: BaseException
    ) -> None:
        """Run a clean-up while ``failure`` propagates; its own failure must not replace it."""
        try:
            await action()
        except (Exception, asyncio.CancelledError) as e:
            log.warning("clean-up after a failure failed too", error=str(_expected(e)))
            failure.add_note(f"and then: {_expected(e)}")

    # ---- journal helpers --------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # SQLite commits with synchronous=FULL fsync: keep them off the loop.
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _announce(self, phase: Phase, detail: Mapping[str, Any]) -> None:
        try:
            self._observer.on_phase(phase, detail)
        except Exception:  # a broken display must not break the update
            log.exception("phase observer failed")
        if self._checkpoint is not None:
            self._checkpoint(phase)

    async def _record(self, install_id: int | None, phase: Phase, **detail: Any) -> None:
        await self._db(self._journal.record, install_id, str(phase), **detail)
        ids = {"install": install_id} if install_id is not None else {}  # none yet: verifying
        log.info("transition", state=str(phase), **ids, **detail)
        self._announce(phase, detail)

    async def _finish(
        self,
        install: InstallRecord,
        phase: Phase,
        code: StatusCode,
        message: str,
        *,
        make_current: bool = False,
    ) -> None:
        await self._db(
            self._journal.finish_install,
            install.id,
            state=str(phase),
            result_code=int(code),
            result_message=message,
            make_current=make_current,
        )
        log.info("transition", state=str(phase), install=install.id, code=int(code))
        self._announce(phase, {"code": int(code), "message": message})

    async def _step(
        self,
        install: InstallRecord,
        phase: Phase,
        action: Callable[[], Awaitable[T]],
        **detail: Any,
    ) -> T:
        """Record ``phase``, then act; a failure is journalled as an event of its own."""
        await self._record(install.id, phase, **detail)
        try:
            return await action()
        except (Exception, asyncio.CancelledError) as e:
            err = _expected(e)
            await self._cleanup(partial(self._journal_failure, install.id, phase, e, err), e)
            _reraise(err, e)

    async def _journal_failure(
        self,
        install_id: int | None,
        phase: Phase | None,
        error: BaseException,
        err: AkliteError | None = None,
    ) -> None:
        """Append ``<phase>-failed`` with the outcome the failure carries (``err``)."""
        err = err or _expected(error)
        self._journalled.extend((error, err))
        await self._db(
            self._journal.record_failure,
            install_id,
            str(phase) if phase is not None else "unknown",
            code=int(err.code),
            error=str(err),
        )

    async def _latest(self) -> InstallRecord | None:
        return await self._db(self._journal.latest_install)

    # ---- aktualizr-lite ---------------------------------------------------------------------

    async def _stop_aklite(self, install: InstallRecord) -> None:
        unit = self._settings.aklite_unit
        state = await self._services.unit_state(unit)
        if not state.running:
            return
        # Remember first: if we die right after stopping it, the next run restarts it.
        await self._db(self._journal.set_setting, AKLITE_WAS_RUNNING_KEY, "1")
        await self._step(
            install, Phase.STOPPING_AKLITE, lambda: self._services.stop_unit(unit), unit=unit
        )

    async def _restart_aklite_unless_pending(self) -> None:
        """aktualizr-lite stays stopped only while an update of ours waits (DESIGN 8)."""
        latest = await self._latest()
        if latest is None or latest.state not in PENDING:
            await self._restart_aklite_if_it_ran()

    async def _restart_aklite_if_it_ran(self) -> None:
        if await self._db(self._journal.get_setting, AKLITE_WAS_RUNNING_KEY) != "1":
            return
        unit = self._settings.aklite_unit
        await self._services.start_unit(unit)
        await self._db(self._journal.set_setting, AKLITE_WAS_RUNNING_KEY, None)
        log.info("service started again", unit=unit)

    # ---- what the device runs ---------------------------------------------------------------

    async def _current_record(self, *, create: bool) -> InstallRecord | None:
        """The current install; on first use, one made from the booted deployment."""
        current = await self._db(self._journal.current_install)
        if current is not None or not create:
            return current
        booted = await self._rootfs.booted_commit()
        if booted is None:
            return None
        initial = await self._db(
            self._journal.begin_install,
            target_name=INITIAL_TARGET,
            version=0,
            ostree_commit=booted,
            apps={},
            state=str(Phase.INITIAL),
        )
        await self._db(
            self._journal.finish_install,
            initial.id,
            state=str(Phase.CURRENT),
            result_code=0,
            result_message="the target the device booted before its first offline update",
            make_current=True,
        )
        return await self._db(self._journal.current_install)

    async def current(self) -> InstalledTarget:
        """The target the device runs, its apps' states and the booted commit."""
        record = await self._db(self._journal.current_install)
        booted = await self._rootfs.booted_commit()
        if record is None:
            return InstalledTarget(
                name=INITIAL_TARGET if booted else "unknown",
                version=0,
                ostree_commit=booted or "",
                apps={},
                app_states={},
                booted_commit=booted,
                initial=True,
            )
        states = await self._apps.states(record.apps) if record.apps else {}
        return _installed(record, app_states=states, booted_commit=booted)

    async def missing_parts(self) -> list[AkliteError]:
        """What the device lacks for some updates (no Docker engine answers, ...), each as
        the error an update that needs it raises; empty when nothing is missing."""
        try:
            await self._apps.ready()
        except Exception as e:  # said at start, never a reason not to start
            return [InternalError.wrap(e) if not isinstance(e, AkliteError) else e]
        return []

    async def pending(self) -> tuple[Target, Phase] | None:
        """The install waiting for a reboot, a dockerd restart or its finalize, and where."""
        latest = await self._latest()
        if latest is None or latest.state not in PENDING:
            return None
        return _target(latest), Phase(latest.state)

    # ---- check ------------------------------------------------------------------------------

    async def check(self, src_dir: Path, *, deep: bool = False) -> CheckResult:
        """Verify the bundle and tell what an install would do; change nothing.

        ``deep`` also verifies every byte an install would: the OSTree commit object by
        object and every app blob, manifest and archive.

        Raises:
            AkliteError: 4, 6, 8, 11, 12, 14, 15, 20, 102; with ``deep`` also 50 and 70.
        """
        record = await self._db(self._journal.current_install)
        selection = await self._trust.select(
            src_dir, target_name=None, force=False, guard=_guard(record), persist=False
        )
        target = selection.target
        content = await self._verify_content(src_dir, target) if deep else None
        current = _installed(record) if record is not None else None
        same = current is not None and current.name == target.name
        # Or the device runs that target without a record of it (its factory image, say).
        runs_it = same or (
            target.ostree_commit == await self._booted_if_known()
            and await self._apps_in_place_if_known(target.apps)
        )
        return CheckResult(
            code=StatusCode.OK if runs_it else StatusCode.UPDATE_AVAILABLE,
            target=target,
            current=current,
            stored_metadata_used=selection.stored_metadata_used,
            content=content,
        )

    async def _apps_in_place_if_known(self, apps: Mapping[str, str]) -> bool:
        """Whether the apps are in place; False when Docker cannot say (a check then offers
        the target, and an install finds out)."""
        try:
            return await self._apps.in_place(apps)
        except AppsError as e:
            log.info("apps' state unknown", error=str(e))
            return False

    async def _booted_if_known(self) -> str | None:
        """The booted commit, or None when the sysroot cannot say (a check needs no sysroot:
        it then offers the target, and an install finds out)."""
        try:
            return await self._rootfs.booted_commit()
        except RootfsError as e:
            log.info("booted commit unknown", error=str(e))
            return None

    async def _verify_content(self, src_dir: Path, target: Target) -> ContentReport:
        objects = await self._rootfs.verify_content(
            source_repo=src_dir / "ostree_repo", commit=target.ostree_commit
        )
        apps, blobs = (
            await self._apps.verify_content(src_dir / "apps", target.apps)
            if target.apps
            else (0, 0)
        )
        return ContentReport(objects=objects, apps=apps, blobs=blobs)

    # ---- recovery ---------------------------------------------------------------------------

    async def _recover(self) -> InstallRecord | None:
        """Settle an install an earlier process left half-way; return it if still pending."""
        latest = await self._latest()
        if latest is None or latest.state not in IN_FLIGHT:
            return latest if latest is not None and latest.state in PENDING else None
        if await self._took_effect(latest):
            log.warning(
                "resuming an install interrupted after its deployment", target=latest.target_name
            )
            await self._reboot.mark_needed()
            await self._record(latest.id, Phase.AWAITING_REBOOT, resumed=True)
            return await self._db(self._journal.get_install, latest.id)
        log.warning(
            "abandoning an interrupted install", target=latest.target_name, state=latest.state
        )
        await self._finish(
            latest,
            Phase.ABANDONED,
            StatusCode.UNKNOWN_ERROR,
            f"interrupted while {latest.state}; nothing was deployed",
        )
        return None

    # ---- install ----------------------------------------------------------------------------

    async def install(
        self, src_dir: Path, *, target_name: str | None = None, force: bool = False
    ) -> Outcome:
        """Verify the bundle at ``src_dir`` and install its target.

        Returns 100 (deployed: reboot, then run), 101 (apps staged: restart dockerd, then
        run) or 0 (already installed). Raises AkliteError for every failure: 30 when an
        update is already running here or another install is pending.
        """
        started = time.monotonic()
        async with self._exclusive():
            before: InstallRecord | None = None
            try:
                before = await self._current_record(create=True)
                src = await asyncio.to_thread(src_dir.resolve)
                outcome = await self._install_locked(src, target_name, force=force)
            except (Exception, asyncio.CancelledError) as e:
                err = _expected(e)
                self._summary("install", before, Outcome(err.code, str(err)), started)
                _reraise(err, e)
            self._summary("install", before, outcome, started)
            return outcome

    async def _install_locked(
        self, src_dir: Path, target_name: str | None, *, force: bool
    ) -> Outcome:
        pending = await self._recover()
        if pending is not None:
            return self._pending_outcome(pending, src_dir, target_name)
        try:
            outcome = await self._install_new(src_dir, target_name, force=force)
        except (Exception, asyncio.CancelledError) as e:
            # Nothing of ours is pending: aktualizr-lite must not stay stopped (an install
            # abandoned above, or this one, may have stopped it).
            await self._cleanup(self._restart_aklite_unless_pending, e)
            raise
        await self._restart_aklite_unless_pending()  # e.g. already installed
        return outcome

    async def _install_new(self, src_dir: Path, target_name: str | None, *, force: bool) -> Outcome:
        current = await self._current_record(create=True)
        await self._record(None, Phase.VERIFYING, src_dir=str(src_dir))
        try:
            selection: Selection = await self._trust.select(
                src_dir,
                target_name=target_name or None,
                force=force,
                guard=_guard(current),
                persist=True,
            )
        except (Exception, asyncio.CancelledError) as e:
            await self._cleanup(partial(self._journal_failure, None, Phase.VERIFYING, e), e)
            raise
        target = selection.target
        booted = await self._rootfs.booted_commit()
        rootfs_changes = target.ostree_commit != booted
        try:
            if target.apps:
                # Before aktualizr-lite is stopped or a byte is copied: without a Docker
                # engine the install could only fail half-way.
                await self._apps.ready()
            runs_it = not rootfs_changes and await self._apps.in_place(target.apps)
        except (Exception, asyncio.CancelledError) as e:
            await self._cleanup(partial(self._journal_failure, None, Phase.VERIFYING, e), e)
            raise
        if runs_it:
            if current is not None and current.target_name == target.name:
                message = f"{target.name} is already installed"
                if selection.stored_metadata_used:
                    message += f"; {selection.stored_metadata_used}"
                return Outcome(StatusCode.OK, message, target.name)
            return await self._adopt(target, src_dir, current)
        install = await self._begin(target, src_dir, current)
        self._announce(Phase.STARTED, {"target": target.name})
        try:
            return await self._install_steps(
                install, target, src_dir, rootfs_changes=rootfs_changes
            )
        except (Exception, asyncio.CancelledError) as e:
            if rootfs_changes and await self._deployed_anyway(install, target, e):
                if isinstance(e, asyncio.CancelledError):
                    raise  # settled as awaiting the reboot; the caller still asked to stop
                return Outcome(StatusCode.NEEDS_REBOOT, f"{target.name} is deployed", target.name)
            err = _expected(e)
            await self._cleanup(partial(self._settle_failed, install, e, err), e)
            _reraise(err, e)

    async def _begin(
        self, target: Target, src_dir: Path, current: InstallRecord | None
    ) -> InstallRecord:
        """The journal's row for an install of ``target`` from ``src_dir``, started."""
        return await self._db(
            self._journal.begin_install,
            target_name=target.name,
            version=target.version,
            ostree_commit=target.ostree_commit,
            apps=dict(target.apps),
            custom={**target.custom, "aklited-tag": target.tag},
            src_dir=str(src_dir),
            previous_id=current.id if current is not None else None,
            state=str(Phase.STARTED),
        )

    async def _adopt(self, target: Target, src_dir: Path, current: InstallRecord | None) -> Outcome:
        """The device already runs ``target`` (a drive made for the fleet meets a device on
        its factory image, say): record it as current, with nothing to install."""
        install = await self._begin(target, src_dir, current)
        message = f"the device already runs {target.name}"
        await self._finish(install, Phase.CURRENT, StatusCode.OK, message, make_current=True)
        await self._current_file.write(target)
        return Outcome(StatusCode.OK, message, target.name)

    async def _settle_failed(
        self, install: InstallRecord, error: BaseException, err: AkliteError
    ) -> None:
        if not any(error is done for done in self._journalled):
            latest = await self._db(self._journal.get_install, install.id)
            await self._journal_failure(install.id, Phase(latest.state) if latest else None, error)
        await self._finish(install, Phase.FAILED, err.code, str(err))

    async def _took_effect(self, record: InstallRecord) -> bool:
        """The install was deploying, and its commit is the one the next boot runs."""
        return (
            record.state == Phase.DEPLOYING
            and await self._rootfs.pending_commit() == record.ostree_commit
        )

    async def _deployed_anyway(
        self, install: InstallRecord, target: Target, error: BaseException
    ) -> bool:
        """True when the deployment took effect although its step failed after it.

        The next boot runs the new rootfs whatever the step said, so the install waits for
        that reboot, as when a process killed after the deployment is resumed.
        """
        latest = await self._db(self._journal.get_install, install.id)
        try:
            if latest is None or not await self._took_effect(latest):
                return False
        except Exception as e:
            log.warning("cannot tell whether the deployment took effect", error=str(_expected(e)))
            return False
        try:
            await self._reboot.mark_needed()
        except Exception as e:
            # Still better than a failed install whose rootfs boots next: after the reboot,
            # run finalizes it; only a run before the reboot would misjudge it.
            log.warning("cannot mark the reboot as needed", error=str(_expected(e)))
        log.warning(
            "the deployment took effect although its step failed",
            target=target.name,
            error=str(_expected(error)),
        )
        await self._record(install.id, Phase.AWAITING_REBOOT, resumed=True)
        return True

    async def _install_steps(
        self, install: InstallRecord, target: Target, src_dir: Path, *, rootfs_changes: bool
    ) -> Outcome:
        await self._stop_aklite(install)
        # Both sizes before either copy starts: the progress weighs every step from the first.
        # Taken side by side: one waits on `docker compose config`, the other on the drive.
        sizing_rootfs = asyncio.ensure_future(self._pull_size(target, src_dir, rootfs_changes))
        try:
            apps_bytes, rootfs_bytes = await side_by_side(
                asyncio.ensure_future(self._apps_size(target, src_dir)), sizing_rootfs
            )
        except RootfsError as e:
            if sizing_rootfs.done() and not sizing_rootfs.cancelled():
                await self._cleanup(partial(self._journal_failure, install.id, Phase.PULLING, e), e)
            raise
        progress = _Progress(self._observer, apps_bytes=apps_bytes, rootfs_bytes=rootfs_bytes)
        if not rootfs_changes:
            return await self._stage_apps_only(install, target, src_dir, progress)
        # A shutdown half-way through the copy or the deployment would cost the update.
        async with self._reboot.inhibit(f"installing {target.name}"):
            return await self._copy_and_deploy(install, target, src_dir, progress)

    async def _stage_apps_only(
        self, install: InstallRecord, target: Target, src_dir: Path, progress: _Progress
    ) -> Outcome:
        await self._step(
            install,
            Phase.STAGING_APPS,
            lambda: self._copy_then_load(target, src_dir, progress),
            apps=sorted(target.apps),
        )
        await self._record(install.id, Phase.AWAITING_DOCKER_RESTART)
        return Outcome(
            StatusCode.NEEDS_DOCKER_RESTART, f"apps of {target.name} are staged", target.name
        )

    async def _copy_then_load(self, target: Target, src_dir: Path, progress: _Progress) -> None:
        loads = _AppLoads(self._apps, target.apps, progress)
        loading = asyncio.ensure_future(loads.run())
        await self._copy_beside(target, src_dir, progress, loads, loading)
        await loading

    async def _copy_beside(
        self,
        target: Target,
        src_dir: Path,
        progress: _Progress,
        loads: _AppLoads,
        loading: asyncio.Future[None],
    ) -> None:
        """Copy the apps while their loads begin as each is in the store; a failed load
        stops the copy, a failed copy the loads (``loading`` runs on past a copy that ends
        well)."""
        copying = asyncio.ensure_future(
            self._apps.copy(
                src_dir / "apps", target.apps, progress=progress.apps, on_copied=loads.copied
            )
        )
        await await_beside(copying, loading)
        loads.all_copied()  # the copy ended well: every app is in the store

    async def _copy_and_deploy(
        self, install: InstallRecord, target: Target, src_dir: Path, progress: _Progress
    ) -> Outcome:
        if target.apps:
            await self._stage_and_pull(install, target, src_dir, progress)
        else:
            await self._step(
                install,
                Phase.PULLING,
                lambda: self._pull(target, src_dir, progress),
                commit=target.ostree_commit,
            )
        await self._step(
            install,
            Phase.DEPLOYING,
            lambda: self._deploy(target.ostree_commit),
            commit=target.ostree_commit,
        )
        await self._record(install.id, Phase.AWAITING_REBOOT)
        return Outcome(StatusCode.NEEDS_REBOOT, f"{target.name} is deployed", target.name)

    async def _apps_size(self, target: Target, src_dir: Path) -> int:
        if not target.apps:
            return 0
        return await self._apps.stage_size(src_dir / "apps", target.apps)

    async def _pull_size(self, target: Target, src_dir: Path, rootfs_changes: bool) -> int:
        # The walk behind the size is the pull's gate: a rootfs it refuses (an object
        # missing, unsafe or corrupt), or one that does not fit even now, ends the install
        # before the apps are copied, journalled as the pull's failure. Without apps the
        # pull is the first copy: it walks the bundle itself (beside its copy where the
        # drive allows) and weighs its own progress.
        if not rootfs_changes or not target.apps:
            return 0
        return await self._rootfs.pull_size(
            source_repo=src_dir / "ostree_repo", commit=target.ostree_commit
        )

    async def _pull(
        self,
        target: Target,
        src_dir: Path,
        progress: _Progress,
        on_space_checked: Callable[[], None] | None = None,
    ) -> None:
        await self._rootfs.pull(
            source_repo=src_dir / "ostree_repo",
            commit=target.ostree_commit,
            on_progress=progress.rootfs,
            on_space_checked=on_space_checked,
        )

    async def _stage_and_pull(
        self, install: InstallRecord, target: Target, src_dir: Path, progress: _Progress
    ) -> None:
        """Copy the apps, then pull the rootfs; each app's images load into dockerd as soon
        as its blobs are in the store, beside the rest of the copy and the pull.

        The drive is read from start to end without a pause, and the loads' work (dockerd's
        CPU, the device's store) hides behind the copies. An app's load begins before the
        pull only while the rootfs, as sized before the copy, still fits beside what the
        copy has yet to write and the images unpacked (:data:`UNPACKED_RATIO` times the
        apps' blobs); else it waits for the pull's own space check, as every load did
        before. Images that unpack larger than that, like dockerd's unpacking beside the
        pull, are weighed by no check: filling the file system ends the install with 60
        (ostree's own free-space limit, or the pull's check) or 80 (dockerd). Whichever
        fails first stops the others and is journalled under its own step:
        ``staging-apps-failed`` for the copy or a load, ``pulling-failed`` for the pull.
        """
        apps = target.apps
        space_checked = asyncio.Event()

        async def wait_for_room(name: str) -> None:
            if space_checked.is_set():
                return
            # Beside the rootfs: what the copy has yet to write, and every app's images
            # as dockerd unpacks them. Apps of no known size load after the check.
            beside = progress.apps_left + UNPACKED_RATIO * progress.apps_total
            if progress.apps_total == 0 or not await self._rootfs.fits_beside(
                commit=target.ostree_commit, beside=beside
            ):
                log.info("app load waits for the pull's space check", app=name)
                await space_checked.wait()

        async def pull() -> None:
            await self._pull(target, src_dir, progress, space_checked.set)
            space_checked.set()

        loads = _AppLoads(self._apps, apps, progress, wait_for_room)
        await self._record(install.id, Phase.STAGING_APPS, apps=sorted(apps))
        loading = asyncio.ensure_future(loads.run())
        running: list[asyncio.Future[Any]] = [loading]
        step: Phase | None = Phase.STAGING_APPS
        try:
            await self._copy_beside(target, src_dir, progress, loads, loading)
            step = None  # a journal that fails to record is no step's failure
            await self._record(
                install.id,
                Phase.PULLING,
                commit=target.ostree_commit,
                loading=sorted(set(apps) - loads.loaded),
            )
            step = Phase.PULLING
            pulling = asyncio.ensure_future(pull())
            running.append(pulling)
            await side_by_side(pulling, loading)
        except BaseException as e:
            # To their end even if cancelled again; what they raised besides is noted on e.
            await to_completion(partial(stop_tasks, running, e))
            if step is None or not isinstance(e, Exception | asyncio.CancelledError):
                raise  # not a failure to settle (a test's simulated kill)
            if step is Phase.PULLING and not _raised(pulling, e):
                # The pull did not fail: a load did, or a cancellation came from outside
                # while a load was still under way.
                step = Phase.STAGING_APPS if _raised(loading, e) or _succeeded(pulling) else step
            err = _expected(e)
            await self._cleanup(partial(self._journal_failure, install.id, step, e, err), e)
            _reraise(err, e)

    async def _deploy(self, commit: str) -> None:
        await self._rootfs.deploy(commit=commit)
        await self._reboot.mark_needed()

    def _pending_outcome(
        self, pending: InstallRecord, src_dir: Path, target_name: str | None
    ) -> Outcome:
        same_bundle = pending.src_dir == str(src_dir) and target_name in (
            None,
            "",
            pending.target_name,
        )
        if same_bundle and pending.state == Phase.AWAITING_REBOOT:
            return Outcome(
                StatusCode.NEEDS_REBOOT,
                f"{pending.target_name} is already deployed",
                pending.target_name,
            )
        if same_bundle and pending.state == Phase.AWAITING_DOCKER_RESTART:
            return Outcome(
                StatusCode.NEEDS_DOCKER_RESTART,
                f"apps of {pending.target_name} are staged",
                pending.target_name,
            )
        raise PendingInstallError(
            f"the install of {pending.target_name} is pending ({pending.state})",
            target=pending.target_name,
        )

    # ---- run (finalize) ---------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Finalize the pending install after the reboot or the dockerd restart."""
        started = time.monotonic()
        async with self._exclusive():
            before: InstallRecord | None = None
            try:
                before = await self._db(self._journal.current_install)
                try:
                    outcome = await self._run_locked()
                except (Exception, asyncio.CancelledError) as e:
                    await self._cleanup(self._restart_aklite_unless_pending, e)
                    raise
                await self._restart_aklite_unless_pending()
            except (Exception, asyncio.CancelledError) as e:
                err = _expected(e)
                self._summary("run", before, Outcome(err.code, str(err)), started)
                _reraise(err, e)
            self._summary("run", before, outcome, started)
            return outcome

    async def _run_locked(self) -> Outcome:
        pending = await self._recover()
        if pending is None:
            # A run killed between journalling the result and its last steps left these
            # undone; both are idempotent.
            current = await self._db(self._journal.current_install)
            if current is not None and current.target_name != INITIAL_TARGET:
                await self._current_file.write(_target(current))
            return Outcome(StatusCode.NO_PENDING_INSTALLATION, "no install is pending")
        if (
            pending.state
            in (
                Phase.AWAITING_REBOOT,
                Phase.AWAITING_ROLLBACK_REBOOT,
            )
            and await self._reboot.needed()
        ):
            return Outcome(
                StatusCode.NEEDS_REBOOT,
                f"{pending.target_name} waits for a reboot",
                pending.target_name,
            )
        return await self._finalize(pending)

    async def _finalize(self, pending: InstallRecord) -> Outcome:
        previous = (
            await self._db(self._journal.get_install, pending.previous_id)
            if pending.previous_id is not None
            else None
        )
        # An apps-only install keeps the rootfs of the target it replaces.
        apps_only = previous is not None and previous.ostree_commit == pending.ostree_commit
        match pending.state:
            case Phase.FINALIZING if apps_only:
                return await self._finalize_apps_only(pending, previous)
            case Phase.AWAITING_REBOOT | Phase.FINALIZING:
                return await self._finalize_rootfs(pending, previous)
            case Phase.AWAITING_DOCKER_RESTART:
                return await self._finalize_apps_only(pending, previous)
            case Phase.ROLLING_BACK:
                return await self._roll_back(pending, previous, reason="resumed")
            case _:  # awaiting-rollback-reboot, finalizing-rollback
                return await self._finalize_rollback(pending, previous)

    async def _finalize_rootfs(
        self, pending: InstallRecord, previous: InstallRecord | None
    ) -> Outcome:
        booted = await self._rootfs.booted_commit()
        if booted != pending.ostree_commit:
            return await self._bootloader_rolled_back(pending, previous, booted)
        try:
            await self._step(pending, Phase.FINALIZING, lambda: self._apps.start(pending.apps))
        except AppsError as e:
            return await self._roll_back(pending, previous, reason=str(e))
        return await self._complete(pending)

    async def _finalize_apps_only(
        self, pending: InstallRecord, previous: InstallRecord | None
    ) -> Outcome:
        try:
            await self._step(pending, Phase.FINALIZING, lambda: self._apps.start(pending.apps))
        except AppsError as e:
            # The rootfs did not change: going back means running the previous apps again.
            if previous is None:
                await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, str(e))
                return Outcome(StatusCode.ROLLBACK_FAILED, f"{e}; no previous target to go back to")
            return await self._restore_previous_apps(pending, previous, reason=str(e))
        return await self._complete(pending)

    async def _prune(self) -> None:
        # Old deployments left behind cost space, not correctness: the update stands.
        try:
            await self._rootfs.prune()
        except Exception as e:
            log.warning("pruning old deployments failed", error=str(_expected(e)))

    async def _complete(self, pending: InstallRecord) -> Outcome:
        await self._apps.retire(pending.apps)
        await self._prune()
        await self._finish(
            pending, Phase.CURRENT, StatusCode.OK, "update finalized", make_current=True
        )
        await self._current_file.write(_target(pending))
        await self._restart_aklite_if_it_ran()
        return Outcome(StatusCode.OK, f"{pending.target_name} is now current", pending.target_name)

    async def _bootloader_rolled_back(
        self, pending: InstallRecord, previous: InstallRecord | None, booted: str | None
    ) -> Outcome:
        message = (
            f"the bootloader booted {booted or 'an unknown deployment'} instead of "
            f"{pending.target_name} ({pending.ostree_commit[:12]})"
        )
        log.error("bootloader rolled back", target=pending.target_name, booted=booted)
        if previous is None or previous.ostree_commit != booted:
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, message)
            return Outcome(StatusCode.ROLLBACK_FAILED, message + "; the running target is unknown")
        return await self._restore_previous_apps(pending, previous, reason=message)

    async def _restore_previous_apps(
        self,
        pending: InstallRecord,
        previous: InstallRecord,
        *,
        reason: str,
        answer: StatusCode = StatusCode.ROLLBACK_OK,
        prune: bool = False,
    ) -> Outcome:
        """Run the previous target's apps again; ``answer`` is the code once they run."""
        try:
            await self._step(
                pending, Phase.FINALIZING_ROLLBACK, lambda: self._apps.start(previous.apps)
            )
        except AppsError as e:
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, f"{reason}; {e}")
            return Outcome(StatusCode.ROLLBACK_FAILED, f"{reason}; previous apps failed too: {e}")
        await self._apps.retire(previous.apps)
        if prune:
            await self._prune()
        await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_OK, reason)
        # The journal's placeholder for the factory image is no target to publish.
        if previous.target_name != INITIAL_TARGET:
            await self._current_file.write(_target(previous))
        await self._restart_aklite_if_it_ran()
        return Outcome(
            answer, f"{reason}; {previous.target_name} stays current", previous.target_name
        )

    async def _roll_back(
        self, pending: InstallRecord, previous: InstallRecord | None, *, reason: str
    ) -> Outcome:
        """The new rootfs booted but its apps failed: deploy the previous target again."""
        possible = previous is not None and await self._rootfs.has_commit(previous.ostree_commit)
        if previous is None or not possible:
            message = f"{reason}; no previous target to roll back to"
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, message)
            return Outcome(StatusCode.ROLLBACK_FAILED, message)
        if await self._rootfs.pending_commit() != previous.ostree_commit:
            async with self._reboot.inhibit(f"rolling back to {previous.target_name}"):
                await self._step(
                    pending,
                    Phase.ROLLING_BACK,
                    lambda: self._deploy(previous.ostree_commit),
                    to=previous.target_name,
                    reason=reason,
                )
        else:
            await self._reboot.mark_needed()
        await self._record(pending.id, Phase.AWAITING_ROLLBACK_REBOOT, to=previous.target_name)
        return Outcome(
            StatusCode.NEEDS_REBOOT,
            f"{reason}; {previous.target_name} was deployed again",
            previous.target_name,
        )

    async def _finalize_rollback(
        self, pending: InstallRecord, previous: InstallRecord | None
    ) -> Outcome:
        booted = await self._rootfs.booted_commit()
        if previous is None or booted != previous.ostree_commit:
            message = f"after the rollback the device booted {booted or 'an unknown deployment'}"
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, message)
            return Outcome(StatusCode.ROLLBACK_FAILED, message)
        # The rollback itself succeeded: the device runs the previous target again.
        return await self._restore_previous_apps(
            pending,
            previous,
            reason=f"{pending.target_name} was rolled back",
            answer=StatusCode.OK,
            prune=True,
        )

    def _summary(
        self, command: str, before: InstallRecord | None, outcome: Outcome, started: float
    ) -> None:
        """One line per install/run: what, from, to, result and how long it took."""
        log.info(
            f"{command} finished",
            command=command,
            target=outcome.target,
            from_target=before.target_name if before is not None else None,
            result=int(outcome.code),
            result_message=outcome.message,
            duration_s=round(time.monotonic() - started, 3),
        )
