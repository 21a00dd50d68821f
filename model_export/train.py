"""The training loop: AdamW with warmup, length-bucketed batches, early stopping on dev accuracy."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from model_contract import pad as pad_ids

if TYPE_CHECKING:
    from model_export.config import TrainConfig

log = logging.getLogger(__name__)

UNLABELLED = -1  # the label of a training row that only a teacher's soft label speaks for


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


@dataclass
class History:
    """One entry per epoch, written to metrics.json and drawn as the training curve."""

    train_loss: list[float] = field(default_factory=list)
    dev_accuracy: list[float] = field(default_factory=list)
    dev_macro_f1: list[float] = field(default_factory=list)
    dev_accuracy_each: list[list[float]] = field(default_factory=list)  # per dev set: movies, tweets
    dev_selection: list[float] = field(default_factory=list)  # mean balanced accuracy: the epoch kept
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    def record(self, train_loss: float, scores: DevScores, seconds: float) -> bool:
        """Add an epoch; True when its dev score is the best so far (the epoch to keep)."""
        best = max(self.dev_selection, default=-1.0)
        self.train_loss.append(train_loss)
        self.dev_accuracy.append(scores.accuracy)
        self.dev_macro_f1.append(scores.pooled.macro_f1)
        self.dev_accuracy_each.append(scores.each)
        self.dev_selection.append(round(scores.selection, 4))
        self.epoch_seconds.append(seconds)
        if self.dev_selection[-1] > best:
            self.best_epoch = len(self.train_loss)
            return True
        return False


def pad_tensors(sequences: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """The contract's right-padding (model_contract.pad), as torch tensors."""
    ids, mask = pad_ids(sequences)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def bucketed(
    lengths: Sequence[int], rows: Sequence[int], batch_size: int, rng: random.Random | None
) -> list[list[int]]:
    """`rows` cut into batches of similar lengths (little padding), as lists of row indices;
    shuffled within buckets of 50 batches, and the batches shuffled, when `rng` is given."""
    order = list(rows)
    if rng is not None:
        rng.shuffle(order)
    bucket = batch_size * 50
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict(model: nn.Module, ids: Sequence[Sequence[int]], batch_size: int = 64) -> list[int]:
    """Predicted label index of each sequence, in order."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    predicted = [0] * len(ids)
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        input_ids, mask = pad_tensors([ids[i] for i in members])
        logits, _ = model(input_ids, mask)
        for i, label in zip(members, logits.argmax(-1).tolist(), strict=True):
            predicted[i] = label
    return predicted


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


class BalancedEpochs:
    """The rows one epoch trains on: every row of a group's smallest label, and as many of each of
    its other labels, taken in turn from a fixed shuffle so that successive epochs see different
    rows of the larger labels and nothing is thrown away for good. `rotating` rows (unlabelled
    text) are taken `per_epoch` at a time, in turn, the same way. Other rows are used every epoch."""

    def __init__(
        self,
        labels: Sequence[int],
        groups: Sequence[Sequence[int]],
        seed: int,
        rotating: Sequence[int] = (),
        per_epoch: int = 0,
    ) -> None:
        rng = random.Random(seed)
        grouped = {i for group in groups for i in group} | set(rotating)
        self.always = [i for i in range(len(labels)) if i not in grouped]
        self.pools: list[list[list[int]]] = []
        for group in groups:
            by_label: dict[int, list[int]] = {}
            for i in group:
                by_label.setdefault(labels[i], []).append(i)
            pools = list(by_label.values())
            for pool in pools:
                rng.shuffle(pool)
            self.pools.append(pools)
        self.rotating = list(rotating)
        rng.shuffle(self.rotating)
        self.per_epoch = min(per_epoch, len(self.rotating))

    @staticmethod
    def _turn(pool: Sequence[int], size: int, epoch: int) -> list[int]:
        start = (epoch - 1) * size
        return [pool[(start + k) % len(pool)] for k in range(size)]

    def rows(self, epoch: int) -> list[int]:
        """Indices for epoch 1, 2, ..."""
        chosen = list(self.always)
        for pools in self.pools:
            size = min(len(pool) for pool in pools)
            for pool in pools:
                chosen += self._turn(pool, size, epoch)
        if self.per_epoch:
            chosen += self._turn(self.rotating, self.per_epoch, epoch)
        return chosen

    def size(self) -> int:
        return len(self.rows(1))


@dataclass(frozen=True)
class Distillation:
    """A teacher's word on every training row (Hinton et al. 2015): the student matches the
    teacher's label distribution softened by `temperature`, weighted `weight` against the true
    label on labelled rows and alone on UNLABELLED ones, of which `unlabelled_per_epoch` are
    taken per epoch, in turn."""

    logits: Tensor  # (rows, labels): the teacher's logits for each training row, in order
    temperature: float = 2.0
    weight: float = 0.5
    unlabelled_per_epoch: int = 0


def distillation_loss(
    student: Tensor, labels: Tensor, teacher: Tensor, temperature: float, weight: float
) -> Tensor:
    """Mean over the batch of (1 - weight) x cross-entropy + weight x T^2 x KL(teacher || student)
    at temperature T on labelled rows, and T^2 x KL alone on UNLABELLED rows. T^2 keeps the soft
    term's gradients the size of the hard term's whatever T is."""
    hard = nn.functional.cross_entropy(student, labels.clamp(min=0), reduction="none")
    soft = (
        nn.functional.kl_div(
            nn.functional.log_softmax(student / temperature, dim=-1),
            nn.functional.log_softmax(teacher / temperature, dim=-1),
            reduction="none",
            log_target=True,
        ).sum(dim=-1)
        * temperature**2
    )
    per_row = torch.where(labels >= 0, (1 - weight) * hard + weight * soft, soft)
    return per_row.mean()


def warmup_linear(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor: linear rise over the warmup steps, then linear decay to 0."""
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def layer_depths(model: nn.Module) -> dict[str, int]:
    """How far below the top each parameter sits: 0 for the top encoder layer and everything above
    it (pooler, classifier), 1 for the layer below, ..., n_layers for the embeddings."""
    layers = getattr(model, "layers", None)
    count = len(layers) if isinstance(layers, nn.ModuleList) else 0
    depths = {}
    for name, _ in model.named_parameters():
        if name.startswith("layers."):
            depths[name] = count - 1 - int(name.split(".")[1])
        elif name.startswith(("tok_embed", "pos_embed", "embed_norm")):
            depths[name] = count
        else:
            depths[name] = 0
    return depths


