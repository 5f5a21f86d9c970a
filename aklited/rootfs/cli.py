"""Running the ``ostree`` command line from asyncio, with its output logged and parsed.

The pull commands only print progress when their stdout is a terminal, so :func:`run_ostree`
can give the child a pseudo-terminal and turn each redrawn console line into a call of a
line callback. A failing command raises the :class:`~aklited.errors.RootfsError` type the
caller chose for that step, carrying its stderr.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from aklited.errors import RootfsError

log = structlog.get_logger(__name__)

# Console control sequences libglnx writes around redrawn lines: save/restore cursor,
# erase line, cursor movement.
_ANSI = re.compile(rb"\x1b(?:\[[0-9;?]*[A-Za-z]|[78])")
_LINE_BREAK = re.compile(rb"[\r\n]+")

LineCallback = Callable[[str], None]

ProgressCallback = Callable[[int, int, str], None]
"""``on_progress(done, total, message)``: objects copied so far out of the objects to copy."""

# Console lines of ostree's pull progress (libostree's default console reporter).
_RECEIVING = re.compile(r"Receiving objects:\s*\d+%\s*\((\d+)/(\d+)\)")
_WRITING = re.compile(r"Writing objects:\s*(\d+)")
_SUMMARY = re.compile(r"(\d+) metadata, (\d+) content objects? imported")

# One fixed locale keeps ostree's messages (and so the journal) the same on every device.
_ENV_OVERRIDES = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


@dataclass(frozen=True, slots=True)
class OstreeOutput:
    """What a finished ``ostree`` command printed."""

    stdout: str
    stderr: str


def _one_line(text: str) -> str:
    """Squash a tool's multi-line stderr into one line for an error message."""
    return " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())


async def run_ostree(
    args: list[str],
    *,
    error: type[RootfsError],
    what: str,
    on_line: LineCallback | None = None,
    ostree_bin: str = "ostree",
    classify: Callable[[str], type[RootfsError] | None] | None = None,
) -> OstreeOutput:
    """Run ``ostree ARGS`` and return its output, raising on a non-zero exit.

    Args:
        args: arguments after the program name.
        error: the :class:`~aklited.errors.RootfsError` type raised on failure.
        what: a few words for the error message, e.g. ``"pull of abc… from /media/x"``.
        on_line: when given, stdout is a pseudo-terminal (so ostree prints progress) and
            every console line, stripped of control sequences, is passed to it.
        ostree_bin: the program to run.
        classify: given ostree's stderr on failure, a more precise type than ``error``
            (e.g. a corrupted object is a verification failure), or None.

    Returns:
        The decoded stdout (console lines joined by newlines) and stderr.

    Raises:
        RootfsError: ``error`` (or what ``classify`` chose) when the program is missing or
            exited non-zero (stderr in the message).
    """
    argv = [ostree_bin, *args]
    log.debug("ostree run", argv=argv)
    env = {**os.environ, **_ENV_OVERRIDES}
    master: int | None = None
    slave: int | None = None
    if on_line is not None:
        try:
            master, slave = os.openpty()
        except OSError as e:  # no devpts: still works, only without intermediate progress
            log.warning("ostree progress unavailable", reason=str(e))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=slave if slave is not None else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except BaseException as e:  # a cancellation too: asyncio stops the child, the pty is ours
        if master is not None:
            os.close(master)
        if isinstance(e, OSError):
            raise error(f"{what} failed: cannot run {ostree_bin}: {e}") from e
        raise
    finally:
        if slave is not None:
            os.close(slave)  # the child holds its own copy; EOF arrives when it exits
    try:
        stdout, stderr = await _collect(proc, master, on_line)
        returncode = await proc.wait()
    except BaseException:
        # Cancelled or a callback failed: never leave an ostree process writing behind us.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if returncode != 0:
        log.warning("ostree failed", argv=argv, returncode=returncode, stderr=stderr.strip())
        detail = _one_line(stderr) or f"exit status {returncode}"
        failure = (classify(stderr) if classify is not None else None) or error
        raise failure(f"{what} failed: {detail}")
    log.debug("ostree done", argv=argv, stdout=stdout, stderr=stderr.strip())
    return OstreeOutput(stdout=stdout, stderr=stderr)


