"""What the service's own API (sentiment.v1) means: Predict, PredictStream and GetModelInfo, for both
doors. Requests and answers are the API's messages (the gRPC door receives them, the HTTP door
reads them from protobuf's JSON mapping); errors are ServiceErrors, which each door answers through
the one table (calls/status.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.calls.priority import from_proto
from service.calls.streams import Malformed, answer_each
from service.core.errors import InvalidInput
from service.core.explain import Method
from service.core.results import AttentionMode, TextResult

if TYPE_CHECKING:
    from service.calls.status import Status
    from service.core.engine import Engine
    from service.versions.registry import ModelRegistry

MODES: dict[int, AttentionMode] = {
    pb.ATTENTION_MODE_UNSPECIFIED: AttentionMode.NONE,
    pb.ATTENTION_MODE_NONE: AttentionMode.NONE,
    pb.ATTENTION_MODE_SUMMARY: AttentionMode.SUMMARY,
    pb.ATTENTION_MODE_FULL: AttentionMode.FULL,
}

# the model directory's fields that GetModelInfoResponse carries under the same names
SPEC_FIELDS = (
    "name", "version", "labels", "max_length", "num_layers", "num_heads", "hidden_size", "vocab_size",
)  # fmt: skip


LONG_TEXTS: dict[int, bool | None] = {  # read whole (in windows), or as the server does
    pb.LONG_TEXTS_UNSPECIFIED: None,
    pb.LONG_TEXTS_TRUNCATE: False,
    pb.LONG_TEXTS_WINDOWS: True,
}


EXPLAIN: dict[int, Method] = {
    pb.EXPLAIN_MODE_UNSPECIFIED: Method.NONE,
    pb.EXPLAIN_MODE_NONE: Method.NONE,
    pb.EXPLAIN_MODE_SHAPLEY: Method.SHAPLEY,
    pb.EXPLAIN_MODE_OCCLUSION: Method.OCCLUSION,
}


def explain_method(value: int) -> Method:
    if value not in EXPLAIN:
        raise InvalidInput(f"explain mode {value} is unknown; use NONE, SHAPLEY or OCCLUSION")
    return EXPLAIN[value]


def read_whole(value: int) -> bool | None:
    if value not in LONG_TEXTS:
        raise InvalidInput(f"long_texts {value} is unknown; use TRUNCATE or WINDOWS")
    return LONG_TEXTS[value]


def attention_mode(value: int) -> AttentionMode:
    mode = MODES.get(value)
    if mode is None:
        raise InvalidInput(f"attention mode {value} is unknown; use NONE, SUMMARY or FULL")
    return mode


def to_prediction(result: TextResult) -> pb.Prediction:
    served = result.served
    prediction = pb.Prediction(
        label=result.label,
        score=result.score,
        probabilities=result.probabilities.tolist(),
        truncated=result.truncated,
        num_tokens=result.num_tokens,
        windows=result.windows,
        batch=pb.BatchStats(
            queue_seconds=served.queue_seconds,
            compute_seconds=served.compute_seconds,
            batch_size=served.batch_size,
            padded_length=served.padded_length,
        ),
    )
    view = result.attention
    if view is not None:
        attention = pb.Attention(
            tokens=view.tokens, cls_attention=view.cls_attention.tolist(), rollout=view.rollout.tolist()
        )
        if view.weights is not None:
            attention.num_layers, attention.num_heads = view.weights.shape[:2]
            attention.weights.extend(view.weights.ravel().tolist())
        prediction.attention.CopyFrom(attention)
    why = result.explanation
    if why is not None:
        prediction.explanation.CopyFrom(
            pb.Explanation(
                method=why.method.value,
                label=result.label,
                baseline=why.baseline,
                passes=why.passes,
                words=[
                    pb.WordContribution(text=w.text, contribution=c, start=w.start, end=w.stop)
                    for w, c in zip(why.words, why.contributions.tolist(), strict=True)
                ],
            )
        )
    return prediction


class SentimentCalls:
    """sentiment.v1's calls over the model versions; json: the answer is sent as JSON (its size
    policy counts JSON's bytes)."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    async def predict(
        self, request: pb.PredictRequest, deadline: float | None, json: bool = False
    ) -> pb.PredictResponse:
        """The answer to one request; ServiceError when it cannot be answered."""
        mode, explain = attention_mode(request.attention), explain_method(request.explain)
        priority, whole = from_proto(request.priority), read_whole(request.long_texts)
        async with self.models.use(request.model_version) as engine:  # the version answers it all
            results = await engine.predict(
                list(request.texts),
                mode,
                deadline,
                json=json,
                priority=priority,
                whole=whole,
                explain=explain,
            )
            return await self._answer(engine, results, mode, explain)

    @staticmethod
    async def _answer(
        engine: Engine, results: list[TextResult], mode: AttentionMode, explain: Method
    ) -> pb.PredictResponse:
        with engine.step("answer"):
            if mode is AttentionMode.FULL:  # megabytes of floats to copy: not on the event loop
                predictions = await asyncio.to_thread(lambda: [to_prediction(r) for r in results])
            else:
                predictions = [to_prediction(r) for r in results]
            spec = engine.info().spec
            response = pb.PredictResponse(
                predictions=predictions, model_name=spec.name, model_version=spec.version
            )
            if mode is not AttentionMode.NONE or explain is not Method.NONE:
                engine.check_sent_size(response.ByteSize())
        return response

    async def predict_each(
        self,
        requests: AsyncIterator[pb.PredictStreamRequest | Malformed],
        deadline: float | None,
        json: bool = False,
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        """A stream's answers, each tagged with its request's id; a request that fails is answered with
        its error and the stream goes on."""

        async def handle(message: pb.PredictStreamRequest) -> pb.PredictStreamResponse:
            response = await self.predict(message.request, deadline, json)
            return pb.PredictStreamResponse(request_id=message.request_id, response=response)

        def failed(
            message: pb.PredictStreamRequest | Malformed, status: Status, text: str
        ) -> pb.PredictStreamResponse:
            request_id = "" if isinstance(message, Malformed) else message.request_id
            error = pb.StreamError(code=status.grpc.value[0], message=text)
            return pb.PredictStreamResponse(request_id=request_id, error=error)

        async for response in answer_each(requests, handle, failed, self.models.draining):
            yield response

    def model_info(self, request: pb.GetModelInfoRequest) -> pb.GetModelInfoResponse:
        models = self.models
        info = models.info(request.model_version)
        spec = info.spec
        return pb.GetModelInfoResponse(
            **{name: getattr(spec, name) for name in SPEC_FIELDS},
            **dataclasses.asdict(info.sizing),  # workers, batches at once, threads, CPUs: same names
            metrics_json=json.dumps(spec.metrics.get("test", {})),
            max_texts_per_request=info.max_texts,
            max_text_chars=info.max_chars,
            max_explained_words=info.max_explained_words,
            execution_provider=info.provider,
            available_versions=models.available(),
            loaded_versions=models.loaded(),
            default_version=models.default_version,
            shadow_versions=models.shadows(),
        )
