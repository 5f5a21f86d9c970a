"""``sd_notify`` without a C binding: one datagram per message on ``$NOTIFY_SOCKET``.

systemd starts the unit as Type=notify: READY=1 only once a pending update is finished,
STATUS= lines say what the daemon does (``systemctl status``), WATCHDOG=1 keeps the watchdog
fed and EXTEND_TIMEOUT_USEC buys time while a long finalize runs at start. Without
``NOTIFY_SOCKET`` (a daemon started by hand, or a test) every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def _address(value: str) -> str:
    # "@name" is an abstract socket: a leading NUL byte on the wire.
    return "\0" + value[1:] if value.startswith("@") else value


class Notifier:
    """Talks to the service manager; silent when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env["NOTIFY_SOCKET"]) if env.get("NOTIFY_SOCKET") else None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1_000_000 if usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str | int) -> None:
        """Send ``KEY=value`` lines (a datagram never blocks for long on a local socket)."""
        if self._address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as e:  # the manager went away: the daemon goes on without it
            log.warning("sd_notify failed", error=str(e), fields=sorted(fields))

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def stopping(self, status: str) -> None:
        self.send(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float) -> None:
        self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    async def watchdog(self) -> None:
        """Feed the watchdog at half its interval, for as long as the daemon runs."""
        if self.watchdog_s is None or not self.enabled:
            return
        while True:
            self.send(WATCHDOG=1)
            await asyncio.sleep(self.watchdog_s / 2)
