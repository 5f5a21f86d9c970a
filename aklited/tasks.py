"""Awaiting with asyncio what must not be cut short, and what runs side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

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
        await stop_tasks(tasks, first)
        raise


async def stop_tasks(tasks: Sequence[asyncio.Future[Any]], first: BaseException) -> None:
    """Cancel ``tasks`` and wait for them to end; what they raised besides ``first`` is
    logged and noted on it."""
    for task in tasks:
        task.cancel()
    ended = await asyncio.gather(*tasks, return_exceptions=True)
    for other in ended:
        if isinstance(other, Exception) and other is not first:
            log.warning("a step beside the one that failed failed too", error=str(other))
            first.add_note(f"and beside it: {other}")


async def await_beside(main: asyncio.Future[T], beside: asyncio.Future[Any]) -> T:
    """Await ``main`` while ``beside`` runs on, past ``main``'s end if need be. A failure of
    ``beside`` before ``main`` ends, a failure of ``main`` or a cancellation of the caller
    cancels both, waits for them to end, and is raised."""
    try:
        await asyncio.wait({main, beside}, return_when=asyncio.FIRST_COMPLETED)
        if not main.done():
            beside.result()  # its failure; having ended well, it leaves main to await
        return await main
    except BaseException as first:
        await stop_tasks((main, beside), first)
        raise
