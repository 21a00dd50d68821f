"""Where service errors become gRPC statuses: one wrapper per RPC kind, over the one table
(calls/status.py); requests that cannot be parsed are answered, not dropped."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from service.calls.status import INTERNAL_MESSAGE, status_of
from service.calls.streams import Malformed
from service.core.errors import DeadlineExpired, InvalidInput, ServiceError

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Servicer = TypeVar("Servicer")


def code_of(err: ServiceError) -> grpc.StatusCode:
    return status_of(err).grpc


def lenient(message_class: type[Message]) -> Callable[[bytes], Message | Malformed]:
    """A deserializer that returns Malformed instead of failing, so the caller hears why."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_class.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as err:
            return Malformed(name, err)

    return parse


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
            if isinstance(request, Malformed):
                raise InvalidInput(request.description)
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
