"""Awaiting with asyncio what must not be cut short, and what runs side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")


async def to_completion(make: Callable[[], Awaitable[T]]) -> T:
    """Await ``make()`` to its end even when the caller is cancelled meanwhile (the
    cancellation is delivered afterwards): cleanup must not stop half-way."""
    task = asyncio.ensure_future(make())
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def side_by_side(*tasks: asyncio.Future[T]) -> list[T]:
    """Await ``tasks`` running side by side; the first failure (or a cancellation of the
    caller) cancels the others, waits for the tasks to end (a thread one of them started
    runs on to its own end), and is raised. What the others raised meanwhile is logged."""
    try:
        return await asyncio.gather(*tasks)
    except BaseException as first:
        for task in tasks:
            task.cancel()
        ended = await asyncio.gather(*tasks, return_exceptions=True)
        for other in ended:
            if isinstance(other, Exception) and other is not first:
                log.warning("a step beside the one that failed failed too", error=str(other))
                first.add_note(f"and beside it: {other}")
        raise
