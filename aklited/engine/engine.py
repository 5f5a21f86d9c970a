"""The update engine: ``install``, ``run`` (finalize after boot) and ``current``.

Every step is a journal transition written before its side effect (``Store.record``), so a
process killed at any point leaves a journal that names the step under way. Each call first
settles whatever an earlier, interrupted call left behind:

* interrupted before the deployment (verifying, pulling, staging apps): the install is
  abandoned; nothing on the device changed that a new install would not redo (OSTree and the
  app store keep what was already copied, so the next pull resumes);
* interrupted while deploying: the sysroot tells whether the deployment happened; if it did,
  the install waits for the reboot as if nothing had happened (and ``install`` reports 100);
* interrupted while finalizing or rolling back: ``run`` picks the step up again.

The engine talks to OSTree, apps, systemd and the trust workflow only through the protocols
in :mod:`aklited.engine.ports`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import structlog

from aklited.engine.journal import InstallRecord, Store
from aklited.engine.phases import (
    AKLITE_UNIT,
    AKLITED_WAS_RUNNING_KEY,
    IN_FLIGHT,
    INITIAL_TARGET,
    PENDING,
    CurrentInfo,
    EngineSettings,
    Outcome,
    Phase,
    crash_hook,
)
from aklited.engine.ports import (
    AppsPort,
    CurrentTarget,
    EngineObserver,
    NullObserver,
    RootfsPort,
    ServiceManager,
    TargetSpec,
    TrustPort,
)
from aklited.errors import AkliteError, AppsError, InternalError
from aklited.host.current_target import write_current_target
from aklited.host.lock import UpdateLock
from aklited.outcomes import StatusCode

log = structlog.get_logger(__name__)

T = TypeVar("T")

__all__ = [
    "AKLITE_UNIT",
    "INITIAL_TARGET",
    "CurrentInfo",
    "Engine",
    "EngineSettings",
    "Outcome",
    "Phase",
]


def _expected(error: Exception) -> AkliteError:
    """Every failure as an AkliteError: a foreign one is logged with its traceback (debug)."""
    wrapped = InternalError.wrap(error)
    if wrapped is not error:
        log.debug("unexpected failure", exc_info=error)
    return wrapped


def _reraise(err: AkliteError, original: Exception) -> NoReturn:
    if err is original:
        raise err
    raise err from original


class Engine:
    """Drives offline updates. One call at a time per device (the update lock ensures it)."""

    def __init__(
        self,
        *,
        store: Store,
        trust: TrustPort,
        rootfs: RootfsPort,
        apps: AppsPort,
        services: ServiceManager,
        settings: EngineSettings,
        observer: EngineObserver | None = None,
    ) -> None:
        self._store = store
        self._trust = trust
        self._rootfs = rootfs
        self._apps = apps
        self._services = services
        self._settings = settings
        self._observer: EngineObserver = observer or NullObserver()

    # ---- journal helpers --------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # SQLite commits with synchronous=FULL fsync: keep them off the loop.
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _record(self, install_id: int | None, phase: Phase, **detail: Any) -> None:
        await self._db(self._store.record, install_id, str(phase), **detail)
        log.info("transition", state=str(phase), install=install_id, **detail)
        self._observer.on_state(str(phase), detail)
        crash_hook(phase)

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
            self._store.finish_install,
            install.id,
            state=str(phase),
            result_code=int(code),
            result_message=message,
            make_current=make_current,
        )
        log.info("transition", state=str(phase), install=install.id, code=int(code))
        self._observer.on_state(str(phase), {"code": int(code), "message": message})
        crash_hook(phase)

    async def _step(
        self, install: InstallRecord, phase: Phase, action: Awaitable[T], **detail: Any
    ) -> T:
        """Record ``phase``, then act; a failure is journalled as an event of its own."""
        await self._record(install.id, phase, **detail)
        try:
            return await action
        except Exception as e:
            err = _expected(e)
            await self._db(
                self._store.record_failure,
                install.id,
                str(phase),
                code=int(err.code),
                error=str(err),
            )
            _reraise(err, e)

    async def _latest(self) -> InstallRecord | None:
        return await self._db(self._store.latest_install)

    # ---- aktualizr-lite ---------------------------------------------------------------------

    async def _stop_aklite(self, install: InstallRecord) -> None:
        unit = self._settings.aklite_unit
        state = await self._services.unit_state(unit)
        if not state.running:
            return
        # Remember first: if we die right after stopping it, the next run restarts it.
        await self._db(self._store.set_setting, AKLITED_WAS_RUNNING_KEY, "1")
        await self._step(install, Phase.STOPPING_AKLITE, self._services.stop_unit(unit), unit=unit)

    async def _restart_aklite_if_it_ran(self) -> None:
        if await self._db(self._store.get_setting, AKLITED_WAS_RUNNING_KEY) != "1":
            return
        unit = self._settings.aklite_unit
        await self._services.start_unit(unit)
        await self._db(self._store.set_setting, AKLITED_WAS_RUNNING_KEY, None)
        log.info("service started again", unit=unit)

    # ---- what the device runs ---------------------------------------------------------------

    async def _current_record(self, *, create: bool) -> InstallRecord | None:
        """The current install; on first use, one made from the booted deployment."""
        current = await self._db(self._store.current_install)
        if current is not None or not create:
            return current
        booted = await self._rootfs.booted_commit()
        if booted is None:
            return None
        initial = await self._db(
            self._store.begin_install,
            target_name=INITIAL_TARGET,
            version=0,
            ostree_hash=booted,
            apps={},
            state=str(Phase.INITIAL),
        )
        await self._db(
            self._store.finish_install,
            initial.id,
            state=str(Phase.CURRENT),
            result_code=0,
            result_message="the target the device booted before its first offline update",
            make_current=True,
        )
        return await self._db(self._store.current_install)

    async def current(self) -> CurrentInfo:
        record = await self._db(self._store.current_install)
        booted = await self._rootfs.booted_commit()
        if record is None:
            return CurrentInfo(
                name=INITIAL_TARGET if booted else "unknown",
                version=0,
                ostree_hash=booted or "",
                apps={},
                app_states={},
                booted_commit=booted,
            )
        states = await self._apps.states(record.apps) if record.apps else {}
        return CurrentInfo(
            name=record.target_name,
            version=record.version,
            ostree_hash=record.ostree_hash,
            apps=dict(record.apps),
            app_states=states,
            booted_commit=booted,
        )

    # ---- recovery ---------------------------------------------------------------------------

    async def _recover(self) -> InstallRecord | None:
        """Settle an install an earlier process left half-way; return it if still pending."""
        latest = await self._latest()
        if latest is None or latest.state not in IN_FLIGHT:
            return latest if latest is not None and latest.state in PENDING else None
        if latest.state == Phase.DEPLOYING and (
            await self._rootfs.pending_commit() == latest.ostree_hash
        ):
            log.warning(
                "resuming an install interrupted after its deployment", target=latest.target_name
            )
            self._settings.reboot_sentinel.parent.mkdir(parents=True, exist_ok=True)
            self._settings.reboot_sentinel.touch()
            await self._record(latest.id, Phase.AWAITING_REBOOT, resumed=True)
            return await self._db(self._store.get_install, latest.id)
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

        Returns 100 (reboot, then run), 101 (restart dockerd, then run) or 0 (already
        installed). Raises AkliteError for every failure (30 when another install is pending).
        """
        started = time.monotonic()
        with UpdateLock(self._settings.lock_path):
            before = await self._current_record(create=True)
            try:
                src = await asyncio.to_thread(src_dir.resolve)
                outcome = await self._install_locked(src, target_name, force=force)
            except Exception as e:
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
            return await self._install_new(src_dir, target_name, force=force)
        except Exception:
            # Nothing of ours is pending: aktualizr-lite must not stay stopped (an install
            # abandoned above, or this one, may have stopped it).
            await self._restart_aklite_if_it_ran()
            raise

    async def _install_new(self, src_dir: Path, target_name: str | None, *, force: bool) -> Outcome:
        current = await self._current_record(create=True)
        await self._record(None, Phase.VERIFYING, src_dir=str(src_dir))
        target = await self._trust.select(
            src_dir,
            target_name=target_name or None,
            force=force,
            current=None
            if current is None
            else CurrentTarget(current.target_name, current.version, current.ostree_hash),
        )
        booted = await self._rootfs.booted_commit()
        rootfs_changes = target.ostree_hash != booted
        if (
            not rootfs_changes
            and current is not None
            and current.target_name == target.name
            and await self._apps.in_place(target.apps)
        ):
            message = f"{target.name} is already installed"
            if target.note:
                message += f"; {target.note}"
            return Outcome(StatusCode.OK, message, target.name)

        install = await self._db(
            self._store.begin_install,
            target_name=target.name,
            version=target.version,
            ostree_hash=target.ostree_hash,
            apps=dict(target.apps),
            custom={**target.custom, "aklited-tag": target.tag},
            src_dir=str(src_dir),
            previous_id=current.id if current is not None else None,
            state=str(Phase.STARTED),
        )
        self._observer.on_state(str(Phase.STARTED), {"target": target.name})
        crash_hook(Phase.STARTED)
        try:
            return await self._install_steps(
                install, target, src_dir, rootfs_changes=rootfs_changes
            )
        except Exception as e:
            err = _expected(e)
            await self._finish(install, Phase.FAILED, err.code, str(err))
            _reraise(err, e)

    async def _install_steps(
        self, install: InstallRecord, target: TargetSpec, src_dir: Path, *, rootfs_changes: bool
    ) -> Outcome:
        await self._stop_aklite(install)
        if rootfs_changes:
            await self._step(
                install,
                Phase.PULLING,
                self._rootfs.pull(src_dir / "ostree_repo", target.ostree_hash),
                commit=target.ostree_hash,
            )
        if target.apps:
            await self._step(
                install,
                Phase.STAGING_APPS,
                self._apps.stage(src_dir / "apps", target.apps),
                apps=sorted(target.apps),
            )
        if not rootfs_changes:
            await self._record(install.id, Phase.AWAITING_DOCKER_RESTART)
            return Outcome(
                StatusCode.NEEDS_DOCKER_RESTART,
                f"apps of {target.name} are staged: restart dockerd, then run 'aklite-offline run'",
                target.name,
            )
        await self._step(
            install, Phase.DEPLOYING, self._deploy(target.ostree_hash), commit=target.ostree_hash
        )
        await self._record(install.id, Phase.AWAITING_REBOOT)
        return Outcome(
            StatusCode.NEEDS_REBOOT,
            f"{target.name} is deployed: reboot, then run 'aklite-offline run'",
            target.name,
        )

    async def _deploy(self, commit: str) -> None:
        await self._rootfs.deploy(commit)
        # The sentinel lives on a tmpfs: its absence after the deployment means a reboot.
        sentinel = self._settings.reboot_sentinel
        await asyncio.to_thread(sentinel.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(sentinel.touch)

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
                f"{pending.target_name} is already deployed: reboot, then run 'aklite-offline run'",
                pending.target_name,
            )
        if same_bundle and pending.state == Phase.AWAITING_DOCKER_RESTART:
            return Outcome(
                StatusCode.NEEDS_DOCKER_RESTART,
                f"apps of {pending.target_name} are staged: restart dockerd, then run "
                "'aklite-offline run'",
                pending.target_name,
            )
        raise AkliteError(
            f"the install of {pending.target_name} is pending ({pending.state}): "
            "reboot and run 'aklite-offline run' first",
            code=StatusCode.INSTALLATION_IN_PROGRESS,
        )

    # ---- run (finalize) ---------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Finalize the pending install after the reboot or the dockerd restart."""
        started = time.monotonic()
        with UpdateLock(self._settings.lock_path):
            before = await self._db(self._store.current_install)
            try:
                outcome = await self._run_locked()
            except Exception as e:
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
            current = await self._db(self._store.current_install)
            if current is not None and current.target_name != INITIAL_TARGET:
                await self._write_current_target(current)
            await self._restart_aklite_if_it_ran()
            return Outcome(StatusCode.NO_PENDING_INSTALLATION, "no install is pending")
        if pending.state in (Phase.AWAITING_REBOOT, Phase.AWAITING_ROLLBACK_REBOOT) and (
            self._settings.reboot_sentinel.exists()
        ):
            return Outcome(
                StatusCode.NEEDS_REBOOT,
                f"{pending.target_name} waits for a reboot: reboot, then run 'aklite-offline run'",
                pending.target_name,
            )
        previous = (
            await self._db(self._store.get_install, pending.previous_id)
            if pending.previous_id is not None
            else None
        )
        match pending.state:
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
        if booted != pending.ostree_hash:
            return await self._bootloader_rolled_back(pending, previous, booted)
        try:
            await self._step(pending, Phase.FINALIZING, self._apps.start(pending.apps))
        except AppsError as e:
            return await self._roll_back(pending, previous, reason=str(e))
        return await self._complete(pending, previous)

    async def _finalize_apps_only(
        self, pending: InstallRecord, previous: InstallRecord | None
    ) -> Outcome:
        try:
            await self._step(pending, Phase.FINALIZING, self._apps.start(pending.apps))
        except AppsError as e:
            # The rootfs did not change: going back means running the previous apps again.
            if previous is None:
                await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, str(e))
                return Outcome(StatusCode.ROLLBACK_FAILED, f"{e}; no previous target to go back to")
            return await self._restore_previous_apps(pending, previous, reason=str(e))
        return await self._complete(pending, previous)

    async def _complete(self, pending: InstallRecord, previous: InstallRecord | None) -> Outcome:
        await self._apps.retire(pending.apps)
        await self._rootfs.prune()
        await self._finish(
            pending, Phase.CURRENT, StatusCode.OK, "update finalized", make_current=True
        )
        await self._write_current_target(pending)
        await self._restart_aklite_if_it_ran()
        return Outcome(StatusCode.OK, f"{pending.target_name} is now current", pending.target_name)

    async def _bootloader_rolled_back(
        self, pending: InstallRecord, previous: InstallRecord | None, booted: str | None
    ) -> Outcome:
        message = (
            f"the bootloader booted {booted or 'an unknown deployment'} instead of "
            f"{pending.target_name} ({pending.ostree_hash[:12]})"
        )
        log.error("bootloader rolled back", target=pending.target_name, booted=booted)
        if previous is None or previous.ostree_hash != booted:
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, message)
            return Outcome(StatusCode.ROLLBACK_FAILED, message + "; the running target is unknown")
        return await self._restore_previous_apps(pending, previous, reason=message)

    async def _restore_previous_apps(
        self, pending: InstallRecord, previous: InstallRecord, *, reason: str
    ) -> Outcome:
        try:
            await self._step(pending, Phase.FINALIZING_ROLLBACK, self._apps.start(previous.apps))
        except AppsError as e:
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, f"{reason}; {e}")
            return Outcome(StatusCode.ROLLBACK_FAILED, f"{reason}; previous apps failed too: {e}")
        await self._apps.retire(previous.apps)
        await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_OK, reason)
        await self._write_current_target(previous)
        await self._restart_aklite_if_it_ran()
        return Outcome(
            StatusCode.ROLLBACK_OK,
            f"{reason}; {previous.target_name} stays current",
            previous.target_name,
        )

    async def _roll_back(
        self, pending: InstallRecord, previous: InstallRecord | None, *, reason: str
    ) -> Outcome:
        """The new rootfs booted but its apps failed: deploy the previous target again."""
        possible = previous is not None and await self._rootfs.has_commit(previous.ostree_hash)
        if previous is None or not possible:
            message = f"{reason}; no previous target to roll back to"
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, message)
            return Outcome(StatusCode.ROLLBACK_FAILED, message)
        if await self._rootfs.pending_commit() != previous.ostree_hash:
            await self._step(
                pending,
                Phase.ROLLING_BACK,
                self._deploy(previous.ostree_hash),
                to=previous.target_name,
                reason=reason,
            )
        else:
            self._settings.reboot_sentinel.touch()
        await self._record(pending.id, Phase.AWAITING_ROLLBACK_REBOOT, to=previous.target_name)
        return Outcome(
            StatusCode.NEEDS_REBOOT,
            f"{reason}; {previous.target_name} was deployed again: reboot, then run "
            "'aklite-offline run'",
            previous.target_name,
        )

    async def _finalize_rollback(
        self, pending: InstallRecord, previous: InstallRecord | None
    ) -> Outcome:
        booted = await self._rootfs.booted_commit()
        if previous is None or booted != previous.ostree_hash:
            message = f"after the rollback the device booted {booted or 'an unknown deployment'}"
            await self._finish(pending, Phase.FAILED, StatusCode.ROLLBACK_FAILED, message)
            return Outcome(StatusCode.ROLLBACK_FAILED, message)
        outcome = await self._restore_previous_apps(
            pending, previous, reason=f"{pending.target_name} was rolled back"
        )
        if outcome.code == StatusCode.ROLLBACK_OK:
            await self._rootfs.prune()
            return Outcome(StatusCode.OK, outcome.message, outcome.target)
        return outcome

    async def _write_current_target(self, record: InstallRecord) -> None:
        tag = record.custom.get("aklited-tag")
        await asyncio.to_thread(
            write_current_target,
            self._settings.current_target_path,
            name=record.target_name,
            version=record.version,
            custom=record.custom,
            tag=tag if isinstance(tag, str) else None,
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
