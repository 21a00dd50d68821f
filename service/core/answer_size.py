"""The answer-size policy: refuse, before any work, an answer that could never be sent.

Full attention grows with the square of a text's tokens, so an answer's size is worked out from the
token counts before anything is queued, and a request whose answer would pass the message limit is
refused with advice on how many such texts would fit.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.core.errors import InvalidInput
from service.core.results import AttentionMode

# label, score, probabilities and batch figures of one text
TEXT_BYTES = 64
# a token string of up to ~20 bytes, and its framing
TOKEN_BYTES = 24
# one float32 in protobuf (packed), and in JSON: the shortest repr of a double, sign, exponent and a
# comma ("-1.2345678901234567e-05,")
FLOAT_BYTES = 4
JSON_FLOAT_BYTES = 25


def text_bytes(width: int, mode: AttentionMode, layers: int, heads: int, json: bool = False) -> int:
    """An upper estimate of one text's share of the answer, its attention `width` tokens wide, in
    protobuf or (json) in JSON, where each float takes six times the room."""
    floats = JSON_FLOAT_BYTES if json else FLOAT_BYTES
    size = TEXT_BYTES * (4 if json else 1)
    if mode is not AttentionMode.NONE:
        size += width * (TOKEN_BYTES + 2 * (floats + 1))  # cls attention and rollout
    if mode is AttentionMode.FULL:
        size += layers * heads * width * width * floats + 16
    return size


def response_sizes(
    num_tokens: Sequence[int], mode: AttentionMode, layers: int, heads: int, padded: bool, json: bool = False
) -> list[int]:
    """Upper estimates of the answer's size to the first 1, 2, ... texts, in one pass. padded:
    every text's attention is as wide as the longest one's (KServe's tensors), so a longer text
    widens the ones before it too."""
    sizes, total, widest = [], 0, 0
    for count, tokens in enumerate(num_tokens, start=1):
        widest = max(widest, tokens)
        if padded:
            sizes.append(count * text_bytes(widest, mode, layers, heads, json))
        else:
            total += text_bytes(tokens, mode, layers, heads, json)
            sizes.append(total)
    return sizes


def response_bytes(
    num_tokens: Sequence[int], mode: AttentionMode, layers: int, heads: int, padded: bool
) -> int:
    """An upper estimate of the answer's size to all of `num_tokens`."""
    return response_sizes(num_tokens, mode, layers, heads, padded)[-1]


class AnswerSizePolicy:
    """The message limit applied to one model's answers."""

    def __init__(self, max_message_bytes: int, layers: int, heads: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.layers = layers
        self.heads = heads

    def check_request(
        self, num_tokens: Sequence[int], mode: AttentionMode, padded: bool, json: bool = False
    ) -> None:
        """InvalidInput when the answer to texts of `num_tokens` tokens, in protobuf or (json) in
        JSON, could never fit the limit."""
        limit = self.max_message_bytes
        sizes = response_sizes(num_tokens, mode, self.layers, self.heads, padded, json)
        size = sizes[-1]
        if size <= limit:
            return
        fitting = sum(1 for prefix in sizes if prefix <= limit)  # the sizes only grow
        advice = f"send at most {fitting} such texts per request, or" if fitting else "send shorter texts, or"
        raise InvalidInput(
            f"the answer to these {len(num_tokens)} texts with attention={mode.value}"
            f"{' in JSON' if json else ''} would take about "
            f"{size / 2**20:.1f} MiB ({self.layers} layers x {self.heads} heads x tokens² floats "
            f"per text); the message limit is {limit / 2**20:.1f} MiB: {advice} ask for attention=summary"
        )

    def check_sent(self, size: int) -> None:
        """The last guard before sending: an answer over the message limit would reach the caller as
        a transport error; say what happened instead (check_request should have caught it)."""
        if size > self.max_message_bytes:
            raise InvalidInput(
                f"the answer takes {size / 2**20:.1f} MiB; the message limit is "
                f"{self.max_message_bytes / 2**20:.1f} MiB: send fewer texts per request"
            )
