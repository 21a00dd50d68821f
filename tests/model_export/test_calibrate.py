"""Temperature scaling: the fitted temperature, the calibration error, and folding it into the model."""

from __future__ import annotations

import pytest
import torch

from model_export.calibrate import MIN_TEMPERATURE, fit_temperature, fold_into, reliability


def overconfident(count: int = 4000, temperature: float = 3.0) -> tuple[torch.Tensor, list[int]]:
    """Logits whose labels were drawn from softmax(logits / temperature): calibrated only at that T."""
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(count, 2, generator=generator) * 4
    labels = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(1)
    return logits, labels.tolist()


def test_the_fitted_temperature_is_the_one_that_made_the_labels() -> None:
    logits, labels = overconfident()
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)


def test_calibration_error_falls_and_predictions_stay() -> None:
    logits, labels = overconfident()
    temperature = fit_temperature(logits, labels)
    before, after = reliability(logits, labels), reliability(logits, labels, temperature)
    assert before.ece > 0.1 and after.ece < 0.03
    assert sum(before.count) == sum(after.count) == len(labels)
    assert all(c is None or 0.5 <= c <= 1 for c in after.confidence)
    assert torch.equal((logits / temperature).argmax(-1), logits.argmax(-1))


def test_a_dev_split_wholly_right_cannot_scale_the_logits_without_bound() -> None:
    # small logits, all on the right side: the likelihood keeps rising as T falls
    logits = torch.tensor([[0.2, -0.2], [-0.3, 0.3]] * 50)
    assert fit_temperature(logits, [0, 1] * 50) == MIN_TEMPERATURE


def test_folding_divides_the_last_layer_output() -> None:
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    expected = layer(x) / 2.5
    fold_into(layer, 2.5)
    torch.testing.assert_close(layer(x), expected)
