"""Request validation and tokenization with the model's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from service.core.errors import InvalidInput
from service.core.preprocess import Preprocessor


@pytest.fixture(scope="module")
def preprocessor(model_dir: Path) -> Preprocessor:
    return Preprocessor(model_dir / "tokenizer.json", max_length=8, max_texts=3, max_chars=50)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "no texts"),
        (["a", "b", "c", "d"], "4 texts; the limit is 3"),
        (["fine", "\t \n"], "text 1 is empty or only whitespace"),
        (["x" * 51], "text 0 has 51 characters; the limit is 50"),
    ],
)
def test_limits_are_named_in_the_error(preprocessor: Preprocessor, texts: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        preprocessor.encode(texts)


def test_encoding_adds_specials_truncates_and_reports_it(preprocessor: Preprocessor) -> None:
    short, long = preprocessor.encode(["Good", "one two three four five six seven eight nine"])
    assert short.tokens[0] == "[CLS]" and short.tokens[-1] == "[SEP]" and not short.truncated
    assert len(long.ids) == 8 and long.truncated and long.tokens[-1] == "[SEP]"
    (alone,) = preprocessor.encode(["Good"])
    assert alone.ids == short.ids


@pytest.mark.parametrize("text", ["\u200b\u200b", "\x00", "\u200d\ufeff\u202e", " \x00 \u200b "])
def test_a_text_with_no_word_is_refused_like_an_empty_one(preprocessor: Preprocessor, text: str) -> None:
    with pytest.raises(InvalidInput, match="text 1 has no word the model can read"):
        preprocessor.encode(["fine", text])


PIECES = st.sampled_from(
    [
        "good",
        "film",
        "un",
        "##believable",
        "Ünïcödé",
        "😀",
        "不好",
        "!",
        ",",
        "'s",
        "x" * 150,
        "\u200b",
        "\x00",
    ]
)
SPACES = st.integers(1, 400).map(lambda n: " " * n) | st.sampled_from(["\n", "\t", "\u3000", "\u00a0"])


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(st.tuples(PIECES, SPACES), max_size=60), st.text(max_size=30))
def test_reading_a_bounded_prefix_encodes_exactly_like_the_whole_text(
    model_dir: Path, words: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(w + s for w, s in words) + tail
    bounded = Preprocessor(model_dir / "tokenizer.json", max_length=8, max_texts=3, max_chars=100_000)
    whole = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    whole.no_padding()
    whole.enable_truncation(max_length=8)
    expected = whole.encode(text)
    if not text.strip() or len(expected.ids) <= 2:
        with pytest.raises(InvalidInput):
            bounded.encode([text])
        return
    (got,) = bounded.encode([text])
    assert (got.ids, got.tokens, got.truncated) == (expected.ids, expected.tokens, bool(expected.overflowing))
