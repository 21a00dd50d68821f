"""Bidirectional streams of requests: answered side by side, within a window, until the caller ends
the stream or the server starts draining (then what was taken is answered and the stream ends with
UNAVAILABLE). Shared by sentiment.v1 PredictStream and KServe/Triton ModelStreamInfer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from service.calls.status import INTERNAL, INTERNAL_MESSAGE, Status, status_of
from service.core.errors import InvalidInput, NotServing, ServiceError

log = logging.getLogger(__name__)

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


class Malformed:
    """Stands in for a request message that could not be parsed (text that is not UTF-8, JSON that is
    not the message): the stream answers it with an error and goes on."""

    def __init__(self, message_name: str, error: Exception) -> None:
        self.description = f"the request is not a valid {message_name}: {error}"


def failure_of(err: BaseException) -> tuple[Status, str]:
    """The status and message a failed request inside a stream reports."""
    if isinstance(err, ServiceError):
        return status_of(err), err.message
    log.error("unexpected error in a stream request", exc_info=err)
    return INTERNAL, INTERNAL_MESSAGE


async def answer_each(
    requests: AsyncIterator[Req | Malformed],
    handle: Callable[[Req], Awaitable[Resp]],
    failed: Callable[[Req | Malformed, Status, str], Resp],
    draining: asyncio.Event,
) -> AsyncIterator[Resp]:
    """A bidirectional stream's answers (answer_stream): handle(request) for each request, or,
    when that request is malformed or fails, failed(request, status, message), and the stream goes
    on."""

    async def answer(request: Req | Malformed) -> Resp:
        try:
            if isinstance(request, Malformed):
                raise InvalidInput(request.description)
            return await handle(request)
        except Exception as err:
            status, text = failure_of(err)
            return failed(request, status, text)

    async for response in answer_stream(requests, answer, draining):
        yield response
