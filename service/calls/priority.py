"""How each API says how soon a request's texts want their turn, read into the queue's Priority
(core/fair_queue.py): sentiment.v1's `priority` field, Triton's `priority` request parameter (1 the
highest, larger values later, 0 the default), the `priority` of vLLM's requests (smaller sooner, 0
the default), and the urgency of an HTTP `Priority` header (RFC 9218: u=0 to u=7, 3 the default)."""

from __future__ import annotations

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.core.errors import InvalidInput
from service.core.fair_queue import Priority

PROTO_OF: dict[Priority, pb.Priority] = {
    Priority.HIGH: pb.PRIORITY_HIGH,
    Priority.NORMAL: pb.PRIORITY_NORMAL,
    Priority.LOW: pb.PRIORITY_LOW,
}
PROTO: dict[int, Priority] = {pb.PRIORITY_UNSPECIFIED: Priority.NORMAL, **{v: p for p, v in PROTO_OF.items()}}
TRITON_LEVEL = {Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
DEFAULT_URGENCY = 3  # RFC 9218's default; 0 to 2 are more urgent, 4 to 7 less


def from_proto(value: int) -> Priority:
    priority = PROTO.get(value)
    if priority is None:
        raise InvalidInput(f"priority {value} is unknown; use HIGH, NORMAL or LOW")
    return priority


def from_triton(level: int) -> Priority:
    """Triton's priority level: 1 is the highest, 2 the next; 0 asks for the default."""
    if level < 0:
        raise InvalidInput(f"parameter priority={level} must be 0 (the default), 1 (the highest) or more")
    return {0: Priority.NORMAL, 1: Priority.HIGH, 2: Priority.NORMAL}.get(level, Priority.LOW)


def from_signed(value: int) -> Priority:
    """vLLM's and SGLang's request priority: below 0 sooner, above 0 later."""
    return Priority.HIGH if value < 0 else Priority.NORMAL if value == 0 else Priority.LOW


def from_urgency(header: str | None) -> Priority | None:
    """The urgency of an HTTP Priority header's value ("u=1", "u=5, i"), or None when it has none; a
    value that does not parse is ignored, as RFC 9218 asks."""
    if header is None:
        return None
    for member in header.split(","):
        key, _, value = member.strip().partition("=")
        if key == "u" and value.isdigit() and len(value) == 1 and int(value) <= 7:
            urgency = int(value)
            if urgency == DEFAULT_URGENCY:
                return Priority.NORMAL
            return Priority.HIGH if urgency < DEFAULT_URGENCY else Priority.LOW
    return None
