"""The daemon's D-Bus signals as a client on the device sees them, each with its arrival time.

For the benchmarks and the demo: :class:`StatusWatch` keeps every PropertiesChanged of
aklited's Updater1 (across daemon restarts) and waits for one that satisfies a predicate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from aklited.cli.ctl import add_match, plain
from aklited.daemon.service import INTERFACE, OBJECT_PATH

PROPERTIES = "org.freedesktop.DBus.Properties"
SAFETY_S = 120.0  # a safety net only: every wait is for a signal


Change = dict[str, Any]


class StatusWatch:
    """Every PropertiesChanged of aklited's Updater1, with the time it arrived here."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self.changes: list[tuple[float, Change]] = []
        self.props: Change = {}
        self._arrived = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, address: str) -> StatusWatch:
        bus = await MessageBus(bus_address=address).connect()
        watch = cls(bus)
        # No sender in the rule: it holds across daemon restarts (a new unique name each).
        rule = f"type='signal',path='{OBJECT_PATH}',interface='{PROPERTIES}'"
        reply = await add_match(bus, rule)
        if reply is None or reply.message_type == MessageType.ERROR:
            bus.disconnect()
            raise RuntimeError(f"AddMatch refused: {reply.body if reply else 'no reply'}")
        return watch

    def _on_message(self, message: Message) -> None:
        if (
            message.message_type == MessageType.SIGNAL
            and message.path == OBJECT_PATH
            and message.member == "PropertiesChanged"
            and message.body[0] == INTERFACE
        ):
            values: Change = {key: plain(value) for key, value in message.body[1].items()}
            self.changes.append((time.perf_counter(), values))
            self.props.update(values)
            self._arrived.set()

    def mark(self) -> int:
        return len(self.changes)

    async def first(
        self, matches: Callable[[Change], bool], *, since: int, timeout_s: float = SAFETY_S
    ) -> float:
        """When the first change from ``since`` on that ``matches`` arrived."""
        index = since
        async with asyncio.timeout(timeout_s):
            while True:
                while index < len(self.changes):
                    at, values = self.changes[index]
                    index += 1
                    if matches(values):
                        return at
                self._arrived.clear()
                await self._arrived.wait()

    async def close(self) -> None:
        self._bus.disconnect()
        await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


def drive_is(device: str, **wanted: Any) -> Callable[[Change], bool]:
    """The Media entry of ``device`` has every ``wanted`` value."""

    def matches(change: Change) -> bool:
        return any(
            entry.get("device") == device and all(entry.get(k) == v for k, v in wanted.items())
            for entry in change.get("Media", ())
        )

    return matches


def state_is(state: str) -> Callable[[Change], bool]:
    return lambda change: change.get("State") == state


def drive_gone(device: str) -> Callable[[Change], bool]:
    def matches(change: Change) -> bool:
        media = change.get("Media")
        return media is not None and all(entry.get("device") != device for entry in media)

    return matches
