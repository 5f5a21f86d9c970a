"""``aklitectl``: status and control of a running aklited, over D-Bus only.

``status`` and ``watch`` work for any user (the bus policy lets everyone read); ``install``,
``check`` and ``run`` need root. ``install``, ``run`` and ``watch`` wait for the update's
``Completed`` signal and exit with its status code, as ``aklite-offline`` would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from aklited.daemon.service import BUS_NAME, INTERFACE, OBJECT_PATH, code_of_error
from aklited.outcomes import StatusCode

PROG = "aklitectl"
PROPERTIES = "org.freedesktop.DBus.Properties"
STOPPED = (
    int(StatusCode.UNKNOWN_ERROR),
    "aklited stopped before the update ended; it settles the update when it starts again",
)


class CtlError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


async def add_match(bus: MessageBus, rule: str) -> Message | None:
    """Ask the bus daemon for the signals ``rule`` matches; its reply (None: none came)."""
    return await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=[rule],
        )
    )


def plain(value: Any) -> Any:
    """D-Bus values as JSON-able Python values."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class Client:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.completed: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.changes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @classmethod
    async def connect(cls) -> Client:
        try:  # dbus-fast honours DBUS_SYSTEM_BUS_ADDRESS
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError) as e:
            raise CtlError(f"cannot connect to the system bus: {e}") from e
        return cls(bus)

    async def call(
        self,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        interface: str = INTERFACE,
    ) -> list[Any]:
        reply = await self.bus.call(
            Message(
                destination=BUS_NAME,
                path=OBJECT_PATH,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            code = code_of_error(reply.error_name or "")
            if reply.error_name == "org.freedesktop.DBus.Error.ServiceUnknown":
                text = "aklited is not running"
            raise CtlError(str(text), int(code) if code is not None else 1)
        return list(reply.body)

    async def properties(self) -> dict[str, Any]:
        (values,) = await self.call("GetAll", "s", [INTERFACE], interface=PROPERTIES)
        return {key: plain(value) for key, value in values.items()}

    async def subscribe(self) -> None:
        """Receive Completed and PropertiesChanged (before starting anything: none is lost)."""

        def handler(message: Message) -> None:
            if message.message_type != MessageType.SIGNAL:
                return
            if message.member == "NameOwnerChanged" and message.body[0] == BUS_NAME:
                if not message.body[2]:  # no new owner: the daemon is gone
                    self.completed.put_nowait(STOPPED)
                return
            if message.path != OBJECT_PATH:
                return
            if message.member == "Completed":
                self.completed.put_nowait((int(message.body[0]), str(message.body[1])))
            elif message.member == "PropertiesChanged" and message.body[0] == INTERFACE:
                self.changes.put_nowait({k: plain(v) for k, v in message.body[1].items()})

        self.bus.add_message_handler(handler)
        for rule in (
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{INTERFACE}'",
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{PROPERTIES}'",
            # A daemon stopped mid-update sends no Completed: its name going away ends the wait.
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
            f"arg0='{BUS_NAME}'",
        ):
            await add_match(self.bus, rule)

    async def follow(self, *, as_json: bool) -> tuple[int, str]:
        """Show progress until the update's Completed; return its code and message."""
        live = sys.stdout.isatty() and not as_json
        waiting_change = asyncio.ensure_future(self.changes.get())
        waiting_done = asyncio.ensure_future(self.completed.get())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {waiting_change, waiting_done}, return_when=asyncio.FIRST_COMPLETED
                )
                if waiting_change in done:
                    _show_change(waiting_change.result(), live=live, as_json=as_json)
                    waiting_change = asyncio.ensure_future(self.changes.get())
                if waiting_done in done:
                    code, message = waiting_done.result()
                    if live:
                        print()
                    return code, message
        finally:
            waiting_change.cancel()
            waiting_done.cancel()


def _show_change(change: dict[str, Any], *, live: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"changed": change}), flush=True)
        return
    if "Progress" in change:
        percent, message, _ = change["Progress"]
        if live:
            bar = "#" * (percent // 5)
            print(f"\r[{bar:<20}] {percent:3d}% {message[:50]:<50}", end="", flush=True)
        elif message:
            print(f"{percent:3d}% {message}", flush=True)
    if "State" in change:
        print(("\n" if live else "") + f"state: {change['State']}", flush=True)


def _target_line(target: dict[str, Any]) -> str:
    if not target:
        return "none"
    return f"{target.get('name')} (version {target.get('version')})"


def _print_status(props: dict[str, Any]) -> None:
    code, message = props.get("LastResult", [0, ""])
    print(f"State: {props.get('State')}")
    print(f"Current target: {_target_line(props.get('CurrentTarget', {}))}")
    print(f"Pending target: {_target_line(props.get('PendingTarget', {}))}")
    percent, what, _ = props.get("Progress", [0, "", 0])
    if what:
        print(f"Progress: {percent}% {what}")
    print(f"Last result: {code}" + (f" {message}" if message else ""))
    media = props.get("Media", [])
    print("Media:" + ("" if media else " none"))
    for drive in media:
        safe = " (safe to remove)" if drive.get("safe_to_remove") else ""
        print(f"    {drive.get('device')} {drive.get('label', '')}: {drive.get('found', '')}{safe}")


async def _run(args: argparse.Namespace) -> int:
    client = await Client.connect()
    try:
        return await _command(client, args)
    finally:
        client.bus.disconnect()


async def _command(client: Client, args: argparse.Namespace) -> int:
    if args.command == "status":
        props = await client.properties()
        if args.json:
            print(json.dumps(props, indent=2, sort_keys=True))
        else:
            _print_status(props)
        return 0
    if args.command == "check":
        (result,) = await client.call("Check", "s", [args.path])
        checked = plain(result)
        if args.json:
            print(json.dumps(checked, indent=2, sort_keys=True))
        else:
            print(f"Target: {checked.get('target')} (version {checked.get('version')})")
            print(f"Status: {checked.get('reason')}")
        return int(checked.get("code", 1))
    await client.subscribe()
    if args.command == "watch":
        # Where things stand first (and a daemon that is not running is said at once).
        props = await client.properties()
        now: dict[str, Any] = {k: props[k] for k in ("State", "Progress") if k in props}
        _show_change(now, live=False, as_json=args.json)
    elif args.command == "install":
        options: dict[str, Variant] = {"force": Variant("b", args.force)}
        if args.target:
            options["target"] = Variant("s", args.target)
        await client.call("Install", "sa{sv}", [args.path, options])
    elif args.command == "run":
        await client.call("Run")
    code, message = await client.follow(as_json=args.json)
    if args.json:
        print(json.dumps({"code": code, "message": message}))
    else:
        stream = sys.stdout if StatusCode(code).is_success else sys.stderr
        print(f"{message} [{code}]", file=stream)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Status and control of aklited, the offline update daemon."
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="state, current and pending target, last result, media")
    sub.add_parser(
        "watch", help="follow the update under way (or the next one); exit with its status code"
    )
    install = sub.add_parser("install", help="install the bundle in PATH; exit with its code")
    install.add_argument("path", metavar="PATH", help="the bundle directory")
    install.add_argument("--force", action="store_true", help="allow an older target")
    install.add_argument("--target", default="", metavar="NAME", help="install this target")
    check = sub.add_parser("check", help="what an install of PATH would do (changes nothing)")
    check.add_argument("path", metavar="PATH", help="the bundle directory")
    sub.add_parser("run", help="finish a pending update; exit with its code")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "path", None):
        args.path = str(Path(args.path).absolute())  # the daemon has another working dir
    try:
        return asyncio.run(_run(args))
    except CtlError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
