"""Request texts checked against the limits and tokenized with the model's fast tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from service.errors import InvalidInput


@dataclass(frozen=True)
class Encoded:
    """One text as the model reads it."""

    ids: list[int]
    tokens: list[str]
    truncated: bool


class Preprocessor:
    """Validates and tokenizes; holds the limits so every API applies the same ones."""

    def __init__(self, tokenizer_path: Path, max_length: int, max_texts: int, max_chars: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()  # the batcher pads per batch
        self.tokenizer.enable_truncation(max_length=max_length)
        self.max_length = max_length
        self.max_texts = max_texts
        self.max_chars = max_chars

    def validate(self, texts: Sequence[str]) -> None:
        """Raise InvalidInput naming the first text that breaks a limit."""
        if not texts:
            raise InvalidInput("the request has no texts; send at least one")
        if len(texts) > self.max_texts:
            raise InvalidInput(
                f"the request has {len(texts)} texts; the limit is {self.max_texts} per request"
            )
        for index, text in enumerate(texts):
            if len(text) > self.max_chars:
                raise InvalidInput(f"text {index} has {len(text)} characters; the limit is {self.max_chars}")
            if not text.strip():
                raise InvalidInput(f"text {index} is empty or only whitespace")

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Validate, then tokenize: [CLS] ... [SEP], truncated at max_length, unpadded."""
        self.validate(texts)
        encodings = (
            [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(list(texts))
        )
        return [Encoded(e.ids, e.tokens, bool(e.overflowing)) for e in encodings]
