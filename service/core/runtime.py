"""The ONNX Runtime sessions: provider choice with fallback, contract check, warm-up, run.

On CPU the model holds two sessions of the same graph. A batch that runs alone uses the wide one,
with a thread per CPU the process may use, so a lone caller gets every core; other batches use the
narrow one (intra_op_threads, 1 by default), so that under load batches run side by side on a core
each: independent single-threaded runs waste no time synchronising threads, and serve more than
one run with every thread. The batcher decides which (`wide`), and starts nothing beside a wide
batch: a narrow batch beside a wide one would oversubscribe the cores and the wide one's threads
would wait for each other.
The narrow session's threads never spin: spinning threads would steal the CPU that the event loop and
the other batches need. The wide session's threads spin-wait between operators while a run works
(`--lone-batch-spin`, on by default) and stop as soon as it returns (session.force_spinning_stop):
nothing runs beside a wide batch, and waking a sleeping thread for every operator costs a lone text
more than the spinning does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from model_contract import graph_mismatch, session_options
from service.core.errors import ModelDirectoryError

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

Int64Array = NDArray[np.int64]
FloatArray = NDArray[np.float32]


class OnnxModel:
    """The model's sessions; run() is safe to call from several threads at once."""

    def __init__(
        self,
        path: Path,
        provider: str = "cpu",
        intra_op_threads: int = 1,
        lone_threads: int = 1,
        lone_spin: bool = False,
    ) -> None:
        options = session_options(intra_op_threads)
        wanted = PROVIDERS[provider]
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if wanted != "CPUExecutionProvider":
            if wanted in available:
                providers.insert(0, wanted)
            else:
                log.warning("%s is not available (have %s): running on CPU", wanted, available)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped errors for a bad graph
            raise ModelDirectoryError(f"{path} could not be loaded by ONNX Runtime: {err}") from err
        self.provider: str = self.session.get_providers()[0]
        if wanted != "CPUExecutionProvider" and self.provider != wanted:
            log.warning("%s could not start: running on %s", wanted, self.provider)
        self._check_contract(path)
        self.lone_session: ort.InferenceSession | None = None
        if self.provider == "CPUExecutionProvider" and lone_threads > intra_op_threads:
            self.lone_session = ort.InferenceSession(
                str(path), session_options(lone_threads, spin=lone_spin), providers=providers
            )

    def _check_contract(self, path: Path) -> None:
        broken = graph_mismatch(self.session)
        if broken is not None:
            raise ModelDirectoryError(f"{path} breaks the model contract: {broken}")

    def run(
        self, input_ids: Int64Array, attention_mask: Int64Array, with_attention: bool, wide: bool = False
    ) -> tuple[FloatArray, FloatArray | None]:
        """Logits (B, labels) and, when asked, attentions (B, layers, heads, T, T). wide: the caller
        runs nothing else meanwhile, so the batch may use the wide session's threads."""
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        session = self.lone_session if wide and self.lone_session is not None else self.session
        if with_attention:
            logits, attentions = session.run(["logits", "attentions"], feed)
            return logits, attentions
        (logits,) = session.run(["logits"], feed)
        return logits, None

    def warm_up(self, max_length: int, max_batch_size: int) -> None:
        """Run a few shapes once on every session so the first callers do not pay for allocation."""
        for session in (self.session, self.lone_session):
            if session is None:
                continue
            for batch, length in ((1, 8), (max_batch_size, min(32, max_length)), (1, max_length)):
                ids = np.ones((batch, length), dtype=np.int64)
                session.run(["logits", "attentions"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
