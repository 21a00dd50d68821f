"""The optimiser's parameter groups: layer-wise learning-rate decay, the fresh head, weight decay."""

from __future__ import annotations

import pytest
import torch

from model_export.config import ModelConfig, TrainConfig
from model_export.model import SentimentTransformer
from model_export.train import layer_depths, parameter_groups


def _rates(model: SentimentTransformer, config: TrainConfig) -> dict[str, tuple[float, float]]:
    head = list(model.classifier.parameters())
    by_id = {}
    for group in parameter_groups(model, config, head):
        for parameter in group["params"]:
            by_id[id(parameter)] = (group["lr"], group["weight_decay"])
    return {name: by_id[id(p)] for name, p in model.named_parameters() if p.requires_grad}


def test_each_layer_learns_at_decay_times_the_layer_above() -> None:
    model = SentimentTransformer(ModelConfig(vocab_size=50, d_model=16, n_heads=2, n_layers=3, d_ff=32))
    config = TrainConfig(lr=1e-3, layer_lr_decay=0.5, head_lr_multiplier=10.0, weight_decay=0.01)
    rates = _rates(model, config)
    assert layer_depths(model)["layers.2.attn.w_q.weight"] == 0
    assert rates["layers.2.attn.w_q.weight"] == (pytest.approx(1e-3), 0.01)
    assert rates["layers.1.ff.w_1.weight"] == (pytest.approx(5e-4), 0.01)
    assert rates["layers.0.norm1.bias"] == (pytest.approx(2.5e-4), 0.0)  # no decay on vectors
    assert rates["tok_embed.weight"] == (pytest.approx(1.25e-4), 0.01)  # below the lowest layer
    assert rates["classifier.weight"] == (pytest.approx(1e-2), 0.0)  # the fresh head, undecayed
    # every trainable parameter is in exactly one group
    groups = parameter_groups(model, config, list(model.classifier.parameters()))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_no_decay_keeps_every_layer_at_the_base_rate_and_frozen_parameters_out() -> None:
    model = SentimentTransformer(ModelConfig(vocab_size=50, d_model=16, n_heads=2, n_layers=2, d_ff=32))
    model.tok_embed.weight.requires_grad_(False)
    rates = _rates(model, TrainConfig(lr=2e-3))
    assert "tok_embed.weight" not in rates
    assert {lr for name, (lr, _) in rates.items() if not name.startswith("classifier")} == {2e-3}
    groups = parameter_groups(model, TrainConfig(lr=2e-3))
    assert all(p is not model.tok_embed.weight for g in groups for p in g["params"])
    assert torch.optim.AdamW(groups, lr=2e-3)  # the groups are what AdamW accepts