def parameter_groups(
    model: nn.Module, config: TrainConfig, head: Sequence[Tensor] = ()
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: weight decay on matrices only; the fresh `head` at
    head_lr_multiplier x lr; each encoder layer at layer_lr_decay^depth x lr (layer_depths), so the
    lower, more general layers of a pretrained encoder move less."""
    fast = {id(p) for p in head}
    groups: dict[tuple[float, float], list[Tensor]] = {}
    depths = layer_depths(model)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in fast:
            key = (config.lr * config.head_lr_multiplier, 0.0)
        else:
            decay = config.weight_decay if parameter.dim() >= 2 else 0.0
            key = (config.lr * config.layer_lr_decay ** depths[name], decay)
        groups.setdefault(key, []).append(parameter)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


def train(
    model: nn.Module,
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    dev_sets: Sequence[DevSet],
    config: TrainConfig,
    num_labels: int,
    frozen: Sequence[Tensor] = (),
    head: Sequence[Tensor] = (),
    balanced: Sequence[Sequence[int]] = (),
    distillation: Distillation | None = None,
) -> History:
    """Fit `model` in place; on return it holds the weights of its best epoch by the mean accuracy
    of the dev sets. The rows of each `balanced` group are sampled per epoch (BalancedEpochs). With
    a `distillation`, the loss is distillation_loss and rows labelled UNLABELLED train too."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    for parameter in frozen:
        parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model, config, head), lr=config.lr)
    unlabelled = [i for i, label in enumerate(train_labels) if label == UNLABELLED]
    if unlabelled and distillation is None:
        raise ValueError(f"{len(unlabelled)} training rows have no label and there is no teacher")
    epochs = BalancedEpochs(
        train_labels,
        balanced,
        config.seed,
        rotating=unlabelled,
        per_epoch=distillation.unlabelled_per_epoch if distillation else 0,
    )
    steps_per_epoch = -(-epochs.size() // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear(steps_per_epoch * config.epochs, config.warmup_ratio)
    )
    loss_fn = nn.CrossEntropyLoss()
    lengths = [len(ids) for ids in train_ids]
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in range(1, config.epochs + 1):
        started = time.monotonic()
        model.train()
        total_loss = 0.0
        epoch_batches = bucketed(lengths, epochs.rows(epoch), config.batch_size, rng)
        progress = tqdm(epoch_batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=None)
        for step, members in enumerate(progress, start=1):
            input_ids, mask = pad_tensors([train_ids[i] for i in members])
            labels = torch.tensor([train_labels[i] for i in members])
            logits, _ = model(input_ids, mask)
            if distillation is None:
                loss = loss_fn(logits, labels)
            else:
                loss = distillation_loss(
                    logits,
                    labels,
                    distillation.logits[members],
                    distillation.temperature,
                    distillation.weight,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            progress.set_postfix(loss=f"{total_loss / step:.4f}")
        scores = mean_accuracy(model, dev_sets, num_labels)
        improved = history.record(total_loss / max(1, len(epoch_batches)), scores, time.monotonic() - started)
        left = sum(history.epoch_seconds) / epoch * (config.epochs - epoch)
        log.info(
            "epoch %d: train loss %.4f, dev accuracy %.4f %s, balanced %.4f, %.0f s (at most %.0f s left)",
            epoch,
            history.train_loss[-1],
            scores.accuracy,
            scores.each,
            scores.selection,
            history.epoch_seconds[-1],
            left,
        )
        if improved:
            stale, best_state = 0, copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience and epoch < config.epochs:
                history.stopped_early = True
                log.info("no better dev score for %d epochs: stopping", stale)
                break
    model.load_state_dict(best_state)
    model.eval()
    return history
