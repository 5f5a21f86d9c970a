"""logind over the system bus: the reboot that completes an update.

aklited asks logind, not systemd or /sbin/reboot: logind honours the inhibitor locks other
programs hold (a running backup, a user session) and is what an unprivileged policy can be
written for.
"""

from __future__ import annotations

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from aklited.errors import ServiceError

LOGIND = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER_IFACE = "org.freedesktop.login1.Manager"


async def request_reboot(bus: MessageBus) -> None:
    """Ask logind to reboot now (not interactively: nobody is there to authorize)."""
    reply = await bus.call(
        Message(
            destination=LOGIND,
            path=MANAGER_PATH,
            interface=MANAGER_IFACE,
            member="Reboot",
            signature="b",
            body=[False],
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply is not None and reply.body else "no reply"
        name = reply.error_name if reply is not None else "none"
        raise ServiceError(f"logind refused the reboot: {name}: {detail}")
