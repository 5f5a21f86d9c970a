"""``aklited``: the long-running daemon (udev -> media -> engine -> D-Bus).

One owner of setup and teardown (an AsyncExitStack: everything is closed in reverse order,
every clean-up runs). At start the daemon finishes a pending update before it tells systemd
it is ready, so aktualizr-lite (ordered after it) never sees a half-finished update. SIGTERM
cancels an update under way at its next await; the engine settles the journal as for any
failure, and the next start picks up whatever waits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

import structlog
from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from dbus_fast.constants import RequestNameReply

from aklited.cli.options import common_options
from aklited.config import Config, load_config
from aklited.daemon.drives import DriveHandler
from aklited.daemon.jobs import Jobs, Status
from aklited.daemon.media import MediaWatcher
from aklited.daemon.notify import Notifier
from aklited.daemon.service import BUS_NAME, OBJECT_PATH, UpdaterService
from aklited.engine.model import Outcome
from aklited.engine.ports import ServicesPort
from aklited.errors import AkliteError, ServiceError
from aklited.host.logind import request_reboot
from aklited.host.systemd import connect_systemd
from aklited.log import AKLITE_LOG_LEVELS, configure_logging
from aklited.outcomes import StatusCode
from aklited.wiring import build_engine

PROG = "aklited"
DOCKER_UNIT = "docker.service"
# How often a daemon without an engine (a damaged journal, ...) tries again.
RETRY_S = 30.0
# STATUS= is one line of `systemctl status`: long messages are cut.
STATUS_MESSAGE_CHARS = 160

log = structlog.get_logger(PROG)


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=PROG,
        description="Offline updates from removable media, with nobody at a keyboard: "
        "status and control on the system bus (io.foundries.aklited).",
        parents=[common_options(top_level=True)],
    )


def status_line(status: Status) -> str:
    """What ``systemctl status aklited`` shows."""
    current = status.current.get("name", "unknown")
    match str(status.state):
        case "idle":
            code, message = status.last_result
            if StatusCode(code).is_success or not message:
                return f"idle; running {current}"
            # An operator's `systemctl status` shows why the last update or drive failed.
            return f"idle; running {current}; last result {code}: {_shorten(message)}"
        case "awaiting-reboot":
            return f"{status.pending.get('name', 'an update')} waits for a reboot"
        case "awaiting-docker-restart":
            return f"{status.pending.get('name', 'an update')} waits for dockerd to restart"
        case state:
            percent, message, _ = status.progress
            return f"{state} {percent}%: {message}" if message else str(state)


def _shown(status: Status) -> tuple[object, ...]:
    """What :func:`status_line` shows, progress in steps of 10%: a new line when it changes."""
    return (
        status.state,
        status.progress[0] // 10,
        status.current.get("name"),
        status.pending.get("name"),
        status.last_result,
    )


def _shorten(text: str, limit: int = STATUS_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Daemon:
    """The parts of a running aklited, built and torn down by :func:`serve`."""

    def __init__(self, config: Config, notifier: Notifier) -> None:
        self.config = config
        self.notifier = notifier
        self.stop = asyncio.Event()
        self.bus: MessageBus | None = None
        self.services: ServicesPort | None = None
        self.service: UpdaterService | None = None
        self.jobs = Jobs(self.status_changed)

    def status_changed(self, before: Status, after: Status) -> None:
        if self.service is not None:
            self.service.status_changed(before, after)
        if _shown(before) != _shown(after):
            self.notifier.status(status_line(after))

    async def after_update(self, outcome: Outcome) -> bool:
        """Act on an update's result; True when it should be finished (run) at once."""
        if outcome.code == StatusCode.NEEDS_DOCKER_RESTART:
            assert self.services is not None
            log.info("restarting dockerd to finish the update", unit=DOCKER_UNIT)
            await self.services.restart_unit(DOCKER_UNIT)
            return True
        if outcome.code == StatusCode.NEEDS_REBOOT and self.config.aklited.auto_reboot:
            delay = self.config.aklited.reboot_delay_s
            log.info("rebooting to finish the update", delay_s=delay, target=outcome.target)
            self.notifier.status(f"{outcome.target} is installed: rebooting in {delay} s")
            await asyncio.sleep(delay)
            assert self.bus is not None
            await request_reboot(self.bus)
        return False


async def _connect(stack: AsyncExitStack) -> MessageBus:
    # dbus-fast honours DBUS_SYSTEM_BUS_ADDRESS; unix fds: the shutdown inhibitor is one.
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()

    async def disconnect() -> None:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    stack.push_async_callback(disconnect)
    return bus


