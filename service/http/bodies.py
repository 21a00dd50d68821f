"""What an HTTP caller sends, read as a hostile caller may write it: single-valued headers, a body
within its size and time limits, and JSON whose count of values is bounded before any is built.
Whatever json.loads would fail on or build wrongly (a number of thousands of digits, a lone
surrogate escape, nesting past the recursion limit) is an InvalidInput naming the problem, never an
internal error.

Building Python objects holds the interpreter lock, so a body of millions of tiny values would stall
the event loop (and every other caller) even when parsed in a worker thread; counting them first,
with byte scans that hold it only briefly, keeps every step short.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request

from service.core.errors import InvalidInput, PayloadTooLarge, ReadTimeout, UnsupportedMediaType, quoted

T = TypeVar("T")

# a body up to this size is parsed where it arrives: at most some thousands of values, a millisecond
SMALL_BODY_BYTES = 64 * 1024
STRUCTURAL = (b",", b":", b"[", b"{")  # each value past the first follows one of these
CHUNK_BYTES = 1 << 20  # a slice counted at once: each step holds the interpreter lock briefly


def _pieces(data: bytes) -> Iterator[bytes]:
    """`data` in slices of about CHUNK_BYTES; a slice cut inside a run of backslashes holds an even
    number of them (whole escapes), so an escape and what it escapes stay in one slice."""
    start = 0
    while start < len(data):
        end = min(start + CHUNK_BYTES, len(data))
        if end < len(data) and data[end - 1] == 0x5C:
            piece = data[start:end]
            run = len(piece) - len(piece.rstrip(b"\\"))  # backslashes ending this slice
            if run % 2:  # the odd one goes to the next slice, with what it escapes
                end = end - 1 if end - 1 > start else end + 1
        yield data[start:end]
        start = end


def count_values(data: bytes) -> int:
    """An upper bound on the JSON values in `data`: one, plus the separators and openings that lie
    outside strings (exact for valid JSON). Read in slices, each a short step."""
    count, inside = 1, 0  # inside: whether the slice starts inside a string
    for piece in _pieces(data):
        if b'"' not in piece:
            count += 0 if inside else sum(piece.count(mark) for mark in STRUCTURAL)
            continue
        # drop escaped backslashes (pairs, left to right, as JSON reads them), then escaped quotes:
        # every quote left opens or closes a string
        plain = np.frombuffer(piece.replace(b"\\\\", b"").replace(b'\\"', b""), np.uint8)
        if not len(plain):
            continue
        quotes = np.cumsum(plain == 0x22, dtype=np.uint8)  # wraps at 256: its parity stays right
        outside = ((quotes + inside) & 1) == 0
        marks = (plain == 0x2C) | (plain == 0x3A) | (plain == 0x5B) | (plain == 0x7B)
        count += int(np.count_nonzero(marks & outside))
        inside = (inside + int(quotes[-1])) & 1
    return count


def _lone_surrogate(value: Any) -> str | None:
    """Where a string of `value` holds a lone UTF-16 surrogate (which no UTF-8 text can hold), or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                return f"{where or 'a string'} (character {err.start})"
        elif isinstance(item, dict):
            for key, member in item.items():
                stack.append((f"a member name of {where or 'the body'}", key))
                stack.append((f"{where}.{key[:40]}" if where else key[:40], member))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", member) for index, member in enumerate(item))
    return None


def parse_json(data: bytes, what: str, max_values: int) -> dict[str, Any]:
    """The JSON object in `data`, holding at most `max_values` values; else InvalidInput saying what
    is wrong and where."""
    values = count_values(data)
    if values > max_values:
        raise InvalidInput(
            f"{what} holds about {values} JSON values; at most {max_values} are read "
            "(no request of this API needs more: see --max-texts-per-request)"
        )
    try:
        value = json.loads(data)
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{what} is not UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise InvalidInput(f"{what} is not valid JSON: {err.msg} at {where}") from None
    except RecursionError:
        raise InvalidInput(f"{what} nests too deeply") from None
    except ValueError as err:  # a whole number longer than the interpreter converts (4300 digits)
        raise InvalidInput(f"{what} holds a number that cannot be read: {str(err)[:120]}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}")
    lone = _lone_surrogate(value)
    if lone is not None:
        raise InvalidInput(f"{what} holds a lone surrogate escape (such as \\ud800) in {lone}: not text")
    return value


@dataclass(frozen=True)
class Limits:
    """What an HTTP caller may send and be sent: a body's bytes (before it is read; an answer's too),
    how long it may take (a stream: each line; and each answer line to be read), how many JSON
    values it may hold, and the Host names a browser may reach the repository endpoints under."""

    max_body_bytes: int
    read_timeout_s: float
    max_json_values: int
    allowed_hosts: tuple[str, ...]


def header(request: Request, name: str) -> str | None:
    """A header that may be given once, as the caller wrote it (UTF-8, not read as Latin-1), or None;
    InvalidInput when it is given more than once."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"the header {name} is given {len(values)} times; send it once")
    return values[0].encode("latin-1").decode("utf-8", "replace") if values else None


def check_type(request: Request, types: tuple[str, ...], optional_type: bool = False) -> None:
    """UnsupportedMediaType unless the body's content type is one of `types` (or, when optional_type,
    none is given)."""
    kind = (header(request, "content-type") or "").partition(";")[0].strip().lower()
    if kind not in types and not (optional_type and not kind):
        raise UnsupportedMediaType(
            f"content type {kind or 'none'!r} is not taken here; send {' or '.join(types)}"
        )


async def read_body(
    request: Request, limits: Limits, types: tuple[str, ...], optional_type: bool = False
) -> bytes:
    """The request's body: its content type checked, its declared size checked before reading, its
    real size while reading, and the whole read within the read timeout."""
    check_type(request, types, optional_type)
    encoding = (header(request, "content-encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"content encoding {quoted(encoding)} is not taken; send the body as is")
    limit = limits.max_body_bytes
    declared = header(request, "content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise InvalidInput(f"Content-Length {quoted(declared)} is not a number of bytes")
    if declared is not None and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit} (--max-message-bytes)")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.read_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is over {limit} bytes (--max-message-bytes)")
                chunks.append(chunk)
    except TimeoutError:
        raise ReadTimeout(
            f"the body did not arrive within {limits.read_timeout_s:g} s (--http-read-timeout-s)"
        ) from None
    state = request.scope["state"]
    state["body"] = True
    state.setdefault("body_read", asyncio.Event()).set()
    return b"".join(chunks)


async def parsed(data: bytes, parse: Callable[[], T]) -> T:
    """parse() of a request body: where the body arrived when it is small, else in a worker thread,
    off the event loop that serves every other caller."""
    return await asyncio.to_thread(parse) if len(data) > SMALL_BODY_BYTES else parse()


async def read_message(request: Request, limits: Limits, message: Message) -> Message:
    """An API request message from its JSON body (protobuf's JSON mapping)."""
    data = await read_body(request, limits, ("application/json",))

    def parse() -> Message:
        value = parse_json(data, "the request body", limits.max_json_values)
        try:
            return json_format.ParseDict(value, message)
        except json_format.ParseError as err:
            name = message.DESCRIPTOR.full_name
            raise InvalidInput(f"the request is not a valid {name}: {str(err)[:300]}") from None

    return await parsed(data, parse)
