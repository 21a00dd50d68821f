"""Bidirectional streams of requests: answered side by side, within a window, until the caller ends
the stream or the server starts draining (then what was taken is answered and the stream ends with
UNAVAILABLE). Shared by sentiment.v1 PredictStream and KServe/Triton ModelStreamInfer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from service.core.errors import NotServing

Req = TypeVar("Req")
Resp = TypeVar("Resp")

WINDOW = 64  # requests of one stream taken and not yet sent back; reading pauses beyond it


async def answer_stream(
    requests: AsyncIterator[Req],
    answer: Callable[[Req], Awaitable[Resp]],
    draining: asyncio.Event,
    window: int = WINDOW,
) -> AsyncIterator[Resp]:
    """Each request's answer, in the order they finish. `answer` reports a request's own failure
    in its response; the stream goes on.

    A request holds its slot of the window until its answer has been handed to the transport, so a
    caller that stops reading its answers stops the server reading (and computing) its requests:
    the stream's memory is bounded by the window and gRPC flow control, whatever the caller sends."""
    done: asyncio.Queue[Resp | None] = asyncio.Queue()
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()

    async def run(request: Req) -> None:
        try:
            response = await answer(request)
        except BaseException:
            slots.release()
            raise
        done.put_nowait(response)  # its slot is freed once the answer is sent

    async def read() -> None:
        """Take requests until the caller ends the stream, or the server starts draining."""
        stop = asyncio.ensure_future(draining.wait())
        messages = aiter(requests)
        try:
            while True:
                following = asyncio.ensure_future(anext(messages))
                await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    break
                try:
                    request = following.result()
                except StopAsyncIteration:
                    break
                await slots.acquire()
                task = asyncio.create_task(run(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            stop.cancel()
            await done.put(None)

    reader = asyncio.create_task(read())
    try:
        while (response := await done.get()) is not None:
            yield response  # resumes once the transport took it (flow control may hold it here)
            slots.release()
        await reader  # re-raise a failure of the reader itself
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
    if draining.is_set():
        raise NotServing(
            "the server is shutting down: every request it took on this stream was answered; "
            "send the others again on a new stream"
        )
