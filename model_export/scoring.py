"""How a model is scored offline: its logits over length-sorted batches, its predictions, and accuracy,
macro-F1 and balanced accuracy per dev set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model_contract import length_batches
from model_contract import pad as pad_ids


@dataclass
class Scores:
    """Accuracy, macro-F1 and the confusion matrix (rows: true label, columns: predicted)."""

    accuracy: float
    macro_f1: float
    confusion: list[list[int]]
    count: int

    def balanced_accuracy(self) -> float:
        """The mean over labels of the share of that label's texts predicted right."""
        recalls = [row[i] / sum(row) for i, row in enumerate(self.confusion) if sum(row)]
        return sum(recalls) / len(recalls) if recalls else 0.0

    @staticmethod
    def from_predictions(truth: Sequence[int], predicted: Sequence[int], num_labels: int) -> Scores:
        confusion = [[0] * num_labels for _ in range(num_labels)]
        for t, p in zip(truth, predicted, strict=True):
            confusion[t][p] += 1
        f1s = []
        for label in range(num_labels):
            tp = confusion[label][label]
            fp = sum(confusion[t][label] for t in range(num_labels)) - tp
            fn = sum(confusion[label]) - tp
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        correct = sum(confusion[i][i] for i in range(num_labels))
        total = max(len(truth), 1)
        return Scores(correct / total, sum(f1s) / num_labels, confusion, len(truth))


def pad_tensors(sequences: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """The contract's right-padding (model_contract.pad), as torch tensors."""
    ids, mask = pad_ids(sequences)
    return torch.from_numpy(ids), torch.from_numpy(mask)


@torch.no_grad()
def logits_of(model: nn.Module, ids: Sequence[Sequence[int]], batch_size: int = 64) -> Tensor:
    """The model's logits for each sequence, in input order, run over length-sorted batches."""
    model.eval()
    out: Tensor | None = None
    for members in length_batches([len(s) for s in ids], batch_size):
        input_ids, mask = pad_tensors([ids[i] for i in members])
        logits, _ = model(input_ids, mask)
        if out is None:
            out = torch.zeros(len(ids), logits.shape[-1])
        out[members] = logits.float()
    assert out is not None, "no sequences"
    return out


def predict(model: nn.Module, ids: Sequence[Sequence[int]]) -> list[int]:
    """Predicted label index of each sequence, in order."""
    labels: list[int] = logits_of(model, ids).argmax(-1).tolist()
    return labels


def evaluate(model: nn.Module, ids: Sequence[Sequence[int]], labels: Sequence[int], n: int) -> Scores:
    return Scores.from_predictions(labels, predict(model, ids), n)


DevSet = tuple[Sequence[Sequence[int]], Sequence[int]]  # token ids, labels


@dataclass
class DevScores:
    """Scores of several dev sets: pooled, and each set's own."""

    pooled: Scores
    parts: list[Scores]

    @staticmethod
    def of(truth: Sequence[Sequence[int]], predicted: Sequence[Sequence[int]], n: int) -> DevScores:
        """Each set's labels and predictions, in the same order of sets, scored."""
        parts = [Scores.from_predictions(t, p, n) for t, p in zip(truth, predicted, strict=True)]
        pooled = Scores.from_predictions([y for t in truth for y in t], [y for p in predicted for y in p], n)
        return DevScores(pooled, parts)

    @property
    def accuracy(self) -> float:
        """The mean of each set's accuracy: every corpus counts the same, however many texts it has."""
        return sum(p.accuracy for p in self.parts) / len(self.parts)

    @property
    def each(self) -> list[float]:
        return [round(p.accuracy, 4) for p in self.parts]

    @property
    def selection(self) -> float:
        """What model selection compares: the mean of each set's balanced accuracy, so that a corpus
        where one label is rare cannot reward a model for leaning towards the common one."""
        return sum(p.balanced_accuracy() for p in self.parts) / len(self.parts)


def mean_accuracy(model: nn.Module, dev_sets: Sequence[DevSet], n: int) -> DevScores:
    """Every dev set predicted in one pass, scored pooled and one by one."""
    predicted = predict(model, [x for set_ids, _ in dev_sets for x in set_ids])
    per_set, start = [], 0
    for set_ids, _ in dev_sets:
        per_set.append(predicted[start : start + len(set_ids)])
        start += len(set_ids)
    return DevScores.of([labels for _, labels in dev_sets], per_set, n)
