"""systemd (PID 1) over the system bus, with dbus-fast.

aklited stops ``aktualizr-lite.service`` while an offline update is under way, because
aktualizr-lite finalizes any pending install it finds at start-up, and starts it again
afterwards if it was running. A job counts as done only when systemd says so: every
``StopUnit``/``StartUnit`` waits for its ``JobRemoved`` signal and checks its result.

Where there is no system bus (a bare container), :func:`connect_systemd` says so once and
returns a manager that changes nothing, so updates still work.
"""

from __future__ import annotations

import asyncio

import structlog
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from aklited.engine.ports import ServicesPort, UnitState
from aklited.errors import ServiceError

log = structlog.get_logger(__name__)

SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"

JOB_TIMEOUT_S = 120.0
_BUS_DAEMON: dict[str, str] = {
    "destination": "org.freedesktop.DBus",
    "path": "/org/freedesktop/DBus",
    "interface": "org.freedesktop.DBus",
}


class Systemd:
    """A connection to systemd's Manager. Create with :func:`connect_systemd`."""

    def __init__(self, bus: MessageBus, *, job_timeout_s: float = JOB_TIMEOUT_S) -> None:
        self._bus = bus
        self._job_timeout_s = job_timeout_s
        # JobRemoved may arrive before the reply that names the job: keep results by path.
        self._job_results: dict[str, str] = {}
        self._job_waiters: dict[str, asyncio.Future[str]] = {}
        bus.add_message_handler(self._on_message)

    @property
    def available(self) -> bool:
        return True

    async def _setup(self) -> None:
        (has_owner,) = await self._call("NameHasOwner", "s", [SYSTEMD_BUS_NAME], **_BUS_DAEMON)
        if not has_owner:
            raise ServiceError(f"no {SYSTEMD_BUS_NAME} on the system bus")
        rule = (
            f"type='signal',sender='{SYSTEMD_BUS_NAME}',interface='{MANAGER_IFACE}',"
            "member='JobRemoved'"
        )
        await self._call("AddMatch", "s", [rule], **_BUS_DAEMON)
        try:
            # systemd sends job signals only while some client is subscribed.
            await self._call("Subscribe")
        except ServiceError as e:
            log.debug("systemd Subscribe failed; relying on broadcast signals", error=str(e))

    def _on_message(self, message: Message) -> bool:
        if (
            message.message_type == MessageType.SIGNAL
            and message.interface == MANAGER_IFACE
            and message.member == "JobRemoved"
        ):
            _job_id, job_path, _unit, result = message.body
            waiter = self._job_waiters.pop(job_path, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)
            else:
                self._job_results[job_path] = result
        return False

    async def _call(
        self,
        member: str,
        signature: str = "",
        body: list[object] | None = None,
        *,
        destination: str = SYSTEMD_BUS_NAME,
        path: str = MANAGER_PATH,
        interface: str = MANAGER_IFACE,
    ) -> list[object]:
        reply = await self._bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        if reply is None:
            raise ServiceError(f"systemd: no reply to {member}")
        if reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply.body else ""
            raise ServiceError(f"systemd: {member} failed: {reply.error_name}: {detail}")
        return list(reply.body)

    async def unit_state(self, name: str) -> UnitState:
        """The unit's load and active state; LoadUnit works for stopped (GC'd) units too."""
        (path,) = await self._call("LoadUnit", "s", [name])
        props = await self._call(
            "GetAll", "s", [UNIT_IFACE], path=str(path), interface=PROPERTIES_IFACE
        )
        values = props[0]
        assert isinstance(values, dict)
        load_state = values.get("LoadState")
        active_state = values.get("ActiveState")
        return UnitState(
            name=name,
            load_state=str(load_state.value) if load_state is not None else "unknown",
            active_state=str(active_state.value) if active_state is not None else "unknown",
        )

    async def _run_job(self, method: str, name: str) -> None:
        (job_path,) = await self._call(method, "ss", [name, "replace"])
        job = str(job_path)
        result = self._job_results.pop(job, None)
        if result is None:
            waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._job_waiters[job] = waiter
            try:
                result = await asyncio.wait_for(waiter, self._job_timeout_s)
            except TimeoutError as e:
                raise ServiceError(
                    f"systemd: {method} {name} did not finish within {self._job_timeout_s:.0f} s"
                ) from e
            finally:
                self._job_waiters.pop(job, None)
        log.info("systemd job finished", method=method, unit=name, result=result)
        if result != "done":
            raise ServiceError(f"systemd: {method} {name} finished with result '{result}'")

    async def stop_unit(self, name: str) -> None:
        await self._run_job("StopUnit", name)

    async def start_unit(self, name: str) -> None:
        await self._run_job("StartUnit", name)

    async def restart_unit(self, name: str) -> None:
        await self._run_job("RestartUnit", name)

    async def close(self) -> None:
        self._bus.disconnect()
        await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


class NoSystemd:
    """Stands in where there is no system bus: reports every unit as unknown, changes nothing."""

    @property
    def available(self) -> bool:
        return False

    async def unit_state(self, name: str) -> UnitState:
        return UnitState(name=name, load_state="unavailable", active_state="unknown")

    async def stop_unit(self, name: str) -> None:
        return None

    async def start_unit(self, name: str) -> None:
        return None

    async def restart_unit(self, name: str) -> None:
        return None

    async def close(self) -> None:
        return None


async def connect_systemd(*, bus_address: str | None = None) -> ServicesPort:
    """Connect to systemd on the system bus, or return :class:`NoSystemd` when there is none.

    ``DBUS_SYSTEM_BUS_ADDRESS`` is honoured, so tests can point it at a private bus.
    """
    try:
        if bus_address is not None:
            bus = await MessageBus(bus_address=bus_address).connect()
        else:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, DBusError, ValueError) as e:
        log.warning(
            "no system bus: services are not stopped or started during updates", error=str(e)
        )
        return NoSystemd()
    systemd = Systemd(bus)
    try:
        await systemd._setup()
    except ServiceError as e:
        await systemd.close()
        log.warning("system bus without systemd: services are left alone", error=str(e))
        return NoSystemd()
    return systemd
