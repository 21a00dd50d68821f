"""WordPiece tokenizers (Hugging Face `tokenizers`): trained on the training split, or pretrained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] is id 0


def _finish(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """Truncate at max_length, never pad: the server pads per batch."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def train_wordpiece(texts: Sequence[str], vocab_size: int, max_length: int) -> Tokenizer:
    """A lowercase WordPiece vocabulary learned from `texts` (the training split only)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS)
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece()
    return _finish(tokenizer, max_length)


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """A saved tokenizer.json (a pretrained encoder's own vocabulary), padding switched off.

    Batches are padded with the contract's PAD_ID whatever that id means in the vocabulary (in
    MPNet's it is `<s>`): the mask hides padded keys and no position depends on a token's id, and
    every export's verification checks that padding changes nothing."""
    return _finish(Tokenizer.from_file(str(path)), max_length)


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, [CLS] ... [SEP], truncated, unpadded."""
    return [encoding.ids for encoding in tokenizer.encode_batch(list(texts))]