async def serve(config: Config, notifier: Notifier, *, retry_s: float = RETRY_S) -> int:
    daemon = Daemon(config, notifier)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop.set)
    async with AsyncExitStack() as stack:
        daemon.bus = await _connect(stack)
        daemon.services = await connect_systemd()
        stack.push_async_callback(daemon.services.close)
        daemon.service = UpdaterService(daemon.jobs)
        daemon.bus.export(OBJECT_PATH, daemon.service)
        stack.callback(daemon.bus.unexport, OBJECT_PATH)
        reply = await daemon.bus.request_name(BUS_NAME)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise ServiceError(f"{BUS_NAME} is owned by another process ({reply.name})")
        if await start_engine(daemon, stack):
            await finish_pending(daemon)
        else:
            # Degraded: serve D-Bus and say what is missing; never crash-loop.
            retry = asyncio.create_task(
                retry_engine(daemon, stack, retry_s), name="aklited-engine-retry"
            )
            stack.push_async_callback(_cancel, retry)
        notifier.ready(status_line(daemon.jobs.status))
        log.info("aklited ready", bus_name=BUS_NAME, state=str(daemon.jobs.status.state))
        drives = DriveHandler(
            daemon.jobs,
            config.aklited.media_root,
            publish=daemon.service.media_changed,
            say=notifier.status,
        )
        media = asyncio.create_task(watch_media(daemon, drives, retry_s), name="aklited-media")
        stack.push_async_callback(_cancel, media)
        watchdog = asyncio.create_task(notifier.watchdog(), name="aklited-watchdog")
        stack.push_async_callback(_cancel, watchdog)
        await daemon.stop.wait()
        notifier.stopping("stopping")
        log.info("aklited stopping")
        await daemon.jobs.cancel()
    return 0


async def start_engine(daemon: Daemon, stack: AsyncExitStack) -> bool:
    """Build the engine; on failure say why (LastResult, STATUS=, journald) and return False."""
    try:
        engine = await stack.enter_async_context(
            build_engine(
                daemon.config, observer=daemon.jobs, services=daemon.services, logind=daemon.bus
            )
        )
    except AkliteError as e:
        log.error("updates are unavailable", error=e.message, code=int(e.code))  # noqa: TRY400
        daemon.jobs.unavailable(e)
        daemon.notifier.status(f"updates unavailable: {e.message}")
        return False
    daemon.jobs.attach(engine, after=daemon.after_update)
    # A part the device lacks (no sysroot, no Docker engine) is said at start; the updates
    # that need it say it again, and pick it up once it is there.
    await daemon.jobs.refresh_quietly(report=True)
    for missing in await engine.missing_parts():
        log.warning(
            "updates that need it are refused", error=missing.message, code=int(missing.code)
        )
        daemon.jobs.report(int(missing.code), missing.message)
    return True


async def finish_pending(daemon: Daemon) -> None:
    if daemon.jobs.status.pending:
        # Finalizing starts apps and may roll back: give systemd's start timeout room.
        daemon.notifier.extend_timeout(600)
        daemon.notifier.status(f"finishing {daemon.jobs.status.pending.get('name')}")
        await daemon.jobs.run_now()


async def retry_engine(daemon: Daemon, stack: AsyncExitStack, retry_s: float) -> None:
    """Pick the missing part up when it appears (a damaged journal moved away, ...)."""
    while True:
        await asyncio.sleep(retry_s)
        if await start_engine(daemon, stack):
            log.info("updates are available again")
            daemon.jobs.report(0, "updates are available again")
            await finish_pending(daemon)
            daemon.notifier.status(status_line(daemon.jobs.status))
            return


async def watch_media(daemon: Daemon, drives: DriveHandler, retry_s: float) -> None:
    """Watch udev for drives; without udev, say so and try again (it may be started later)."""
    while True:
        try:
            async with MediaWatcher() as watcher:
                worker = asyncio.create_task(drives.work(), name="aklited-drives")
                try:
                    await drives.watch(watcher)
                finally:
                    await _cancel(worker)
        except (AkliteError, OSError) as e:
            message = e.message if isinstance(e, AkliteError) else str(e)
            log.error("drives are not watched", error=message)  # noqa: TRY400
            daemon.jobs.report(int(StatusCode.UNKNOWN_ERROR), f"drives are not watched: {message}")
        await asyncio.sleep(retry_s)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    journald = bool(os.environ.get("JOURNAL_STREAM"))
    configure_logging(
        target="journald" if journald else "console", level=AKLITE_LOG_LEVELS[args.log_level]
    )
    notifier = Notifier()
    try:
        config = load_config(args.config or None)
        return asyncio.run(serve(config, notifier))
    except AkliteError as e:
        log.error("aklited cannot run", error=e.message, code=int(e.code))  # noqa: TRY400
        print(f"{PROG}: error: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
