"""sentiment.v1.SentimentService over gRPC: Predict, PredictStream, GetModelInfo, each a call of
calls/predict.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from service.grpc.boundary import deadline_of, streaming, unary

if TYPE_CHECKING:
    from service.calls.predict import SentimentCalls
    from service.calls.streams import Malformed

Context = grpc.aio.ServicerContext[Any, Any]


class SentimentServicer(pb_grpc.SentimentServiceServicer):
    """Thin: the caller's deadline, the call, the status table."""

    def __init__(self, calls: SentimentCalls) -> None:
        self.calls = calls

    @unary
    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        return await self.calls.predict(request, deadline_of(context))

    @streaming
    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictStreamRequest | Malformed], context: Context
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        async for response in self.calls.predict_each(request_iterator, deadline_of(context)):
            yield response

    @unary
    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: Context
    ) -> pb.GetModelInfoResponse:
        return self.calls.model_info(request)
