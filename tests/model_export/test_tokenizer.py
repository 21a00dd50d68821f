"""WordPiece training: the contract's special tokens, truncation, no padding."""

from __future__ import annotations

from pathlib import Path

from model_export.tokenizer import load_tokenizer, train_wordpiece

TEXTS = ["The film was great", "the film was awful", "A great cast", "an awful script"] * 20


def test_trained_tokenizer_follows_contract(tmp_path: Path) -> None:
    tokenizer = train_wordpiece(TEXTS, vocab_size=200, max_length=6)
    assert tokenizer.token_to_id("[PAD]") == 0
    encoding = tokenizer.encode("THE FILM")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert encoding.tokens[1:-1] == ["the", "film"]
    long = tokenizer.encode("the film was great the film was awful")
    assert len(long.ids) == 6 and long.tokens[-1] == "[SEP]"
    assert len(tokenizer.encode_batch(["great", "the film was great"])[0].ids) == 3  # no padding
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    again = load_tokenizer(path, max_length=6)
    assert again.encode("the film").ids == encoding.ids
