"""The pretrained MiniLM weights land in our hand-written encoder correctly."""

from __future__ import annotations

from pathlib import Path

import torch

from model_export.config import MINILM, Pooling, with_pooling
from model_export.pretrained import fetch, load_encoder
from model_export.tokenizer import load_tokenizer
from model_export.train import pad_tensors


def test_pretrained_encoder_keeps_its_meaning(cache_dir: Path) -> None:
    directory = fetch(cache_dir)
    model = load_encoder(directory, MINILM).eval()
    tokenizer = load_tokenizer(directory / "tokenizer.json", 128)
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The tax code was amended by parliament.",
    ]
    ids, mask = pad_tensors([e.ids for e in tokenizer.encode_batch(texts)])
    with torch.no_grad():
        hidden, attentions = model.encode(ids, mask)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # the encoder's own pooling
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    similar, unrelated = (pooled[0] @ pooled[1]).item(), (pooled[0] @ pooled[2]).item()
    # all-MiniLM-L6-v2 puts paraphrases far closer than unrelated sentences; wrong weights do not
    assert similar > 0.6 and abs(unrelated) < 0.2
    assert attentions.shape[1:3] == (6, 12)


def test_mean_pooling_loads_the_encoder_without_the_cls_pooler(cache_dir: Path) -> None:
    model = load_encoder(fetch(cache_dir), with_pooling(MINILM, Pooling.MEAN))
    assert model.pooler is None and model.config.pooling is Pooling.MEAN
    cls = load_encoder(fetch(cache_dir), MINILM)
    torch.testing.assert_close(model.layers[5].state_dict(), cls.layers[5].state_dict())
