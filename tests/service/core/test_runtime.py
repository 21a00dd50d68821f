"""The ONNX Runtime wrapper: contract outputs, provider fallback, optional attention."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.core.runtime import OnnxModel


def test_run_returns_attention_only_when_asked(model_dir: Path) -> None:
    model = OnnxModel(model_dir / "model.onnx")
    ids = np.array([[2, 7, 9, 3], [2, 5, 3, 0]], dtype=np.int64)
    logits, attentions = model.run(ids, (ids != 0).astype(np.int64), with_attention=False)
    assert logits.shape == (2, 2) and attentions is None
    logits_again, attentions = model.run(ids, (ids != 0).astype(np.int64), with_attention=True)
    assert attentions is not None and attentions.shape[0] == 2 and attentions.shape[-2:] == (4, 4)
    np.testing.assert_array_equal(logits, logits_again)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this check is for CPU-only machines"
)
def test_cuda_request_falls_back_to_cpu_with_a_warning(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.core.runtime"):
        model = OnnxModel(model_dir / "model.onnx", provider="cuda")
    assert model.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider is not available" in caplog.text


def test_lone_and_side_by_side_batches_give_the_same_answers(model_dir: Path) -> None:
    model = OnnxModel(model_dir / "model.onnx", intra_op_threads=1, lone_threads=2)
    assert model.lone_session is not None  # a second, wider session for batches that run alone
    assert OnnxModel(model_dir / "model.onnx", intra_op_threads=2, lone_threads=2).lone_session is None
    rng = np.random.default_rng(3)
    ids = rng.integers(4, 900, size=(8, 24)).astype(np.int64)
    mask = np.ones_like(ids)
    alone, _ = model.run(ids, mask, with_attention=False, wide=True)
    with ThreadPoolExecutor(4) as pool:  # several at once on the narrow session
        together = list(pool.map(lambda _: model.run(ids, mask, with_attention=False)[0], range(16)))
    for logits in together:
        np.testing.assert_allclose(logits, alone, atol=1e-5)


def test_only_the_lone_batch_session_spins_and_it_stops_when_a_run_returns(model_dir: Path) -> None:
    def entry(session: object, key: str) -> str:
        return str(session.get_session_options().get_session_config_entry(key))  # type: ignore[attr-defined]

    model = OnnxModel(model_dir / "model.onnx", intra_op_threads=1, lone_threads=2, lone_spin=True)
    assert model.lone_session is not None
    assert entry(model.lone_session, "session.intra_op.allow_spinning") == "1"
    assert entry(model.lone_session, "session.force_spinning_stop") == "1"
    assert entry(model.session, "session.intra_op.allow_spinning") == "0"
    quiet = OnnxModel(model_dir / "model.onnx", intra_op_threads=1, lone_threads=2, lone_spin=False)
    assert quiet.lone_session is not None
    assert entry(quiet.lone_session, "session.intra_op.allow_spinning") == "0"
