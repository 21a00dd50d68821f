"""The gRPC door's interceptors: every call observed (calls/observe.py: metrics, drain, access log,
tracing) and, when a token is set, the bearer-token check."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from service.calls.observe import CARRIED, CallObserver, Opened
from service.core.fair_queue import DEADLINE_SLACK_S
from service.ops.auth import bearer_refusal

if TYPE_CHECKING:
    HandlerFactory = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]
    Context = grpc.aio.ServicerContext[Any, Any]

OPEN_PREFIX = "/grpc.health.v1.Health/"  # probes never need the token, whichever protocol they speak
OPEN_METHODS = frozenset(
    {"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"}
)
WATCH_METHOD = "/grpc.health.v1.Health/Watch"


def _rebuild(
    handler: grpc.RpcMethodHandler[Any, Any], wrap_unary: Any, wrap_stream: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler kind with its behaviour wrapped (unary or streaming response)."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap_stream(handler.unary_stream), **serializers)
    return grpc.stream_stream_rpc_method_handler(wrap_stream(handler.stream_stream), **serializers)


T = TypeVar("T")


class _Call:
    """Around one call: calls end(context, the exception or None) as it ends, however it ends."""

    def __init__(self, end: Callable[[Context, BaseException | None], None], context: Context) -> None:
        self._end = end
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self._end(self._context, error)


def _observed(
    handler: grpc.RpcMethodHandler[Any, Any],
    begin: Callable[[Context], T],
    end: Callable[[T, Context, BaseException | None], None],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with begin(context) called as each call starts and end(what begin returned,
    context, the exception or None) as it ends, however it ends; unary and streaming alike."""

    def wrap_unary(behaviour: Any) -> Any:
        async def observed(request: Any, context: Context) -> Any:
            with _Call(functools.partial(end, begin(context)), context):
                return await behaviour(request, context)

        return observed

    def wrap_stream(behaviour: Any) -> Any:
        if not inspect.isasyncgenfunction(behaviour):
            return wrap_unary(behaviour)  # a coroutine writing with context.write (health Watch)

        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            with _Call(functools.partial(end, begin(context)), context):
                async for response in behaviour(request, context):
                    yield response

        return observed

    return _rebuild(handler, wrap_unary, wrap_stream)


def _code_name(context: Context, error: BaseException | None) -> str:
    """The status the client received: what the handler set, or why its task was cancelled."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    if isinstance(error, Exception):
        return "UNKNOWN"
    # a BaseException that is not an Exception here is the call's task being cancelled: by the
    # caller, or because the caller's deadline passed, which the caller sees as DEADLINE_EXCEEDED.
    # The caller's own timer cancels the call as its deadline passes, and the server's copy of the
    # deadline runs a little later (it started when the call arrived), hence the slack.
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= DEADLINE_SLACK_S else "CANCELLED"


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Every call through the call observer, as the HTTP door's calls are. Health probes are not
    traced (they would be most of the spans and explain nothing), and an open health watch does
    not hold the drain: it is ended once the drain closes."""

    def __init__(self, observer: CallObserver) -> None:
        self.observer = observer
        # handlers are the same objects call after call: each distinct one is wrapped once
        self._wrapped: dict[tuple[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self, continuation: HandlerFactory, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        key = (handler_call_details.method, handler)
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = self.wrap(handler_call_details.method, handler)
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        observer = self.observer
        name = method.lstrip("/")
        traced = observer.tracing is not None and not (
            method.startswith(OPEN_PREFIX) or method in OPEN_METHODS
        )
        service, _, rpc = name.partition("/")
        static = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        watch = method == WATCH_METHOD
        if watch:
            handler = self._until_closing(handler)

        def begin(context: Context) -> Opened:
            if not traced:
                return observer.begin("grpc", context.peer, holds_drain=not watch)
            metadata = context.invocation_metadata() or ()
            carrier = {key: value for key, value in metadata if key in CARRIED and isinstance(value, str)}
            return observer.begin("grpc", context.peer, name, carrier, static, holds_drain=not watch)

        def end(opened: Opened, context: Context, error: BaseException | None) -> None:
            code = _code_name(context, error)
            status = {"rpc.grpc.status_code": grpc.StatusCode[code].value[0]} if traced else None
            observer.end(opened, name, code, status)

        return _observed(handler, begin, end)

    def _until_closing(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """A health watch that ends once the drain closes (its last message said NOT_SERVING)."""
        closing = self.observer.drain.closing

        def wrap_watch(behaviour: Any) -> Any:
            async def tracked(request: Any, context: Context) -> None:
                watch = asyncio.ensure_future(behaviour(request, context))
                drained = asyncio.ensure_future(closing.wait())
                await asyncio.wait({watch, drained}, return_when=asyncio.FIRST_COMPLETED)
                for task in (watch, drained):
                    task.cancel()
                await asyncio.gather(watch, drained, return_exceptions=True)

            return tracked

        return _rebuild(handler, wrap_watch, wrap_watch)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health probes (grpc.health.v1, KServe ServerLive and ServerReady) needs
    `authorization: Bearer <token>`, else UNAUTHENTICATED. The scheme is case-insensitive (RFC 6750);
    a call with two authorization headers is refused, whatever they say."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()
        self._denials: dict[tuple[str, str], grpc.RpcMethodHandler[Any, Any]] = {}

    def _refusal(self, details: grpc.HandlerCallDetails) -> str | None:
        """Why the call is refused, or None when it carries the token."""
        given = [value for key, value in details.invocation_metadata or () if key == "authorization"]
        return bearer_refusal(given, self._expected)

    async def intercept_service(
        self, continuation: HandlerFactory, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIX) or method in OPEN_METHODS:
            return handler
        message = self._refusal(handler_call_details)
        if message is None:
            return handler
        denial = self._denials.get((method, message))
        if denial is None:
            denial = self._denials[(method, message)] = self._deny(handler, message)
        return denial

    @staticmethod
    def _deny(handler: grpc.RpcMethodHandler[Any, Any], message: str) -> grpc.RpcMethodHandler[Any, Any]:

        def wrap_unary(_: Any) -> Any:
            async def deny(request: Any, context: Context) -> Any:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

            return deny

        def wrap_stream(_: Any) -> Any:
            async def deny(request: Any, context: Context) -> AsyncIterator[Any]:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover - makes this an async generator

            return deny

        return _rebuild(handler, wrap_unary, wrap_stream)
