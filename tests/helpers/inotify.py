"""A tiny inotify reader (ctypes over libc), to prove a command never opened or read a path.

Watch the paths first, run the command, then read what happened::

    with Watcher() as watcher:
        watcher.watch(outside_file)
        run_the_command()
        assert watcher.events() == []

A watch on a directory also reports IN_OPEN/IN_ACCESS for the entries directly inside it
(an ``opendir`` of the directory itself is an IN_OPEN with no name); it is not recursive.
Watches follow symlinks, so watch the real outside target, not the link on the drive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_OPEN = 0x00000020
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int


@dataclass(frozen=True)
class Event:
    """One inotify event: the watched path, the entry inside it (if any) and the mask."""

    path: Path
    name: str
    mask: int

    def __str__(self) -> str:
        kinds = [n for bit, n in ((IN_OPEN, "OPEN"), (IN_ACCESS, "ACCESS")) if self.mask & bit]
        where = self.path / self.name if self.name else self.path
        return f"{'|'.join(kinds) or hex(self.mask)} {where}"


class Watcher:
    """An inotify instance; close it (or use it as a context manager) when done."""

    def __init__(self, mask: int = IN_OPEN | IN_ACCESS) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._mask = mask
        self._paths: dict[int, Path] = {}

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def watch(self, path: Path) -> None:
        """Watch ``path`` (a file, FIFO or directory; a symlink is followed)."""
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), self._mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._paths[wd] = Path(path)

    def events(self) -> list[Event]:
        """Every event queued since the watches were added (or since the last call)."""
        found: list[Event] = []
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return found
            except OSError as e:  # pragma: no cover - EINTR is retried by Python
                if e.errno == errno.EAGAIN:
                    return found
                raise
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                name = data[offset : offset + size].split(b"\0", 1)[0].decode(errors="replace")
                offset += size
                if mask & IN_IGNORED:
                    continue
                if mask & IN_Q_OVERFLOW:
                    raise AssertionError("inotify queue overflowed: events were lost")
                found.append(Event(self._paths.get(wd, Path("?")), name, mask))
