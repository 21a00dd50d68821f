"""The optimiser's parameter groups (layer-wise learning-rate decay, the fresh head, weight decay),
the rows each epoch trains on, and model selection over several dev sets."""

from __future__ import annotations

import pytest
import torch

from model_export.config import ModelConfig, TrainConfig
from model_export.model import SentimentTransformer
from model_export.train import BalancedEpochs, layer_depths, mean_accuracy, parameter_groups


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


def test_balanced_epochs_use_every_row_of_the_larger_label_in_turn() -> None:
    # rows 0-3 are outside any group; rows 4-5 positive and 6-13 negative form one group
    labels = [0, 1, 0, 1] + [1, 1] + [0] * 8
    epochs = BalancedEpochs(labels, [range(4, 14)], seed=5)
    seen_negative: set[int] = set()
    for epoch in range(1, 5):
        rows = epochs.rows(epoch)
        assert rows[:4] == [0, 1, 2, 3]  # always there
        grouped = rows[4:]
        assert sorted(i for i in grouped if labels[i] == 1) == [4, 5]  # the smaller label, every epoch
        negative = [i for i in grouped if labels[i] == 0]
        assert len(negative) == 2 and len(set(negative)) == 2  # as many as the smaller label
        seen_negative.update(negative)
    assert seen_negative == set(range(6, 14))  # four epochs of two: all eight, none thrown away
    assert epochs.size() == 8
    assert BalancedEpochs(labels, [], seed=5).rows(3) == list(range(14))


def test_model_selection_weighs_each_dev_set_alike() -> None:
    class Fixed(torch.nn.Module):
        """Predicts label 0 for sequences starting with token 1, else label 1."""

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
            first = (ids[:, 0] == 1).float()
            return torch.stack([first, 1 - first], dim=-1), None

    small = ([[1], [2]], [0, 0])  # half right
    large = ([[1]] * 98, [0] * 98)  # all right
    scores = mean_accuracy(Fixed(), [small, large], 2)
    assert scores.accuracy == pytest.approx(0.75)  # (0.5 + 1.0) / 2, not 99 of 100
    assert scores.pooled.count == 100 and scores.pooled.confusion == [[99, 1], [0, 0]]
    # a set where label 1 is rare: answering 0 throughout is 90% accurate but only half balanced
    rare = ([[1]] * 9 + [[1]], [0] * 9 + [1])
    leaning = mean_accuracy(Fixed(), [rare], 2)
    assert leaning.accuracy == pytest.approx(0.9) and leaning.selection == pytest.approx(0.5)
