"""Where service errors become gRPC statuses: one wrapper per RPC kind, one table (calls/status.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from service.calls.status import status_of
from service.calls.streams import answer_stream
from service.core.errors import DeadlineExpired, InvalidInput, ServiceError

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"


def code_of(err: ServiceError) -> grpc.StatusCode:
    return status_of(err).grpc


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Servicer = TypeVar("Servicer")


class Malformed:
    """Stands in for a request message that could not be parsed (e.g. text that is not UTF-8)."""

    def __init__(self, message_name: str, error: Exception) -> None:
        self.description = f"the request is not a valid {message_name}: {error}"


def lenient(message_class: type[Message]) -> Callable[[bytes], Message | Malformed]:
    """A deserializer that returns Malformed instead of failing, so the caller hears why."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_class.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as err:
            return Malformed(name, err)

    return parse


def check_parsed(request: object) -> None:
    if isinstance(request, Malformed):
        raise InvalidInput(request.description)


def deadline_of(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """The caller's deadline as a time.monotonic() value, or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise DeadlineExpired("the deadline passed before the request was read")
    return time.monotonic() + remaining


def unary(
    method: Callable[[Servicer, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Servicer, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Answer ServiceError with its status and message; anything else INTERNAL, logged."""

    @functools.wraps(method)
    async def wrapper(self: Servicer, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            check_parsed(request)
            return await method(self, request, context)
        except ServiceError as err:
            await context.abort(code_of(err), err.message)
        except Exception:
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper


def streaming(
    method: Callable[
        [Servicer, AsyncIterator[Req], grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]
    ],
) -> Callable[[Servicer, AsyncIterator[Req], grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]:
    """The same table for a response stream: the stream ends with the error's status."""

    @functools.wraps(method)
    async def wrapper(
        self: Servicer, requests: AsyncIterator[Req], context: grpc.aio.ServicerContext[Req, Resp]
    ) -> AsyncIterator[Resp]:
        try:
            async for response in method(self, requests, context):
                yield response
        except ServiceError as err:
            await context.abort(code_of(err), err.message)
        except Exception:
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    return wrapper


def failure_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a failed request inside a stream reports."""
    if isinstance(err, ServiceError):
        return code_of(err), err.message
    log.error("unexpected error in a stream request", exc_info=err)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


async def answer_each(
    requests: AsyncIterator[Req | Malformed],
    handle: Callable[[Req], Awaitable[Resp]],
    failed: Callable[[Req | Malformed, grpc.StatusCode, str], Resp],
    draining: asyncio.Event,
) -> AsyncIterator[Resp]:
    """A bidirectional stream's answers (answer_stream): handle(request) for each request, or,
    when that request is malformed or fails, failed(request, code, message), and the stream goes on."""

    async def answer(request: Req | Malformed) -> Resp:
        try:
            if isinstance(request, Malformed):
                raise InvalidInput(request.description)
            return await handle(request)
        except Exception as err:
            code, text = failure_of(err)
            return failed(request, code, text)

    async for response in answer_stream(requests, answer, draining):
        yield response
