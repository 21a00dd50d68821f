"""Request texts checked against the limits and tokenized with the model's fast tokenizer.

Tokenizing reads only as much of a text as max_length can use: a prefix of CHARS_PER_TOKEN
characters per token, cut at whitespace so that no word is split, is encoded first; only a text
whose prefix yields fewer than max_length tokens (long runs of spaces, say) is read further, twice
as far each time. The result is the same as encoding the whole text, at a bounded cost: 256 texts
of 20,000 characters cost what 256 texts of about 2,000 do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from service.core.errors import InvalidInput
from service.core.explain import Word

CHARS_PER_TOKEN = 16  # words average 5 or 6 characters with their space; room for long ones
WHITESPACE = " \t\n\r\f\v"

UNREADABLE = "has no word the model can read (only spaces, control or zero-width characters)"
UNKNOWN_TOKEN = "[UNK]"  # WordPiece's token for what the vocabulary does not hold
JOINERS = ("'", "\u2019", "-")  # between letters, part of the word: wasn't, well-made
WINDOW_OVERLAP = 0.25  # of a window's width, read again by the next window (core/windows.py)


@dataclass(frozen=True)
class Piece:
    """One token of a text as the tokenizer cut it: its id, whether it is one the tokenizer adds
    ([CLS], [SEP]), and the characters of the text it stands for (their offsets, None for an added
    one; text: those characters as written, or the added token's name)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


def window_starts(tokens: int, width: int, overlap: float = WINDOW_OVERLAP) -> list[int]:
    """Where each window begins, for a text of `tokens` tokens and windows of `width`: a step of
    width less the overlap, the last window ending at the text's end."""
    if tokens <= width:
        return [0]
    step = max(1, width - int(width * overlap))
    return [*range(0, tokens - width, step), tokens - width]


@dataclass(frozen=True)
class Encoded:
    """One text as the model reads it."""

    ids: list[int]
    tokens: list[str]
    truncated: bool
    unknown: int = 0  # tokens the vocabulary did not know ([UNK])

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Windows:
    """A long text as the model reads it whole (core/windows.py): every token, and its windows."""

    whole: Encoded  # [CLS] every token [SEP], not truncated
    parts: list[Encoded]
    begins: list[int]  # where each part begins among the text's tokens ([CLS] not counted)


def _words(text: str, encoding: Encoding) -> list[Word]:
    """The words of one encoded text as a person sees them: tokens that touch (no space between)
    are one word ("wasn't", "unbelievable"), except punctuation, which is a word of its own ("rude"
    and "." of "rude."; "!!") unless it joins letters ("wasn't", "well-made")."""
    offsets = encoding.offsets
    tokens = [position for position, special in enumerate(encoding.special_tokens_mask) if not special]
    punct = {position: not any(c.isalnum() for c in text[slice(*offsets[position])]) for position in tokens}
    groups: list[list[int]] = []
    for index, position in enumerate(tokens):
        touches = bool(groups) and offsets[groups[-1][-1]][1] == offsets[position][0]
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        joins = (
            punct[position]
            and text[slice(*offsets[position])] in JOINERS
            and touches
            and not punct[groups[-1][-1]]
            and after is not None
            and offsets[after][0] == offsets[position][1]
            and not punct[after]
        )
        if joins:
            punct[position] = False  # reads as part of the word it joins
        if touches and punct[position] == punct[groups[-1][-1]]:
            groups[-1].append(position)
        else:
            groups.append([position])
    return [
        Word(
            text[offsets[group[0]][0] : offsets[group[-1]][1]],
            offsets[group[0]][0],
            offsets[group[-1]][1],
            tuple(group),
        )
        for group in groups
    ]


def _prefix(text: str, chars: int) -> str:
    """The first `chars` characters of `text`, ending at whitespace when there is one in the second half."""
    if len(text) <= chars:
        return text
    cut = max(text.rfind(space, chars // 2, chars) for space in WHITESPACE)
    return text[: cut if cut > 0 else chars]


class Preprocessor:
    """Validates and tokenizes; holds the limits so every API applies the same ones."""

    def __init__(self, tokenizer_path: Path, max_length: int, max_texts: int, max_chars: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()  # the batcher pads per batch
        self.tokenizer.enable_truncation(max_length=max_length)
        self.specials = self.tokenizer.num_special_tokens_to_add(False)  # [CLS] and [SEP]
        self.unknown_id = self.tokenizer.token_to_id(UNKNOWN_TOKEN)
        self.whole = Tokenizer.from_str(self.tokenizer.to_str())  # the same, cutting nothing
        self.whole.no_truncation()
        self._around = self.tokenizer.encode("")  # [CLS] [SEP]: what the tokenizer adds around a text
        self.max_length = max_length
        self.max_texts = max_texts
        self.max_chars = max_chars

    def check_count(self, count: int) -> None:
        """Raise InvalidInput when a request of `count` texts breaks the per-request limits."""
        if count == 0:
            raise InvalidInput("the request has no texts; send at least one")
        if count > self.max_texts:
            raise InvalidInput(f"the request has {count} texts; the limit is {self.max_texts} per request")

    def problem(self, text: str) -> str | None:
        """What makes `text` unfit to be read (as the end of a sentence naming it), or None."""
        if len(text) > self.max_chars:
            return f"has {len(text)} characters; the limit is {self.max_chars}"
        if not text.strip():
            return "is empty or only whitespace"
        return None

    def validate(self, texts: Sequence[str], positions: Sequence[int] | None = None) -> None:
        """Raise InvalidInput naming the first text that breaks a limit (by its place in the request:
        positions[i] for texts[i] when the texts are some of a request's)."""
        self.check_count(len(texts))
        for index, text in enumerate(texts):
            problem = self.problem(text)
            if problem is not None:
                raise InvalidInput(f"text {index if positions is None else positions[index]} {problem}")

    def _encode_all(self, texts: Sequence[str]) -> list[Encoding]:
        return (
            [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(list(texts))
        )

    def encode(self, texts: Sequence[str], positions: Sequence[int] | None = None) -> list[Encoded]:
        """Validate, then tokenize; errors name a text by positions[i] when given (validate).

        Runs in well under a millisecond for a few short texts; callers move large requests off
        the event loop (Engine.predict).
        """
        self.validate(texts, positions)
        encoded = self.tokenize(texts)
        for index, each in enumerate(encoded):
            if not self.readable(each):
                raise InvalidInput(f"text {index if positions is None else positions[index]} {UNREADABLE}")
        return encoded

    def readable(self, encoded: Encoded) -> bool:
        """Whether the text gave the model a word to read, besides [CLS] and [SEP]."""
        return len(encoded.ids) > self.specials

    def tokenize(self, texts: Sequence[str]) -> list[Encoded]:
        """[CLS] ... [SEP], truncated at max_length, unpadded; no limit checked (encode checks them)."""
        unknown = self.unknown_id
        return [
            Encoded(e.ids, e.tokens, bool(e.overflowing), 0 if unknown is None else e.ids.count(unknown))
            for e in self._read(texts)
        ]

    def words(self, texts: Sequence[str]) -> list[list[Word]]:
        """The words of each text among the tokens the model reads (tokenize's), as a person sees
        them: the tokenizer's words (punctuation apart), each with the tokens that read it."""
        return [_words(text, e) for text, e in zip(texts, self._read(texts), strict=True)]

    def _read(self, texts: Sequence[str]) -> list[Encoding]:
        """What tokenize reads of each text, as the tokenizer's encodings."""
        if not texts:
            return []
        chars = self.max_length * CHARS_PER_TOKEN
        read = [_prefix(text, chars) for text in texts]
        encodings = self._encode_all(read)
        # a prefix that did not fill max_length says nothing of what follows it: read further
        short = [i for i, e in enumerate(encodings) if len(read[i]) < len(texts[i]) and not e.overflowing]
        while short:
            chars *= 2
            for i in short:
                read[i] = _prefix(texts[i], chars)
            for i, encoding in zip(short, self._encode_all([read[i] for i in short]), strict=True):
                encodings[i] = encoding
            short = [i for i in short if len(read[i]) < len(texts[i]) and not encodings[i].overflowing]
        return encodings

    def windows(self, text: str) -> Windows:
        """A text the model would cut, as overlapping windows as wide as the model reads, each
        wrapped as a text of its own ([CLS] piece [SEP]), to be read whole (core/windows.py)."""
        encoding = self.whole.encode(text, add_special_tokens=False)
        ids, tokens = encoding.ids, encoding.tokens
        around = self._around
        width, unknown = self.max_length - self.specials, self.unknown_id

        def wrapped(lo: int, hi: int) -> Encoded:
            window = [around.ids[0], *ids[lo:hi], around.ids[-1]]
            names = [around.tokens[0], *tokens[lo:hi], around.tokens[-1]]
            return Encoded(window, names, False, 0 if unknown is None else window.count(unknown))

        begins = window_starts(len(ids), width)
        return Windows(wrapped(0, len(ids)), [wrapped(begin, begin + width) for begin in begins], begins)

    def pieces(self, texts: Sequence[str], special: bool = True) -> list[list[Piece]]:
        """Every token of each text, past max_length too (what the model would cut is shown, not
        cut); special: with the tokens the tokenizer adds. The count and character limits hold."""
        self.check_count(len(texts))
        for index, text in enumerate(texts):
            if len(text) > self.max_chars:
                raise InvalidInput(f"text {index} has {len(text)} characters; the limit is {self.max_chars}")
        encodings = self.whole.encode_batch(list(texts), add_special_tokens=special)
        return [
            [
                Piece(i, token, True, None, None) if added else Piece(i, text[start:stop], False, start, stop)
                for i, token, added, (start, stop) in zip(
                    e.ids, e.tokens, e.special_tokens_mask, e.offsets, strict=True
                )
            ]
            for text, e in zip(texts, encodings, strict=True)
        ]
