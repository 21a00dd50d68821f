"""sentiment.v1 over HTTP, in protobuf's JSON mapping: /v1/predict, /v1/predict/stream (NDJSON) and
/v1/model, each a call of calls/predict.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from google.protobuf import json_format
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from model_contract import version_number
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.calls.priority import PROTO_OF, from_urgency
from service.calls.status import status_of
from service.calls.streams import Malformed
from service.core.errors import InvalidInput, PayloadTooLarge, ReadTimeout, ServiceError, quoted
from service.http.answers import NDJSON, Lines, close_stream, json_answer, json_bytes
from service.http.bodies import Limits, check_type, header, read_message

if TYPE_CHECKING:
    from service.calls.predict import SentimentCalls
    from service.core.fair_queue import Priority

JSON_TYPES = ("application/json", NDJSON)


def _prioritised(message: pb.PredictRequest, priority: Priority | None) -> None:
    """The Priority header's priority for a request that names none (the body's field wins)."""
    if priority is not None and message.priority == pb.PRIORITY_UNSPECIFIED:
        message.priority = PROTO_OF[priority]


class SentimentEndpoints:
    """The endpoints of sentiment.v1; stalled() counts a stream dropped because its caller stopped
    reading."""

    def __init__(self, calls: SentimentCalls, limits: Limits, stalled: Callable[[], None]) -> None:
        self.calls = calls
        self.limits = limits
        self._stalled = stalled

    async def predict(self, request: Request) -> Response:
        message = await read_message(request, self.limits, pb.PredictRequest())
        assert isinstance(message, pb.PredictRequest)
        _prioritised(message, from_urgency(header(request, "priority")))
        response = await self.calls.predict(message, None, json=True)
        full = message.attention == pb.ATTENTION_MODE_FULL
        return await json_answer(response, self.limits.max_body_bytes, heavy=full)

    async def predict_stream(self, request: Request) -> Response:
        """NDJSON: one PredictStreamRequest per line in, one PredictStreamResponse per line out, in the
        order they finish; a line over --max-message-bytes ends the stream with an error line."""
        check_type(request, JSON_TYPES)
        priority = from_urgency(header(request, "priority"))
        answers = self.calls.predict_each(self._lines(request, priority), None, json=True)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for answer in answers:
                    yield (await json_bytes(answer, heavy=answer.response.ByteSize() > 1 << 16)) + b"\n"
            except ServiceError as err:  # the stream as a whole ends: too slow, too long a line, draining
                error = {"error": err.message, "code": status_of(err).grpc.name}
                yield json.dumps(error).encode() + b"\n"
            except ClientDisconnect:
                return
            finally:
                await close_stream(answers)

        return Lines(lines(), self.limits.read_timeout_s, self._stalled)

    async def _lines(
        self, request: Request, priority: Priority | None
    ) -> AsyncIterator[pb.PredictStreamRequest | Malformed]:
        """The stream's requests, one a line; each line must arrive whole within the read timeout of
        the moment it was awaited (or of its first byte), however its bytes are spread. priority:
        the Priority header's, for the requests that ask for none."""
        limit, timeout_s = self.limits.max_body_bytes, self.limits.read_timeout_s
        loop = asyncio.get_running_loop()
        pending = bytearray()  # the unfinished line: grows in place, split only when a line ends
        stream = request.stream().__aiter__()
        due = loop.time() + timeout_s  # when the line being read must be whole
        while True:
            try:
                async with asyncio.timeout_at(due):
                    chunk = await anext(stream, None)
            except TimeoutError:
                raise ReadTimeout(
                    f"a line did not arrive whole within {timeout_s:g} s (--http-read-timeout-s)"
                ) from None
            if chunk is None:
                break
            pending += chunk
            if b"\n" in chunk:
                *whole, rest = pending.split(b"\n")
                pending = bytearray(rest)
                due = loop.time() + timeout_s  # the next line's time starts now
                for line in whole:
                    if line.strip():
                        yield self._parse_line(bytes(line), priority)
            if len(pending) > limit:
                raise PayloadTooLarge(f"a line is over the limit of {limit} bytes (--max-message-bytes)")
        if pending.strip():
            yield self._parse_line(bytes(pending), priority)

    @staticmethod
    def _parse_line(line: bytes, priority: Priority | None) -> pb.PredictStreamRequest | Malformed:
        message = pb.PredictStreamRequest()
        try:
            json_format.Parse(line, message)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as err:
            return Malformed(message.DESCRIPTOR.full_name, err)
        _prioritised(message.request, priority)
        return message

    async def model_info(self, request: Request) -> Response:
        text = request.query_params.get("model_version", "0")
        version = 0 if text == "0" else version_number(text)
        if version is None:
            raise InvalidInput(f"model_version {quoted(text)} is not a version number (1, 2, ...)")
        info = self.calls.model_info(pb.GetModelInfoRequest(model_version=version))
        return await json_answer(info, self.limits.max_body_bytes)
