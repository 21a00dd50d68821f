"""A larger teacher for the served model (Hinton et al. 2015, "Distilling the Knowledge in a Neural
Network"): all-mpnet-base-v2 fine-tuned on the labelled training text, whose soft labels on every
training text, unlabelled ones included, the small model then learns from.

MPNet-base is about eight times the served encoder's work per token. On two cores a full fine-tune
takes over half an hour an epoch, so only its top `tuned_layers` layers and the classifier learn:
the frozen layers' output is computed once per text and kept, and each epoch runs the top layers
alone. The fine-tuned teacher and its soft labels are cached under the cache directory, keyed by
everything they depend on, so a rebuild with the same data pays for neither again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import Tensor, nn
from tqdm import tqdm

from model_contract import length_batches
from model_export import mpnet
from model_export.config import LABELS, TrainConfig
from model_export.scoring import DevScores, logits_of, pad_tensors
from model_export.tokenizer import encode, load_tokenizer
from model_export.train import BalancedEpochs, History, Schedule, fit

if TYPE_CHECKING:
    from model_export.data import Example
    from model_export.model import SentimentTransformer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher is fine-tuned (the `large` preset's TrainConfig gives most of it)."""

    tuned_layers: int = 4  # the top layers that learn; the rest keep their pretrained weights
    epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-5
    head_lr: float = 1e-3  # the fresh classifier
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 256
    seed: int = 13
    threads: int = 2  # not part of the cache key: it changes the speed, not the result

    @staticmethod
    def of(train: TrainConfig) -> TeacherConfig:
        return TeacherConfig(
            epochs=train.epochs,
            batch_size=train.batch_size,
            lr=train.lr,
            weight_decay=train.weight_decay,
            warmup_ratio=train.warmup_ratio,
            max_length=train.max_length,
            seed=train.seed,
            threads=train.threads,
        )


@dataclass
class Teacher:
    model: SentimentTransformer
    tokenizer: Tokenizer
    key: str  # what the cache knows it by
    history: History
    report: dict[str, Any]  # how it was fine-tuned, how long it took, and the history

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        return encode(self.tokenizer, texts)


