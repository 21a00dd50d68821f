"""Shadow versions: they answer nothing themselves. The texts of a sampled share (--shadow-share) of
the default version's calls are run on each shadow too, after the callers have their answers, in
batches and only while the serving version is idle; the metrics count how often the two agree and
how long the shadow took, so that an operator promotes (loads it again, not as a shadow) on
evidence."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.core.results import AttentionMode, TextResult

if TYPE_CHECKING:
    from service.ops.metrics import Metrics
    from service.versions.registry import ModelRegistry

log = logging.getLogger(__name__)

# a shadow's sampled texts run in batches of up to SHADOW_BATCH, once the batch is full or its oldest
# text has waited SHADOW_MAX_WAIT_S, checked every SHADOW_TICK_S; at most SHADOW_PENDING texts wait
SHADOW_BATCH = 32
SHADOW_MAX_WAIT_S = 1.0
SHADOW_TICK_S = 0.05
SHADOW_PENDING = 512


class Shadows:
    """The sampled texts waiting for each shadow of `models`, and the task that runs them."""

    def __init__(
        self, models: ModelRegistry, metrics: Metrics, share: float, rng: random.Random | None = None
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.share = share
        self._random = (rng or random.Random()).random
        self._pending: dict[int, list[tuple[str, str, float]]] = {}  # shadow -> (text, label, when)

    def sample(self, texts: Sequence[str], results: Sequence[TextResult]) -> None:
        """The tap on the default version's answered calls: for a sampled share of them, their texts
        and the labels they got wait for each shadow's next batch."""
        if not self.share:
            return
        now = time.monotonic()
        for shadow in self.models.shadows():
            if self._random() >= self.share:
                continue
            pending = self._pending.setdefault(shadow, [])
            if len(pending) + len(texts) > SHADOW_PENDING:  # the replica has had no lull for a while
                self.metrics.shadow_skipped.labels(str(shadow), "busy").inc()
                continue
            pending.extend((text, result.label, now) for text, result in zip(texts, results, strict=True))

    def forget(self, version: int) -> None:
        """Drop what waits for `version` (no longer a shadow, or gone)."""
        self._pending.pop(version, None)

    async def pump(self) -> None:
        """Run each shadow's waiting texts as batches, one batch at a time, and only at a moment the
        serving version is idle (no round running, no text waiting): callers come first, and the
        shadow uses the lulls. A batch goes once it is full or its oldest text has waited
        SHADOW_MAX_WAIT_S, so that a shadow runs batches about as large as the serving version's, not
        one text at a time. Runs until cancelled."""
        models = self.models
        while True:
            await asyncio.sleep(SHADOW_TICK_S)
            for version in models.shadows():
                pending = self._pending.get(version)
                if not pending or models.draining.is_set():
                    continue
                ripe = len(pending) >= SHADOW_BATCH or time.monotonic() - pending[0][2] >= SHADOW_MAX_WAIT_S
                if not ripe or not models.serving_idle():
                    continue
                held = models.entry(version)
                if held is None:
                    continue
                size = min(SHADOW_BATCH, held.engine.info().max_texts)
                batch, pending[:size] = pending[:size], []
                await self._run(version, [text for text, _, _ in batch], [label for _, label, _ in batch])

    async def _run(self, version: int, texts: list[str], labels: list[str]) -> None:
        held = self.models.entry(version)
        if held is None or not held.shadow:
            return
        tag = str(version)
        began = time.monotonic()
        try:
            with held.hold() as engine:
                results = await engine.predict(texts, AttentionMode.NONE, None)
        except Exception as err:  # a failing shadow costs its sample, never a caller
            self.metrics.shadow_skipped.labels(tag, "failed").inc()
            log.warning("a shadow batch on version %d failed: %s", version, err)
            return
        self.metrics.shadow_seconds.labels(tag).observe(time.monotonic() - began)
        agreed = sum(r.label == label for r, label in zip(results, labels, strict=True))
        self.metrics.shadow_texts.labels(tag, "agree").inc(agreed)
        self.metrics.shadow_texts.labels(tag, "disagree").inc(len(labels) - agreed)
