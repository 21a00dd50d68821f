"""The teacher's soft labels for distillation (--teacher), and the committed copy a build reads
instead of the teacher.

Fine-tuning the teacher and labelling every training and unlabelled text costs about three
quarters of an hour on two cores, and the fine-tune is not repeatable to the bit across machines.
So its logits are committed (model_export/soft_labels/): `soft_labels.npz` holds one row per
distinct text, keyed by an 8-byte digest of the text (so the file holds no text), and
`soft_labels.json` says where they came from: the teacher's cache key (a digest of its weights'
pins, its settings and every training and dev text and label), the sha256 of its fine-tuned
weights, its settings, history and own test accuracy, and how many texts of each source were
labelled. A build that finds every text it needs there reads the logits and never loads the
teacher; one whose data changed labels with the teacher, as before. `python -m model_export
soft-labels` writes both files anew.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from model_contract import sha256_file
from model_export import teacher
from model_export.config import LABELS, Preset, TrainConfig
from model_export.config import recipe as preset_recipe
from model_export.data import Example, unlabelled_texts
from model_export.scoring import Scores
from model_export.train import UNLABELLED, Distillation

if TYPE_CHECKING:
    from model_export.pipeline import Data

log = logging.getLogger(__name__)

DIRECTORY = Path(__file__).resolve().parent / "soft_labels"
ARRAYS = "soft_labels.npz"
PROVENANCE = "soft_labels.json"
DIGEST = "blake2b, 8 bytes, of the text's UTF-8, read as a little-endian uint64"
REGENERATE = "python -m model_export soft-labels"


def text_keys(texts: Sequence[str]) -> NDArray[np.uint64]:
    """Each text's key in the committed file (DIGEST)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little") for t in texts],
        dtype=np.uint64,
    )


@dataclass(frozen=True)
class SoftLabels:
    keys: NDArray[np.uint64]  # sorted
    logits: NDArray[np.float16]  # (rows, labels), in the order of keys
    provenance: dict[str, Any]

    def find(self, texts: Sequence[str]) -> tuple[Tensor | None, int]:
        """The logits of `texts` in order, or None; and how many of them have no row."""
        wanted = text_keys(texts)
        at = np.searchsorted(self.keys, wanted).clip(max=max(0, len(self.keys) - 1))
        found = self.keys[at] == wanted if len(self.keys) else np.zeros(len(texts), dtype=bool)
        missing = int((~found).sum())
        if missing:
            return None, missing
        return torch.from_numpy(self.logits[at].astype(np.float32)), 0


def read(directory: Path | None = None) -> SoftLabels | None:
    """The committed soft labels (in DIRECTORY unless `directory`), or None where there are none."""
    directory = directory or DIRECTORY
    if not (directory / ARRAYS).is_file():
        return None
    with np.load(directory / ARRAYS) as arrays:
        keys, logits = arrays["keys"], arrays["logits"]
    provenance = json.loads((directory / PROVENANCE).read_text())
    return SoftLabels(keys, logits, provenance)


def write(directory: Path, texts: Sequence[str], logits: Tensor, provenance: dict[str, Any]) -> Path:
    """Commit-ready files for `texts` and their teacher `logits`: a row per distinct text, sorted by key."""
    distinct = {text: row for row, text in enumerate(texts)}  # the same text, the same logits
    keys = text_keys(list(distinct))
    if len(np.unique(keys)) != len(keys):
        raise ValueError("two distinct texts share a key: widen DIGEST")
    order = np.argsort(keys)
    rows = np.array(list(distinct.values()), dtype=np.int64)[order]
    directory.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(directory / ARRAYS, keys=keys[order], logits=logits.numpy()[rows].astype(np.float16))
    provenance |= {"rows": len(keys), "key": DIGEST, "logits": "float16", "regenerate": REGENERATE}
    (directory / PROVENANCE).write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n")
    return directory


@dataclass(frozen=True)
class Labelled:
    """What distillation learns from: the teacher's logits on the training rows and the unlabelled
    texts, and what config.json records of the teacher."""

    train: Tensor
    unlabelled: Tensor
    report: dict[str, Any]


def teacher_settings(config: TrainConfig) -> teacher.TeacherConfig:
    large = preset_recipe(Preset.LARGE).train
    return teacher.TeacherConfig.of(dataclasses.replace(large, seed=config.seed, threads=config.threads))


