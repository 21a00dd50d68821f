"""Scores that mean what they say: temperature scaling fitted on dev, folded into the classifier.

A fine-tuned classifier's softmax is usually over- or under-confident. One temperature T divides the
logits so that, on dev, the negative log-likelihood is least (Guo et al. 2017, "On Calibration of
Modern Neural Networks"); the order of the logits, so every prediction, is unchanged. T is folded
into the last linear layer's weights and bias before export, so the exported graph, the server and
every client see calibrated scores with nothing applied anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

BINS = 10
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.25, 4.0


def fit_temperature(logits: Tensor, labels: Sequence[int]) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` (fitted on log T, so
    it stays positive)."""
    target = torch.tensor(list(labels))
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    loss_fn = nn.CrossEntropyLoss()

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = loss_fn(logits / log_t.exp(), target)
        loss.backward()
        return loss  # type: ignore[no-any-return]

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    # a dev split the model gets wholly right would drive T towards 0 (logits without bound)
    return min(max(float(log_t.detach().exp()), MIN_TEMPERATURE), MAX_TEMPERATURE)


@dataclass
class Reliability:
    """Expected calibration error and the reliability diagram's bins (equal widths of the winning
    probability: its mean, the accuracy, the count)."""

    ece: float
    nll: float  # mean negative log-likelihood, what the temperature minimises
    confidence: list[float | None]  # None: an empty bin
    accuracy: list[float | None]
    count: list[int]


def reliability(
    logits: Tensor, labels: Sequence[int], temperature: float = 1.0, bins: int = BINS
) -> Reliability:
    probabilities = torch.softmax(logits / temperature, dim=-1)
    confidence, predicted = probabilities.max(dim=-1)
    correct = (predicted == torch.tensor(list(labels))).float()
    # the winner of two labels has at least 1/2: the bins split [1/n, 1] evenly
    low = 1.0 / logits.shape[-1]
    edges = torch.linspace(low, 1.0, bins + 1)
    nll = float(nn.functional.cross_entropy(logits / temperature, torch.tensor(list(labels))))
    result = Reliability(0.0, round(nll, 5), [], [], [])
    for b in range(bins):
        upper = confidence <= edges[b + 1] if b == bins - 1 else confidence < edges[b + 1]
        inside = (confidence >= edges[b]) & upper
        count = int(inside.sum())
        result.count.append(count)
        if not count:
            result.confidence.append(None)
            result.accuracy.append(None)
            continue
        mean_confidence = float(confidence[inside].mean())
        mean_accuracy = float(correct[inside].mean())
        result.ece += count / len(labels) * abs(mean_accuracy - mean_confidence)
        result.confidence.append(round(mean_confidence, 4))
        result.accuracy.append(round(mean_accuracy, 4))
    result.ece = round(result.ece, 4)
    return result


@torch.no_grad()
def fold_into(classifier: nn.Linear, temperature: float) -> None:
    """Divide the last layer by `temperature`: its logits come out already scaled."""
    classifier.weight.div_(temperature)
    classifier.bias.div_(temperature)
