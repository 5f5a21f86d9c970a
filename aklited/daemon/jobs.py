"""One update at a time, and what the daemon shows of it.

The D-Bus service and the media watcher both start updates here; a second one while one
runs is refused as busy (30). The engine's phases and progress arrive as an observer and
become the status the service publishes: State, Progress, CurrentTarget, PendingTarget,
LastResult. Every change is handed to one listener (the service emits PropertiesChanged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from aklited.engine.engine import Engine
from aklited.engine.model import CheckResult, InstalledTarget, Outcome, Target
from aklited.engine.phases import STATE_OF, TERMINAL, Phase
from aklited.errors import AkliteError, BusyError, InternalError
from aklited.outcomes import State, StatusCode

log = structlog.get_logger(__name__)

# Acts on a finished update (reboot, restart dockerd); True: finish it (run) at once.
AfterUpdate = Callable[[Outcome], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Status:
    """Everything the service publishes; replaced whole on each change."""

    state: State = State.IDLE
    progress: tuple[int, str, int] = (0, "", 0)
    current: Mapping[str, Any] = field(default_factory=dict)
    pending: Mapping[str, Any] = field(default_factory=dict)
    last_result: tuple[int, str] = (0, "")


def target_dict(target: Target | InstalledTarget) -> dict[str, Any]:
    """A target as the service shows it (``a{sv}`` keys)."""
    return {
        "name": target.name,
        "version": target.version,
        "ostree_commit": target.ostree_commit,
        "apps": dict(target.apps),
    }


class Jobs:
    """Runs installs and runs one at a time and keeps the status they produce."""

    def __init__(self, on_change: Callable[[Status, Status], None]) -> None:
        self._on_change = on_change
        self._engine: Engine | None = None
        self._task: asyncio.Task[Outcome | None] | None = None
        self._after: AfterUpdate | None = None
        self._completed: list[Callable[[int, str], None]] = []
        self._phase_listeners: list[Callable[[Phase], None]] = []
        self._unavailable: AkliteError | None = None
        self._waiters: list[asyncio.Future[tuple[int, str]]] = []
        self.status = Status()

    # ---- wiring ---------------------------------------------------------------------------

    def attach(self, engine: Engine, *, after: AfterUpdate | None = None) -> None:
        self._engine = engine
        self._after = after
        self._unavailable = None

    def on_completed(self, listener: Callable[[int, str], None]) -> None:
        self._completed.append(listener)

    @contextmanager
    def phases(self, listener: Callable[[Phase], None]) -> Iterator[None]:
        """Call ``listener`` with each phase an update enters while the block runs."""
        self._phase_listeners.append(listener)
        try:
            yield
        finally:
            self._phase_listeners.remove(listener)

    def next_completion(self) -> asyncio.Future[tuple[int, str]]:
        """The (code, message) of the next update to end, before any reboot it asks for."""
        future: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def _update(self, **changes: Any) -> None:
        before, self.status = self.status, replace(self.status, **changes)
        if before != self.status:
            self._on_change(before, self.status)

    def unavailable(self, error: AkliteError) -> None:
        """Updates cannot run (a part of the device is missing or damaged): say why."""
        self._unavailable = error
        self.report(int(error.code), f"updates unavailable: {error.message}")

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise self._unavailable or InternalError("the engine is not ready yet")
        return self._engine

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- EngineObserver -------------------------------------------------------------------

    def on_phase(self, phase: Phase, detail: Mapping[str, Any]) -> None:
        changes: dict[str, Any] = {"state": STATE_OF[phase]}
        if phase in TERMINAL:
            changes["progress"] = (0, "", 0)
        self._update(**changes)
        for listener in list(self._phase_listeners):
            listener(phase)

    def on_progress(self, percent: int, message: str) -> None:
        self._update(progress=(percent, message, 1))

    # ---- what the device runs ---------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the current and the pending target (and the state they imply) again."""
        engine = self.engine
        current = await engine.current()
        pending = await engine.pending()
        changes: dict[str, Any] = {
            "current": target_dict(current) if current.name != "unknown" else {},
            "pending": target_dict(pending[0]) if pending else {},
        }
        if not self.busy:
            changes["state"] = STATE_OF[pending[1]] if pending else State.IDLE
        self._update(**changes)

    def report(self, code: int, message: str) -> None:
        """A result of the daemon's own (a drive refused, a part of the device missing)."""
        self._update(last_result=(code, message))

    # ---- updates ----------------------------------------------------------------------------

    def start_install(
        self, src_dir: Path, *, force: bool = False, target: str | None = None
    ) -> None:
        """Start an install in the background; its end is a ``Completed`` and LastResult."""
        self._start(
            "install", lambda: self.engine.install(src_dir, target_name=target, force=force)
        )

    def start_run(self) -> None:
        self._start("run", self.engine.run)

    async def run_now(self) -> Outcome | None:
        """Finish a pending update, waiting for it (the daemon's start, before READY=1)."""
        self.start_run()
        assert self._task is not None
        return await self._task

    async def check(self, src_dir: Path) -> CheckResult:
        return await self.engine.check(src_dir)

    async def cancel(self) -> None:
        """Stop the update under way at its next await; the engine settles it."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.wait()

    async def wait(self) -> None:
        """Until the update under way (if any) has ended."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _start(self, command: str, call: Callable[[], Awaitable[Outcome]]) -> None:
        if self.busy:
            raise BusyError("an update is already running")
        _ = self.engine  # refuses at once, with the reason, while updates are unavailable
        self._update(progress=(0, "", 0))
        self._task = asyncio.create_task(self._guarded(command, call), name=f"aklited-{command}")

    async def _guarded(
        self, command: str, call: Callable[[], Awaitable[Outcome]]
    ) -> Outcome | None:
        outcome: Outcome | None = None
        try:
            outcome = await call()
            code, message = int(outcome.code), outcome.message
        except AkliteError as e:
            code, message = int(e.code), e.message
        except asyncio.CancelledError:
            code, message = int(StatusCode.UNKNOWN_ERROR), f"{command} cancelled: aklited stops"
            self._finish(code, message)
            raise
        except Exception as e:  # the daemon keeps serving whatever failed
            log.exception("update failed unexpectedly", command=command)
            err = InternalError.wrap(e)
            code, message = int(err.code), err.message
        self._finish(code, message)
        await self.refresh_quietly()
        if outcome is None or self._after is None:
            return outcome
        try:
            run_next = await self._after(outcome)
        except AkliteError as e:
            self.report(int(e.code), e.message)
            return outcome
        except Exception as e:
            log.exception("acting on the update's result failed", code=code)
            self.report(int(StatusCode.UNKNOWN_ERROR), InternalError.wrap(e).message)
            return outcome
        if run_next:
            return await self._guarded("run", self.engine.run)
        return outcome

    def _finish(self, code: int, message: str) -> None:
        log.info("update completed", code=code, result_message=message)
        self._update(last_result=(code, message), progress=(0, "", 0))
        for listener in self._completed:
            listener(code, message)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result((code, message))

    async def refresh_quietly(self, *, report: bool = False) -> None:
        """:meth:`refresh`; a failure is logged (and with ``report``, the LastResult)."""
        try:
            await self.refresh()
        except Exception as e:  # a status that cannot be read says so, the daemon goes on
            err = InternalError.wrap(e)
            log.warning("cannot read the device's targets", error=err.message)
            if report:
                self.report(int(err.code), f"the device's targets cannot be read: {err.message}")
