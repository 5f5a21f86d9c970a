"""Awaiting one task while another runs on beside it."""

from __future__ import annotations

import asyncio

import pytest

from aklited.tasks import await_beside


async def test_main_s_result_while_beside_runs_on() -> None:
    release = asyncio.Event()

    async def beside_work() -> str:
        await release.wait()
        return "beside"

    beside = asyncio.ensure_future(beside_work())

    assert await await_beside(asyncio.ensure_future(asyncio.sleep(0, "main")), beside) == "main"

    assert not beside.done()  # left running past main's end
    release.set()
    assert await beside == "beside"


async def test_a_failure_beside_stops_main() -> None:
    held = asyncio.Event()
    failure = OSError(5, "Input/output error")

    async def fail_beside() -> None:
        await held.wait()
        raise failure

    main = asyncio.ensure_future(asyncio.Event().wait())  # never ends by itself
    beside = asyncio.ensure_future(fail_beside())
    held.set()

    with pytest.raises(OSError) as raised:
        await await_beside(main, beside)

    assert raised.value is failure
    assert main.cancelled()


async def test_a_failure_of_main_stops_beside_and_tells_what_it_raised() -> None:
    failure = ValueError("the copy failed")
    stopping = RuntimeError("the load could not clean up")
    started = asyncio.Event()

    async def beside_work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise stopping from None

    async def fail_main() -> None:
        await started.wait()
        raise failure

    beside = asyncio.ensure_future(beside_work())

    with pytest.raises(ValueError) as raised:
        await await_beside(asyncio.ensure_future(fail_main()), beside)

    assert raised.value is failure
    assert beside.done() and beside.exception() is stopping
    assert any(str(stopping) in note for note in raised.value.__notes__)


async def test_a_cancelled_caller_cancels_both() -> None:
    main = asyncio.ensure_future(asyncio.Event().wait())
    beside = asyncio.ensure_future(asyncio.Event().wait())
    waiting = asyncio.ensure_future(await_beside(main, beside))
    await asyncio.sleep(0)

    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert main.cancelled() and beside.cancelled()
