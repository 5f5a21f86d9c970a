"""The update lock shared with aktualizr-lite's tools: ``flock`` on ``/var/lock/aklite.lock``.

aktualizr-lite's daemon and ``aklite-offline`` take the same exclusive, non-blocking lock,
so only one of them changes the device at a time. The lock dies with the process holding
it, so a crash never leaves it wedged.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from aklited.errors import LockError

DEFAULT_LOCK_PATH = Path("/var/lock/aklite.lock")


class UpdateLock:
    """Hold with ``with UpdateLock(path):``; raises LockError when another tool holds it."""

    def __init__(self, path: Path = DEFAULT_LOCK_PATH) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockError(
                    f"{self._path}: another aklite tool holds the update lock "
                    "(is aktualizr-lite running? stop it first)"
                ) from e
            raise LockError(f"{self._path}: cannot take the update lock: {e.strerror}") from e
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
