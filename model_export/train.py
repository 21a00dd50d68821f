"""Training: AdamW with warmup, length-bucketed batches, balanced epochs, distillation from a teacher, and
the one loop (fit) that stops early on the dev sets' balanced accuracy."""

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

from model_export.scoring import DevScores, DevSet, mean_accuracy, pad_tensors

if TYPE_CHECKING:
    from model_export.config import TrainConfig

log = logging.getLogger(__name__)

UNLABELLED = -1  # the label of a training row that only a teacher's soft label speaks for


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


@dataclass(frozen=True)
class Schedule:
    """How long and how fast a model trains: epochs of `batch_size` rows, the learning rate warmed up
    over `warmup_ratio` of the steps then decayed to 0, and training stopped after `patience` epochs
    without a better dev score (None: every epoch runs)."""

    epochs: int
    batch_size: int
    warmup_ratio: float
    seed: int
    patience: int | None = None
    name: str = "epoch"  # how the log and the progress bar call an epoch


def fit(
    model: nn.Module,
    lengths: Sequence[int],
    epochs: BalancedEpochs,
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[list[int]], Tensor],
    score: Callable[[], DevScores],
    schedule: Schedule,
) -> History:
    """The one training loop: each epoch's rows (epochs.rows) in batches of similar lengths,
    batch_loss(rows) minimised with gradients clipped at 1, the dev sets scored after each epoch
    (score()), and on return `model` holds the weights of its best epoch. The trainer and the
    teacher differ only in their loss and what they feed it."""
    rng = random.Random(schedule.seed)
    steps = -(-epochs.size() // schedule.batch_size) * schedule.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(steps, schedule.warmup_ratio))
    trainable = [p for p in model.parameters() if p.requires_grad]
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in range(1, schedule.epochs + 1):
        started = time.monotonic()
        model.train()
        total_loss = 0.0
        batches = bucketed(lengths, epochs.rows(epoch), schedule.batch_size, rng)
        desc = f"{schedule.name} {epoch}/{schedule.epochs}"
        progress = tqdm(batches, desc=desc, unit="batch", disable=None)
        for step, members in enumerate(progress, start=1):
            loss = batch_loss(members)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            progress.set_postfix(loss=f"{total_loss / step:.4f}")
        scores = score()
        improved = history.record(total_loss / max(1, len(batches)), scores, time.monotonic() - started)
        left = sum(history.epoch_seconds) / epoch * (schedule.epochs - epoch)
        log.info(
            "%s %d: train loss %.4f, dev accuracy %.4f %s, balanced %.4f, %.0f s (at most %.0f s left)",
            schedule.name,
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
            if schedule.patience is not None and stale >= schedule.patience and epoch < schedule.epochs:
                history.stopped_early = True
                log.info("no better dev score for %d epochs: stopping", stale)
                break
    model.load_state_dict(best_state)
    model.eval()
    return history


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
    for parameter in frozen:
        parameter.requires_grad_(False)
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
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(members: list[int]) -> Tensor:
        input_ids, mask = pad_tensors([train_ids[i] for i in members])
        labels = torch.tensor([train_labels[i] for i in members])
        logits, _ = model(input_ids, mask)
        if distillation is None:
            loss: Tensor = loss_fn(logits, labels)
            return loss
        return distillation_loss(
            logits, labels, distillation.logits[members], distillation.temperature, distillation.weight
        )

    schedule = Schedule(config.epochs, config.batch_size, config.warmup_ratio, config.seed, config.patience)
    lengths = [len(ids) for ids in train_ids]
    return fit(
        model,
        lengths,
        epochs,
        optimizer,
        batch_loss,
        lambda: mean_accuracy(model, dev_sets, num_labels),
        schedule,
    )
