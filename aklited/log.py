"""Logging, configured once per process.

Commands print human-readable lines on stderr. The daemon writes to journald with the
native protocol: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=aklited, CODE_FILE/CODE_LINE/
CODE_FUNC and every bound key as an upper-case ``AKLITED_*`` field (``target=`` becomes
``AKLITED_TARGET``), so operators can filter with ``journalctl AKLITED_TARGET=...``.
Without a journal socket the daemon falls back to stderr.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "aklited"

# aktualizr-lite's --log-level: 0 trace, 1 debug, 2 info, 3 warning, 4 error, 5 fatal.
AKLITE_LOG_LEVELS: dict[int, int] = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
    5: logging.CRITICAL,
}

_SYSLOG_PRIORITY: dict[str, int] = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "info": 6,
    "debug": 7,
}

# Keys structlog's processors add that map to journald's own fields, not AKLITED_*.
_RESERVED = frozenset(
    {"event", "level", "timestamp", "pathname", "lineno", "func_name", "logger", "exc_info"}
)
_FIELD_NAME_OK = re.compile(r"[A-Z0-9_]+")

Target = Literal["console", "journald"]


def journal_fields(event_dict: Mapping[str, Any]) -> dict[str, str]:
    """Turn a structlog event into journald fields (pure: the tests read it directly)."""
    fields: dict[str, str] = {
        "MESSAGE": str(event_dict.get("event", "")),
        "PRIORITY": str(_SYSLOG_PRIORITY.get(str(event_dict.get("level", "info")), 6)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
    }
    if "pathname" in event_dict:
        fields["CODE_FILE"] = str(event_dict["pathname"])
    if "lineno" in event_dict:
        fields["CODE_LINE"] = str(event_dict["lineno"])
    if "func_name" in event_dict:
        fields["CODE_FUNC"] = str(event_dict["func_name"])
    if event_dict.get("exception"):
        fields["MESSAGE"] += "\n" + str(event_dict["exception"])
    for key, value in event_dict.items():
        if key in _RESERVED or key == "exception":
            continue
        name = "AKLITED_" + re.sub(r"[^A-Za-z0-9_]", "_", key).upper()
        if _FIELD_NAME_OK.fullmatch(name):
            fields[name] = str(value)
    return fields


def encode_journal_message(fields: Mapping[str, str]) -> bytes:
    """Serialize fields in journald's native datagram format."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            # Multi-line values: name, newline, 64-bit little-endian length, raw bytes.
            out += name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournaldLogger:
    """A structlog logger whose every method sends one journal entry."""

    def __init__(self, socket_path: Path = JOURNAL_SOCKET) -> None:
        self._path = str(socket_path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def msg(self, message: bytes) -> None:
        try:
            self._sock.sendto(message, self._path)
        except OSError as e:
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_large(message)

    def _send_large(self, message: bytes) -> None:
        # journald takes entries over the datagram size limit as a sealed memfd.
        fd = os.memfd_create("aklited-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, message)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = array.array("i", [fd])
            self._sock.sendmsg(
                [], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights.tobytes())], 0, self._path
            )
        finally:
            os.close(fd)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class JournaldLoggerFactory:
    def __init__(self, socket_path: Path = JOURNAL_SOCKET) -> None:
        self._logger = JournaldLogger(socket_path)

    def __call__(self, *args: Any) -> JournaldLogger:
        return self._logger


def _render_journald(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> bytes:
    return encode_journal_message(journal_fields(event_dict))


def journal_available(socket_path: Path = JOURNAL_SOCKET) -> bool:
    return socket_path.is_socket()


def configure_logging(
    *,
    target: Target = "console",
    level: int = logging.INFO,
    stream: TextIO | None = None,
    journal_socket: Path = JOURNAL_SOCKET,
) -> Target:
    """Configure structlog for this process; returns the target actually used.

    Args:
        target: "console" for commands; "journald" for the daemon (falls back to the
            console on stderr when ``journal_socket`` does not exist).
        level: the least severe level that is written.
        stream: where console lines go (stderr by default).
        journal_socket: journald's native socket.
    """
    if target == "journald" and not journal_available(journal_socket):
        target = "console"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if target == "journald":
        processors: list[structlog.typing.Processor] = [
            *shared,
            structlog.processors.CallsiteParameterAdder(
                {
                    structlog.processors.CallsiteParameter.PATHNAME,
                    structlog.processors.CallsiteParameter.LINENO,
                    structlog.processors.CallsiteParameter.FUNC_NAME,
                }
            ),
            _render_journald,
        ]
        factory: Any = JournaldLoggerFactory(journal_socket)
    else:
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False),
        ]
        factory = structlog.PrintLoggerFactory(stream if stream is not None else sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    return target
