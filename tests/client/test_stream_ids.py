"""The SDK's streams: every request id it sends is new and non-empty, and answers that come back in
another order are matched by id and given back in input order. A recording server on loopback stands
in for the service so that the ids the SDK sent can be read and the answers reordered on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from sentiment_client import AsyncSentimentClient, SentimentClient
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

TEXTS = [str(i) for i in range(203)]  # 203 is prime: the last chunk is short, the last pair is one


class Recorder(sentiment_pb2_grpc.SentimentServiceServicer):
    """Answers each pair of stream requests second first; each text's score is its number / 1000."""

    def __init__(self) -> None:
        self.streams: list[list[str]] = []

    def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetModelInfoResponse:
        return pb.GetModelInfoResponse(
            name="recorder", version=1, labels=["negative", "positive"], max_texts_per_request=64
        )

    def PredictStream(
        self, request_iterator: Iterator[pb.PredictStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.PredictStreamResponse]:
        ids: list[str] = []
        self.streams.append(ids)
        pending: list[pb.PredictStreamRequest] = []
        for request in request_iterator:
            ids.append(request.request_id)
            pending.append(request)
            if len(pending) == 2:
                yield from map(self._answer, reversed(pending))
                pending = []
        yield from map(self._answer, pending)

    @staticmethod
    def _answer(request: pb.PredictStreamRequest) -> pb.PredictStreamResponse:
        predictions = [
            pb.Prediction(label="positive", score=int(t) / 1000, probabilities=[0.0, 1.0])
            for t in request.request.texts
        ]
        return pb.PredictStreamResponse(
            request_id=request.request_id, response=pb.PredictResponse(predictions=predictions)
        )


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    servicer = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def check(servicer: Recorder, scores: list[float]) -> None:
    assert scores == pytest.approx([int(t) / 1000 for t in TEXTS])  # input order despite swapped answers
    for ids in servicer.streams:
        assert all(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("chunk_size", [1, 7])
def test_blocking_streams_never_repeat_an_id(recorder: tuple[Recorder, str], chunk_size: int) -> None:
    servicer, target = recorder
    with SentimentClient(target) as client:
        for _ in range(2):  # a second stream on the same client starts its own numbering, still unique
            scores = [p.score for p in client.stream(iter(TEXTS), chunk_size=chunk_size, window=4)]
            check(servicer, scores)
    assert len(servicer.streams) == 2
    assert len(servicer.streams[0]) == -(-len(TEXTS) // chunk_size)


async def test_async_streams_never_repeat_an_id(recorder: tuple[Recorder, str]) -> None:
    servicer, target = recorder
    async with AsyncSentimentClient(target) as client:
        scores = [p.score async for p in client.stream(iter(TEXTS), chunk_size=3, window=4)]
    check(servicer, scores)
    assert len(servicer.streams) == 1
