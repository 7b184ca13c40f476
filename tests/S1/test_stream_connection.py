"""``until_stopped``: the one "start up unless stopped" step of the kline and book streamers."""

from __future__ import annotations

import asyncio
import doctest
import importlib

import pytest

from S1.stream_connection import until_stopped


def test_a_finished_step_returns_true():
    async def main():
        return await until_stopped(asyncio.sleep(0), stop_event=asyncio.Event())

    assert asyncio.run(main()) is True


def test_a_failed_step_raises_its_error():
    async def boom():
        raise LookupError("unknown symbol XYZ")

    async def main():
        return await until_stopped(boom(), stop_event=asyncio.Event())

    with pytest.raises(LookupError, match="unknown symbol"):
        asyncio.run(main())


@pytest.mark.parametrize("stop_first", [True, False])
def test_a_stop_cancels_the_step(stop_first):
    events = []

    async def step(started: asyncio.Event):
        started.set()
        try:
            await asyncio.Event().wait()        # never finishes by itself
        finally:
            events.append("step cleaned up")

    async def main():
        stop, started = asyncio.Event(), asyncio.Event()
        if stop_first:
            stop.set()
            done = await until_stopped(step(started), stop_event=stop)
        else:
            waiting = asyncio.create_task(until_stopped(step(started), stop_event=stop))
            await started.wait()
            stop.set()
            done = await waiting
        events.append("returned")
        return done, started.is_set()

    done, started = asyncio.run(main())
    assert done is False
    # a step that started is cancelled and awaited (its clean-up ran) before until_stopped returns
    assert events == (["step cleaned up", "returned"] if started else ["returned"])
    assert started or stop_first


@pytest.mark.parametrize("name", ["S1.stream_connection", "S1.report_page"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