def _digest(*parts: object) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _padded(states: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Hidden states of different lengths right-padded with zeros: (B, T, d), and the mask (B, T)."""
    length = max(s.size(0) for s in states)
    x = torch.zeros(len(states), length, states[0].size(1))
    mask = torch.zeros(len(states), length, dtype=torch.long)
    for row, s in enumerate(states):
        x[row, : s.size(0)] = s.float()
        mask[row, : s.size(0)] = 1
    return x, mask


@torch.no_grad()
def _frozen_states(model: SentimentTransformer, ids: Sequence[Sequence[int]], frozen: int) -> list[Tensor]:
    """Each text's output of the first `frozen` layers, (length, d_model), kept in bfloat16."""
    model.eval()
    out: list[Tensor] = [torch.empty(0)] * len(ids)
    lengths = [len(s) for s in ids]
    for members in tqdm(length_batches(lengths, 64), desc="teacher: frozen layers", disable=None):
        input_ids, mask = pad_tensors([ids[i] for i in members])
        x, _ = model.run_layers(model.embed(input_ids), mask, 0, frozen)
        for row, i in enumerate(members):
            out[i] = x[row, : lengths[i]].to(torch.bfloat16).clone()
    return out


def _top_logits(model: SentimentTransformer, states: Sequence[Tensor], frozen: int) -> Tensor:
    x, mask = _padded(states)
    top, _ = model.run_layers(x, mask, frozen)
    return model.classify(top, mask)


@torch.no_grad()
def _logits_from_states(model: SentimentTransformer, states: Sequence[Tensor], frozen: int) -> Tensor:
    model.eval()
    out = torch.zeros(len(states), len(LABELS))
    for members in length_batches([s.size(0) for s in states], 64):
        out[members] = _top_logits(model, [states[i] for i in members], frozen)
    return out


def logits(teacher: Teacher, texts: Sequence[str]) -> Tensor:
    """The teacher's logits for each text, in order: (N, labels)."""
    return logits_of(teacher.model, teacher.ids(texts))


def _dev_scores(
    model: SentimentTransformer, dev: Sequence[tuple[list[Tensor], list[int]]], frozen: int
) -> DevScores:
    """Each dev set scored from its frozen states, as scoring.mean_accuracy scores the served model."""
    predicted = [_logits_from_states(model, states, frozen).argmax(-1).tolist() for states, _ in dev]
    return DevScores.of([labels for _, labels in dev], predicted, len(LABELS))


def cache_key(
    train: Sequence[Example],
    balanced: Sequence[Sequence[int]],
    dev_sets: Sequence[Sequence[Example]],
    config: TeacherConfig,
) -> str:
    """What the teacher fine-tuned on this data with these settings is known by: a digest of the
    pretrained weights' pins, the settings and every training and dev text and label."""
    return _digest(
        [part[2] for part in mpnet.PARTS],
        dataclasses.asdict(config) | {"threads": None},
        [(e.text, e.label) for e in train],
        [list(group) for group in balanced],
        [[(e.text, e.label) for e in dev] for dev in dev_sets],
    )


def fine_tune(
    cache_dir: Path,
    train: Sequence[Example],
    balanced: Sequence[Sequence[int]],
    dev_sets: Sequence[Sequence[Example]],
    config: TeacherConfig,
) -> Teacher:
    """The teacher fine-tuned on `train` (rows of each `balanced` group sampled per epoch, as the
    served model's trainer does), its best epoch chosen by the dev sets' mean balanced accuracy; read
    from the cache when it was fine-tuned on the same data before."""
    directory = mpnet.fetch(cache_dir)
    tokenizer = load_tokenizer(directory / "tokenizer.json", config.max_length)
    key = cache_key(train, balanced, dev_sets, config)
    cached = cache_dir / "teachers" / key
    model = mpnet.load_encoder(directory)
    if (cached / "model.safetensors").exists():
        model.load_state_dict(load_file(str(cached / "model.safetensors")))
        report = json.loads((cached / "report.json").read_text())
        log.info("teacher %s read from %s", key, cached)
        return Teacher(model.eval(), tokenizer, key, History(**report["history"]), report)
    started = time.monotonic()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    frozen = max(0, model.config.n_layers - config.tuned_layers)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    tuned = [p for layer in model.layers[frozen:] for p in layer.parameters()]
    head = list(model.classifier.parameters())
    for parameter in tuned + head:
        parameter.requires_grad_(True)
    states = _frozen_states(model, encode(tokenizer, [e.text for e in train]), frozen)
    dev = [
        (_frozen_states(model, encode(tokenizer, [e.text for e in d]), frozen), [e.label for e in d])
        for d in dev_sets
    ]
    labels = [e.label for e in train]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in tuned if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in tuned if p.dim() < 2], "weight_decay": 0.0},
            {"params": head, "lr": config.head_lr, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    epochs = BalancedEpochs(labels, balanced, config.seed)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(members: list[int]) -> Tensor:
        loss: Tensor = loss_fn(
            _top_logits(model, [states[i] for i in members], frozen),
            torch.tensor([labels[i] for i in members]),
        )
        return loss

    schedule = Schedule(
        config.epochs, config.batch_size, config.warmup_ratio, config.seed, name="teacher epoch"
    )
    lengths = [s.size(0) for s in states]
    history = fit(
        model, lengths, epochs, optimizer, batch_loss, lambda: _dev_scores(model, dev, frozen), schedule
    )
    report = {
        "encoder": mpnet.PACKAGE,
        "config": dataclasses.asdict(config),
        "history": dataclasses.asdict(history),
        "dev_selection": max(history.dev_selection),
        "seconds": round(time.monotonic() - started, 1),
    }
    cached.mkdir(parents=True, exist_ok=True)
    # the training texts' soft labels from the states at hand: the frozen layers need not run again
    save_file(
        {"logits": _logits_from_states(model, states, frozen).contiguous()},
        str(_logits_path(cache_dir, key, [e.text for e in train])),
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(cached / "model.safetensors"))
    (cached / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("teacher fine-tuned in %.0f s, cached as %s", report["seconds"], cached)
    return Teacher(model, tokenizer, key, history, report)


def _logits_path(cache_dir: Path, key: str, texts: Sequence[str]) -> Path:
    return cache_dir / "teachers" / key / f"logits-{_digest(list(texts))}.safetensors"


def soft_logits(cache_dir: Path, teacher: Teacher, texts: Sequence[str]) -> Tensor:
    """The teacher's logits for `texts` (logits()), cached beside the teacher."""
    path = _logits_path(cache_dir, teacher.key, texts)
    if path.exists():
        return load_file(str(path))["logits"]
    started = time.monotonic()
    out = logits(teacher, texts)
    save_file({"logits": out.contiguous()}, str(path))
    log.info("teacher labelled %d texts in %.0f s", len(texts), time.monotonic() - started)
    return out
