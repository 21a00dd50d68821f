"""The teacher's committed soft labels: the file matches the texts it claims, a build reads them
instead of the teacher, and one whose data or teacher differs does not."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model_export import soft_labels, teacher
from model_export.config import Preset
from model_export.config import recipe as preset_recipe
from model_export.data import unlabelled_texts
from model_export.pipeline import assemble
from model_export.train import UNLABELLED
from tests.conftest import tiny_recipe


def test_rows_are_found_by_text_whatever_the_order(tmp_path: Path) -> None:
    texts = ["great film", "dull", "great film", "", "naïve 🙂 ünïcode", "x" * 5000]
    logits = torch.tensor([[-1.5, 2.25], [3.0, -3.0], [-1.5, 2.25], [0.0, 0.0], [1.0, -0.5], [7.5, -7.25]])
    soft_labels.write(tmp_path, texts, logits, {"teacher": {"cache_key": "k"}})
    labels = soft_labels.read(tmp_path)
    assert labels is not None and len(labels.keys) == 5  # one row per distinct text
    assert (np.diff(labels.keys.astype(np.float64)) > 0).all()
    assert labels.provenance["rows"] == 5 and labels.provenance["regenerate"] == soft_labels.REGENERATE
    found, missing = labels.find(["x" * 5000, "dull", "great film", "naïve 🙂 ünïcode"])
    assert missing == 0 and found is not None
    torch.testing.assert_close(found, logits[[5, 1, 0, 4]], atol=0.01, rtol=0)  # float16 rows
    assert labels.find(["dull", "not there", "great film!"]) == (None, 2)
    assert soft_labels.read(tmp_path / "none") is None


def test_the_committed_file_is_the_teachers_labels_of_the_default_builds_texts(cache_dir: Path) -> None:
    labels = soft_labels.read()
    assert labels is not None, f"{soft_labels.DIRECTORY} is missing: run `{soft_labels.REGENERATE}`"
    config = dataclasses.replace(preset_recipe(Preset.ACCURATE).train, teacher=True)
    data = assemble(config, cache_dir)
    key = teacher.cache_key(data.train, data.balanced, data.dev_sets, soft_labels.teacher_settings(config))
    provenance = labels.provenance
    assert provenance["teacher"]["cache_key"] == key  # the teacher this data and these settings make
    assert len(provenance["teacher"]["weights_sha256"]) == 64
    unlabelled, counts = unlabelled_texts(cache_dir, data.held_out())
    assert provenance["texts"] == {"training_rows": len(data.train), "unlabelled": counts}
    train, missing = labels.find([e.text for e in data.train])
    others, missing_unlabelled = labels.find(unlabelled)
    assert train is not None and others is not None, (missing, missing_unlabelled)
    # every row is one of the texts it claims: no more rows than distinct texts
    assert len(labels.keys) == len({e.text for e in data.train} | set(unlabelled)) == provenance["rows"]
    # and each row is that text's: the teacher learnt the training labels (a file out of step with
    # its texts would agree with them about as often as guessing the commoner label)
    gold = torch.tensor([e.label for e in data.train])
    assert (train.argmax(-1) == gold).float().mean() > 0.9
    # no evaluation text is in the file
    assert labels.find(data.held_out()[:200])[1] == 200


def test_a_build_reads_the_committed_labels_and_never_the_teacher(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(tiny_recipe().train, teacher=True, unlabelled_per_epoch=100)
    data = assemble(config, cache_dir)
    unlabelled, _ = unlabelled_texts(cache_dir, data.held_out())
    texts = [e.text for e in data.train] + unlabelled
    logits = torch.randn(len(texts), 2)
    key = teacher.cache_key(data.train, data.balanced, data.dev_sets, soft_labels.teacher_settings(config))
    report = {"cache_key": key, "test_accuracy": {"test": 0.9}}
    soft_labels.write(tmp_path, texts, logits, {"teacher": report})
    monkeypatch.setattr(soft_labels, "DIRECTORY", tmp_path)

    def no_teacher(*args: object) -> None:
        raise AssertionError("the teacher was fine-tuned")

    monkeypatch.setattr(teacher, "fine_tune", no_teacher)
    rows, labels, distillation, taught = soft_labels.distil(data, config, cache_dir)
    assert len(rows) == len(labels) == len(texts) and labels[len(data.train) :] == [UNLABELLED] * len(
        unlabelled
    )
    torch.testing.assert_close(distillation.logits, logits, atol=0.01, rtol=0)
    assert taught["cache_key"] == key and taught["soft_labels"].endswith("committed")
    assert taught["unlabelled_per_epoch"] == 100
    # another teacher's labels (other settings: another key) are not used
    other = dataclasses.replace(config, seed=config.seed + 1)
    assert soft_labels.committed(data, other, unlabelled, tmp_path) is None
    # nor a file that lacks a text of the build
    soft_labels.write(tmp_path, texts[:-1], logits[:-1], {"teacher": report})
    assert soft_labels.committed(data, config, unlabelled, tmp_path) is None
    with pytest.raises(AssertionError, match="the teacher was fine-tuned"):
        soft_labels.distil(data, config, cache_dir)
    assert json.loads((tmp_path / soft_labels.PROVENANCE).read_text())["rows"] == len(set(texts)) - 1
