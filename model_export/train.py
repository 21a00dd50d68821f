"""The training loop: AdamW with warmup, length-bucketed batches, early stopping on dev accuracy."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from model_contract import pad as pad_ids
from model_export.config import TrainConfig

log = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor, Tensor]  # input_ids, attention_mask, labels


@dataclass
class Scores:
    """Accuracy, macro-F1 and the confusion matrix (rows: true label, columns: predicted)."""

    accuracy: float
    macro_f1: float
    confusion: list[list[int]]
    count: int

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
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def pad_tensors(sequences: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """The contract's right-padding (model_contract.pad), as torch tensors."""
    ids, mask = pad_ids(sequences)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def length_bucketed_batches(
    ids: Sequence[Sequence[int]], labels: Sequence[int], batch_size: int, rng: random.Random | None
) -> list[Batch]:
    """Batches of similar lengths (little padding); shuffled within buckets when `rng` is given."""
    order = list(range(len(ids)))
    if rng is not None:
        rng.shuffle(order)
    bucket = batch_size * 50
    result = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: len(ids[i]))
        for b in range(0, len(chunk), batch_size):
            members = chunk[b : b + batch_size]
            input_ids, mask = pad_tensors([ids[i] for i in members])
            result.append((input_ids, mask, torch.tensor([labels[i] for i in members])))
    if rng is not None:
        rng.shuffle(result)
    return result


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
    dev_ids: Sequence[Sequence[int]],
    dev_labels: Sequence[int],
    config: TrainConfig,
    num_labels: int,
    frozen: Sequence[Tensor] = (),
    head: Sequence[Tensor] = (),
) -> History:
    """Fit `model` in place; on return it holds the weights of its best dev epoch."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    for parameter in frozen:
        parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model, config, head), lr=config.lr)
    steps_per_epoch = -(-len(train_ids) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear(steps_per_epoch * config.epochs, config.warmup_ratio)
    )
    loss_fn = nn.CrossEntropyLoss()
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    best_accuracy = -1.0
    stale = 0
    for epoch in range(1, config.epochs + 1):
        started = time.monotonic()
        model.train()
        total_loss = 0.0
        epoch_batches = length_bucketed_batches(train_ids, train_labels, config.batch_size, rng)
        progress = tqdm(epoch_batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=None)
        for step, (input_ids, mask, labels) in enumerate(progress, start=1):
            logits, _ = model(input_ids, mask)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            progress.set_postfix(loss=f"{total_loss / step:.4f}")
        scores = evaluate(model, dev_ids, dev_labels, num_labels)
        history.train_loss.append(total_loss / max(1, len(epoch_batches)))
        history.dev_accuracy.append(scores.accuracy)
        history.dev_macro_f1.append(scores.macro_f1)
        history.epoch_seconds.append(time.monotonic() - started)
        left = sum(history.epoch_seconds) / epoch * (config.epochs - epoch)
        log.info(
            "epoch %d: train loss %.4f, dev accuracy %.4f, dev macro-F1 %.4f, %.0f s (at most %.0f s left)",
            epoch,
            history.train_loss[-1],
            scores.accuracy,
            scores.macro_f1,
            history.epoch_seconds[-1],
            left,
        )
        if scores.accuracy > best_accuracy:
            best_accuracy, history.best_epoch, stale = scores.accuracy, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience and epoch < config.epochs:
                history.stopped_early = True
                log.info("no better dev accuracy for %d epochs: stopping", stale)
                break
    model.load_state_dict(best_state)
    model.eval()
    return history
