"""service/http/bodies.py: the count of a JSON body's values before it is parsed, however the body is
sliced, and the refusals a hostile body gets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.errors import InvalidInput
from service.http import bodies

# strings heavy in what the count must read right: quotes, backslashes and separators
TRICKY = st.text(st.sampled_from(['"', "\\", ",", ":", "[", "{", "a", "é"]), max_size=12)
VALUES = st.recursive(
    st.none() | st.integers() | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=20,
)


def reference(text: str) -> int:
    """One plus the separators and openings outside strings, read character by character."""
    count, inside, escaped = 1, False, False
    for char in text:
        if inside:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                inside = False
        elif char == '"':
            inside = True
        elif char in ",:[{":
            count += 1
    return count


@given(value=VALUES, chunk=st.integers(1, 12))
@settings(max_examples=300, derandomize=True)
def test_the_count_is_exact_however_the_body_is_sliced(value, chunk: int) -> None:
    data = json.dumps(value, ensure_ascii=False)
    whole = bodies.count_values(data.encode())
    original = bodies.CHUNK_BYTES
    bodies.CHUNK_BYTES = chunk
    try:
        sliced = bodies.count_values(data.encode())
    finally:
        bodies.CHUNK_BYTES = original
    assert whole == sliced == reference(data)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"texts": [' + b"1" * 5000 + b"]}", "number"),
        (b'{"id": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (json.dumps({"texts": ["a"] * 10_000}).encode(), "JSON values"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON values"),
        (b'["not", "an", "object"]', "JSON object"),
        (b"\xff{}", "UTF-8"),
    ],
)
def test_hostile_bodies_are_refused_with_a_message(body: bytes, said: str) -> None:
    with pytest.raises(InvalidInput, match=said):
        bodies.parse_json(body, "the body", 5000)


def test_a_pair_of_surrogates_is_one_character() -> None:
    assert bodies.parse_json(b'{"t": "\\ud83d\\ude00"}', "the body", 10) == {"t": "\U0001f600"}
