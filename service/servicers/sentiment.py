"""sentiment.v1.SentimentService: Predict, PredictStream, GetModelInfo over the engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from service.engine import AttentionMode, Engine, TextResult
from service.errors import InvalidInput
from service.servicers._boundary import Malformed, deadline_of, status_of, streaming, unary
from service.servicers._streams import answer_stream

MODES: dict[int, AttentionMode] = {
    pb.ATTENTION_MODE_UNSPECIFIED: AttentionMode.NONE,
    pb.ATTENTION_MODE_NONE: AttentionMode.NONE,
    pb.ATTENTION_MODE_SUMMARY: AttentionMode.SUMMARY,
    pb.ATTENTION_MODE_FULL: AttentionMode.FULL,
}

Context = grpc.aio.ServicerContext[Any, Any]


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
    return prediction


class SentimentServicer(pb_grpc.SentimentServiceServicer):
    """Thin: converts messages and calls the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _predict(self, request: pb.PredictRequest, deadline: float | None) -> pb.PredictResponse:
        self.engine.check_version(request.model_version)
        mode = attention_mode(request.attention)
        results = await self.engine.predict(list(request.texts), mode, deadline)
        if mode is AttentionMode.FULL:  # megabytes of floats to copy: not on the event loop
            predictions = await asyncio.to_thread(lambda: [to_prediction(r) for r in results])
        else:
            predictions = [to_prediction(r) for r in results]
        response = pb.PredictResponse(
            predictions=predictions, model_name=self.engine.spec.name, model_version=self.engine.spec.version
        )
        if mode is not AttentionMode.NONE:
            self.engine.check_sent_size(response.ByteSize())
        return response

    @unary
    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        return await self._predict(request, deadline_of(context))

    @streaming
    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictStreamRequest], context: Context
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        deadline = deadline_of(context)

        async def answer(message: pb.PredictStreamRequest | Malformed) -> pb.PredictStreamResponse:
            request_id = "" if isinstance(message, Malformed) else message.request_id
            try:
                if isinstance(message, Malformed):
                    raise InvalidInput(message.description)
                response = await self._predict(message.request, deadline)
                return pb.PredictStreamResponse(request_id=request_id, response=response)
            except Exception as err:  # one request's failure is reported and the stream goes on
                code, text = status_of(err)
                error = pb.StreamError(code=code.value[0], message=text)
                return pb.PredictStreamResponse(request_id=request_id, error=error)

        async for response in answer_stream(request_iterator, answer, self.engine.draining):
            yield response

    @unary
    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: Context
    ) -> pb.GetModelInfoResponse:
        engine = self.engine
        engine.check_version(request.model_version)
        spec = engine.spec
        return pb.GetModelInfoResponse(
            name=spec.name,
            version=spec.version,
            labels=spec.labels,
            max_length=spec.max_length,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            hidden_size=spec.hidden_size,
            vocab_size=spec.vocab_size,
            metrics_json=json.dumps(spec.metrics.get("test", {})),
            available_versions=engine.spec.available_versions,
            max_texts_per_request=engine.max_texts,
            max_text_chars=engine.max_chars,
            execution_provider=engine.provider,
            workers=engine.sizing.workers,
            max_concurrent_batches=engine.sizing.max_concurrent_batches,
            intra_op_threads=engine.sizing.intra_op_threads,
            lone_batch_threads=engine.sizing.lone_batch_threads,
            available_cpus=engine.sizing.available_cpus,
        )
