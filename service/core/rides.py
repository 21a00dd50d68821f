"""Texts that ride in the batches as several sequences: a long text read whole as its windows
(core/windows.py), a text explained as its variants (core/explain.py). Each sequence is queued as a
text of the request, so the fair queue weighs the request by all the work it brings; the text's
answer is made from its sequences' rows once they are all back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from service.core.explain import Explanation, Plan, explanation
from service.core.results import AttentionMode
from service.core.windows import combine

if TYPE_CHECKING:
    from service.core.batcher import Batcher
    from service.core.engine import CallTracer
    from service.core.fair_queue import ItemResult, Priority
    from service.core.preprocess import Encoded, Windows


async def serve(
    batcher: Batcher,
    tracing: CallTracer | None,
    sequences: Sequence[Sequence[int]],
    wants: Sequence[AttentionMode],
    deadline: float | None,
    priority: Priority,
) -> list[ItemResult]:
    """Each sequence through the batcher, asking what wants[i] asks (a request's sequences queued as
    one request per distinct want, in order); the call's queue and model spans when it is traced."""
    if not sequences:
        return []
    call = tracing.current() if tracing is not None else None
    queued = time.monotonic()
    distinct = list(dict.fromkeys(wants))
    if len(distinct) == 1:  # every call but an explained one: one request, as it came
        futures = batcher.submit(sequences, distinct[0], deadline, call, priority)
    else:
        futures = [None] * len(sequences)  # type: ignore[list-item]
        for want in distinct:
            places = [i for i, w in enumerate(wants) if w is want]
            submitted = batcher.submit([sequences[i] for i in places], want, deadline, call, priority)
            for place, future in zip(places, submitted, strict=True):
                futures[place] = future
    served = [await futures[0]] if len(futures) == 1 else list(await asyncio.gather(*futures))
    if call is not None and tracing is not None:
        tracing.served(queued, [item.trace for item in served if item.trace is not None])
    return served


async def ride(
    batcher: Batcher,
    tracing: CallTracer | None,
    encoded: Sequence[Encoded],
    cuts: dict[int, Windows],
    plans: dict[int, Plan],
    mode: AttentionMode,
    deadline: float | None,
    priority: Priority,
) -> tuple[list[ItemResult], dict[int, Explanation]]:
    """Every text's result, a text of `cuts` read in its windows and one of `plans` with its
    variants (which carry no attention: only the text itself gets what the caller asked for); and
    the explanation of each explained text, by its place."""
    if not cuts and not plans:  # each text rides alone: nothing to put back together
        alone = [each.ids for each in encoded]
        return await serve(batcher, tracing, alone, [mode] * len(alone), deadline, priority), {}
    parts: list[Sequence[Sequence[int]]] = []
    wants: list[AttentionMode] = []
    for index, each in enumerate(encoded):
        if index in cuts:
            parts.append([window.ids for window in cuts[index].parts])
            wants += [mode] * len(parts[-1])
        elif index in plans:
            parts.append(plans[index].sequences)
            wants += [mode] + [AttentionMode.NONE] * (len(parts[-1]) - 1)
        else:
            parts.append([each.ids])
            wants.append(mode)
    flat = await serve(batcher, tracing, [s for p in parts for s in p], wants, deadline, priority)
    results: list[ItemResult] = []
    explanations: dict[int, Explanation] = {}
    begin = 0
    for index, sequences in enumerate(parts):
        rows = flat[begin : begin + len(sequences)]
        begin += len(sequences)
        if index in cuts:
            results.append(combine(rows, cuts[index]))
        elif index in plans:
            probabilities = np.stack([item.value.probabilities for item in rows])
            explanations[index] = explanation(plans[index], probabilities)
            results.append(rows[0])  # the text's own batch: its variants rode in others too
        else:
            results.append(rows[0])
    return results, explanations