async def _collect(
    proc: asyncio.subprocess.Process, master: int | None, on_line: LineCallback | None
) -> tuple[str, str]:
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    try:
        if master is not None:
            stdout = "\n".join(await _read_console(master, on_line or _ignore))
        else:
            assert proc.stdout is not None
            raw = await proc.stdout.read()
            stdout = raw.decode("utf-8", errors="replace")
            if on_line is not None:
                for line in _console_lines(raw):
                    on_line(line)
    except BaseException:
        stderr_task.cancel()
        raise
    return stdout, (await stderr_task).decode("utf-8", errors="replace")


def _ignore(_line: str) -> None:
    return None


def _console_lines(raw: bytes) -> list[str]:
    cleaned = _ANSI.sub(b"\n", raw)
    parts = _LINE_BREAK.split(cleaned)
    return [text for part in parts if (text := part.decode("utf-8", errors="replace").strip())]


class _ConsoleProtocol(asyncio.Protocol):
    """Hands the chunks read from a pseudo-terminal to a queue; ``None`` marks the end."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        self.chunks.put_nowait(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # Linux reports the end of a pseudo-terminal whose child exited as EIO: not an error.
        self.chunks.put_nowait(None)


async def _read_console(master: int, on_line: LineCallback) -> list[str]:
    """Read a pseudo-terminal until the child closes it, calling ``on_line`` per line."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(master, "rb", buffering=0)
    try:
        transport, protocol = await loop.connect_read_pipe(_ConsoleProtocol, pipe)
    except BaseException:
        pipe.close()
        raise
    lines: list[str] = []
    pending = b""
    try:
        while (chunk := await protocol.chunks.get()) is not None:
            pending += chunk
            # Keep an unterminated tail: it may be the first half of a line.
            *complete, pending = _LINE_BREAK.split(_ANSI.sub(b"\n", pending))
            for part in complete:
                text = part.decode("utf-8", errors="replace").strip()
                if text:
                    lines.append(text)
                    on_line(text)
    finally:
        transport.close()
    tail = pending.decode("utf-8", errors="replace").strip()
    if tail:
        lines.append(tail)
        on_line(tail)
    return lines


class PullProgress:
    """Turns ostree's console lines into ``on_progress(done, total, message)`` calls."""

    def __init__(self, callback: ProgressCallback | None, *, total: int) -> None:
        """Report against ``total`` objects (the estimate of what is missing)."""
        self._callback = callback
        self.total = max(total, 1)
        self.imported = 0
        self._done = 0

    def weigh(self, callback: ProgressCallback | None, *, total: int) -> None:
        """Report from now on, against ``total`` objects: for a pull started before the
        estimate of what it copies was known (nothing is reported until then)."""
        self._callback = callback
        self.total = max(total, 1)
        self._done = 0  # what came before was counted against no total

    def report(self, done: int, message: str) -> None:
        """Pass progress on; it never goes backwards and never exceeds the total."""
        self._done = max(self._done, min(done, self.total))
        if self._callback is None:
            return
        try:
            self._callback(self._done, self.total, message)
        except Exception:  # a broken progress display must not break the update
            log.exception("progress callback failed")

    def on_line(self, line: str) -> None:
        """Parse one console line of ``ostree pull``/``pull-local``."""
        log.debug("ostree pull progress", line=line)
        if match := _SUMMARY.search(line):
            self.imported = int(match[1]) + int(match[2])
            self.report(self.total, line)
        elif match := _RECEIVING.search(line):
            fetched, requested = int(match[1]), int(match[2])
            self.report(fetched * self.total // max(requested, 1), line)
        elif match := _WRITING.search(line):
            # Local pulls report the writes still outstanding, counting down.
            self.report(self.total - int(match[1]), line)
