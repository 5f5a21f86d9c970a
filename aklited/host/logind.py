"""logind over the system bus: the reboot that completes an update.

aklited asks logind, not systemd or /sbin/reboot: logind honours the inhibitor locks other
programs hold (a running backup, a user session) and is what an unprivileged policy can be
written for.
"""

from __future__ import annotations

import os
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from aklited.errors import ServiceError

LOGIND = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER_IFACE = "org.freedesktop.login1.Manager"


async def _call(bus: MessageBus, member: str, signature: str, body: list[Any]) -> Message:
    """Call logind's Manager; its refusal (or no reply) is a ServiceError naming ``member``."""
    reply = await bus.call(
        Message(
            destination=LOGIND,
            path=MANAGER_PATH,
            interface=MANAGER_IFACE,
            member=member,
            signature=signature,
            body=body,
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply is not None and reply.body else "no reply"
        name = reply.error_name if reply is not None else "none"
        raise ServiceError(f"logind refused {member}: {name}: {detail}")
    return reply


async def request_reboot(bus: MessageBus) -> None:
    """Ask logind to reboot now (not interactively: nobody is there to authorize)."""
    await _call(bus, "Reboot", "b", [False])


async def inhibit_shutdown(bus: MessageBus, why: str) -> int:
    """Take a logind ``block`` inhibitor for shutdown; the returned fd holds it until closed.

    The bus must have negotiated unix fds (``MessageBus(negotiate_unix_fd=True)``).
    """
    reply = await _call(bus, "Inhibit", "ssss", ["shutdown", "aklited", why, "block"])
    if not reply.unix_fds:
        raise ServiceError("logind sent no inhibitor descriptor (unix fds not negotiated)")
    index = reply.body[0]
    fd = int(reply.unix_fds[index])
    for other in reply.unix_fds:
        if other != fd:
            os.close(other)
    return fd
