"""Request validation and tokenization with the model's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import InvalidInput
from service.preprocess import Preprocessor


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