def from_teacher(data: Data, config: TrainConfig, cache_dir: Path, unlabelled: Sequence[str]) -> Labelled:
    """The teacher fine-tuned (or read from the cache) on the build's labelled data, its logits on
    the training rows and `unlabelled`, and its own accuracy on every test split."""
    tutor = teacher.fine_tune(cache_dir, data.train, data.balanced, data.dev_sets, teacher_settings(config))
    train = teacher.soft_logits(cache_dir, tutor, [e.text for e in data.train])
    others = teacher.soft_logits(cache_dir, tutor, unlabelled)
    tests = {"test": data.splits.test} | {
        name.replace(" ", "_") + "_test": cut.test for name, (cut, _) in data.people.items()
    }
    accuracy = {}
    for name, rows in tests.items():
        predicted = teacher.soft_logits(cache_dir, tutor, [e.text for e in rows]).argmax(-1).tolist()
        scores = Scores.from_predictions([e.label for e in rows], predicted, len(LABELS))
        accuracy[name] = round(scores.accuracy, 4)
    log.info("teacher's own test accuracy: %s", accuracy)
    weights = cache_dir / "teachers" / tutor.key / "model.safetensors"
    report = tutor.report | {
        "cache_key": tutor.key,
        "weights_sha256": sha256_file(weights),
        "test_accuracy": accuracy,
    }
    return Labelled(train, others, report)


def committed(
    data: Data, config: TrainConfig, unlabelled: Sequence[str], directory: Path | None = None
) -> Labelled | None:
    """The committed soft labels of the build's training rows and `unlabelled`, when they are the
    labels of the very teacher this build would fine-tune (the same cache key: the same pretrained
    weights, settings, training and dev data) and cover every text; else None, the reason logged."""
    directory = directory or DIRECTORY
    labels = read(directory)
    if labels is None:
        return None
    key = teacher.cache_key(data.train, data.balanced, data.dev_sets, teacher_settings(config))
    if labels.provenance["teacher"]["cache_key"] != key:
        log.info("the committed soft labels are another teacher's (this build's data or settings differ)")
        return None
    train, missing = labels.find([e.text for e in data.train])
    others, missing_unlabelled = labels.find(unlabelled)
    if train is None or others is None:
        log.warning(
            "%s lacks %d training and %d unlabelled texts of this build: the teacher labels them "
            "(regenerate the file with `%s`)",
            directory / ARRAYS,
            missing,
            missing_unlabelled,
            REGENERATE,
        )
        return None
    log.info(
        "the teacher's soft labels of %d texts read from %s", len(train) + len(others), directory / ARRAYS
    )
    report = labels.provenance["teacher"] | {"soft_labels": f"{directory.name}/{ARRAYS}, committed"}
    return Labelled(train, others, report)


def regenerate(data: Data, config: TrainConfig, cache_dir: Path, directory: Path = DIRECTORY) -> Path:
    """Label every training row and unlabelled text of `data` with the teacher and write the files."""
    unlabelled, counts = unlabelled_texts(cache_dir, data.held_out())
    labelled = from_teacher(data, config, cache_dir, unlabelled)
    provenance = {
        "teacher": labelled.report,
        "texts": {"training_rows": len(data.train), "unlabelled": counts},
    }
    texts = [e.text for e in data.train] + list(unlabelled)
    return write(directory, texts, torch.cat([labelled.train, labelled.unlabelled]), provenance)


def distil(
    data: Data, config: TrainConfig, cache_dir: Path
) -> tuple[list[Example], list[int], Distillation, dict[str, Any]]:
    """The training rows with unlabelled text people wrote added (label UNLABELLED), their labels,
    the teacher's logits on each (the committed ones where they cover the build's texts), and what
    config.json records of it."""
    unlabelled, counts = unlabelled_texts(cache_dir, data.held_out())
    labelled = committed(data, config, unlabelled) or from_teacher(data, config, cache_dir, unlabelled)
    rows = data.train + [Example(text, UNLABELLED) for text in unlabelled]
    labels = [e.label for e in data.train] + [UNLABELLED] * len(unlabelled)
    distillation = Distillation(
        torch.cat([labelled.train, labelled.unlabelled]),
        config.distill_temperature,
        config.distill_weight,
        config.unlabelled_per_epoch,
    )
    taught = labelled.report | {
        "unlabelled": counts,
        "unlabelled_per_epoch": config.unlabelled_per_epoch,
        "temperature": config.distill_temperature,
        "weight": config.distill_weight,
    }
    return rows, labels, distillation, taught
