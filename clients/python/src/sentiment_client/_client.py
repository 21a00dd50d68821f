"""SentimentClient (blocking) and AsyncSentimentClient (asyncio) over the sentiment.v1 API: over gRPC
for a target written host:port, over HTTP/JSON (_http.py) for one written http://host:port."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, overload

import grpc
import httpx
from grpc_health.v1 import health_pb2_grpc

from sentiment_client._base import _BaseClient, _health_status, _InOrder
from sentiment_client._http import AsyncHttpStub, HttpStub
from sentiment_client.errors import SentimentError, from_rpc_error
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as inference_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client.types import (
    AttentionMode,
    Explain,
    ModelInfo,
    ModelVersion,
    Prediction,
)


class SentimentClient(_BaseClient):
    """Blocking client; use it as a context manager so the channel is closed.

    with SentimentClient("127.0.0.1:50051") as client:
        print(client.predict("What a film!").label)
    """

    def __init__(self, target: str | None = None, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._http: HttpStub | None = None
        self._stub: Any
        self._inference: Any
        if self._url is not None:
            self._http = HttpStub(
                httpx.Client(base_url=self._url, verify=self._verify, timeout=self.timeout_s)
            )
            self._stub = self._inference = self._http
            return
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self.target, options=self._options)
        else:
            self._channel = grpc.secure_channel(self.target, self._credentials, options=self._options)
        self._stub = pb_grpc.SentimentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._inference = inference_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> SentimentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.client.close()
        else:
            self._channel.close()

    def _call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=timeout_s or self.timeout_s, metadata=self._call_metadata())
            except grpc.RpcError as err:
                if self.retry.should_retry(err.code(), attempt):
                    time.sleep(self._backoff(err, attempt))
                    continue
                raise from_rpc_error(err) from err

    def model_info(self, version: int = 0) -> ModelInfo:
        """The served model: labels, sizes, limits, test metrics."""
        return self._remember(
            self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(model_version=version)), version
        )

    def _model_info(self) -> ModelInfo:
        """The served model's info (its limits and labels), asked once."""
        return self._info or self.model_info()

    def models(self, ready_only: bool = False) -> list[ModelVersion]:
        """Every version under the server's model directory and its state (the repository index)."""
        request = inference_pb.RepositoryIndexRequest(ready=ready_only)
        return self._versions(self._call(self._inference.RepositoryIndex, request))

    def load(
        self,
        versions: Sequence[int] | None = None,
        *,
        latest: int | None = None,
        shadow: bool = False,
        model: str = "sentiment",
    ) -> None:
        """Load the versions listed, or the `latest` N, or (neither given) what the server's version
        policy chooses now; with shadow, those not yet loaded come in as shadows. The server must run
        with --model-control explicit; a version failing its checks raises Refused."""
        self._info = None
        self._call(self._inference.RepositoryModelLoad, self._load_request(model, versions, latest, shadow))

    def unload(self, version: int | None = None, *, model: str = "sentiment") -> None:
        """Unload one version, or (none given) every version of the model."""
        self._info = None
        self._call(self._inference.RepositoryModelUnload, self._unload_request(model, version))

    @overload
    def predict(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]
        self,
        texts: str,
        attention: AttentionMode | str = ...,
        timeout_s: float | None = ...,
        *,
        explain: Explain | str = ...,
    ) -> Prediction: ...

    @overload
    def predict(
        self,
        texts: Sequence[str],
        attention: AttentionMode | str = ...,
        timeout_s: float | None = ...,
        *,
        explain: Explain | str = ...,
    ) -> list[Prediction]: ...

    def predict(
        self,
        texts: str | Sequence[str],
        attention: AttentionMode | str = AttentionMode.NONE,
        timeout_s: float | None = None,
        *,
        explain: Explain | str = Explain.NONE,
    ) -> Prediction | list[Prediction]:
        """Classify one text (returns a Prediction) or many (a list, in order), chunked to the
        server's per-request limit. explain: also measure which words moved each answer
        (Prediction.explanation; "shapley" is the faithful one, at about two model passes per word)."""
        single, items = self._items(texts)
        info = self._model_info()
        chunks = self._chunks(items, info.max_texts_per_request)
        responses = [
            self._call(self._stub.Predict, self._request(c, attention, explain), timeout_s) for c in chunks
        ]
        results = self._results(chunks, responses, info.labels)
        return results[0] if single else results

    def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """grpc.health.v1 status of the server ("") or of one service: SERVING, NOT_SERVING, ..."""
        if self._http is not None:
            self._unknown_service(service)
            try:
                ready = self._http.ready(timeout_s or self.timeout_s, self._metadata)
            except grpc.RpcError as err:
                raise from_rpc_error(err) from err
            return "SERVING" if ready else "NOT_SERVING"
        check = health_pb2_grpc.HealthStub(self._channel).Check
        try:
            response = check(**self._health_call(service, timeout_s))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return _health_status(response)

    def stream(
        self,
        texts: Iterable[str],
        attention: AttentionMode | str = AttentionMode.NONE,
        chunk_size: int = 16,
        window: int = 16,
    ) -> Iterator[Prediction]:
        """Predictions for an iterable of any length, in input order, over one PredictStream.

        At most `window` requests of `chunk_size` texts are in flight: the input is read only as
        fast as answers come back, so memory stays bounded however long the input is. Over HTTP,
        the requests go `window` at a time, each group one NDJSON exchange.
        """
        order = _InOrder(self._model_info().labels)
        if self._http is not None:
            for group in self._stream_groups(texts, attention, chunk_size, window, order):
                yield from self._http_exchange(self._http, group, order)
            return
        # gRPC's thread reads requests() while this one reads the answers; the condition wakes the
        # reader when an answer frees a slot of the window or the stream ends
        room = threading.Condition()
        in_flight = 0
        stopped = False

        def has_room() -> bool:
            return in_flight < window or stopped

        def requests() -> Iterator[pb.PredictStreamRequest]:
            nonlocal in_flight
            for request in self._stream_requests(texts, attention, chunk_size, order):
                with room:
                    room.wait_for(has_room)
                    if stopped:
                        return
                    in_flight += 1
                yield request

        responses = self._stub.PredictStream(requests(), metadata=self._call_metadata())
        try:
            for response in responses:
                with room:
                    in_flight -= 1
                    room.notify()
                yield from order.answered(response)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            with room:
                stopped = True
                room.notify_all()
            responses.cancel()

    def _http_exchange(
        self, http: HttpStub, group: list[pb.PredictStreamRequest], order: _InOrder
    ) -> Iterator[Prediction]:
        try:
            answers = http.stream(group, self.timeout_s, self._call_metadata())
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        for answer in answers:
            yield from order.answered(answer)


class AsyncSentimentClient(_BaseClient):
    """asyncio client with the same methods as SentimentClient, as coroutines.

    async with AsyncSentimentClient("127.0.0.1:50051") as client:
        print((await client.predict("What a film!")).label)
    """

    def __init__(self, target: str | None = None, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._http: AsyncHttpStub | None = None
        self._stub: Any
        self._inference: Any
        if self._url is not None:
            client = httpx.AsyncClient(base_url=self._url, verify=self._verify, timeout=self.timeout_s)
            self._http = AsyncHttpStub(client)
            self._stub = self._inference = self._http
            return
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        self._stub = pb_grpc.SentimentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._inference = inference_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> AsyncSentimentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.client.aclose()
        else:
            await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(
                    request, timeout=timeout_s or self.timeout_s, metadata=self._call_metadata()
                )
            except grpc.RpcError as err:
                if self.retry.should_retry(err.code(), attempt):
                    await asyncio.sleep(self._backoff(err, attempt))
                    continue
                raise from_rpc_error(err) from err

    async def model_info(self, version: int = 0) -> ModelInfo:
        """The served model: labels, sizes, limits, test metrics."""
        message = await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(model_version=version))
        return self._remember(message, version)

    async def models(self, ready_only: bool = False) -> list[ModelVersion]:
        """As SentimentClient.models."""
        request = inference_pb.RepositoryIndexRequest(ready=ready_only)
        return self._versions(await self._call(self._inference.RepositoryIndex, request))

    async def load(
        self,
        versions: Sequence[int] | None = None,
        *,
        latest: int | None = None,
        shadow: bool = False,
        model: str = "sentiment",
    ) -> None:
        """As SentimentClient.load."""
        self._info = None
        request = self._load_request(model, versions, latest, shadow)
        await self._call(self._inference.RepositoryModelLoad, request)

    async def unload(self, version: int | None = None, *, model: str = "sentiment") -> None:
        """As SentimentClient.unload."""
        self._info = None
        await self._call(self._inference.RepositoryModelUnload, self._unload_request(model, version))

    async def predict(
        self,
        texts: str | Sequence[str],
        attention: AttentionMode | str = AttentionMode.NONE,
        timeout_s: float | None = None,
        *,
        explain: Explain | str = Explain.NONE,
    ) -> Prediction | list[Prediction]:
        """As SentimentClient.predict; the chunks of a long input are sent concurrently."""
        single, items = self._items(texts)
        info = self._info or await self.model_info()
        chunks = self._chunks(items, info.max_texts_per_request)
        responses = await asyncio.gather(
            *(self._call(self._stub.Predict, self._request(c, attention, explain), timeout_s) for c in chunks)
        )
        results = self._results(chunks, responses, info.labels)
        return results[0] if single else results

    async def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """grpc.health.v1 status of the server ("") or of one service."""
        if self._http is not None:
            self._unknown_service(service)
            try:
                ready = await self._http.ready(timeout_s or self.timeout_s, self._metadata)
            except grpc.RpcError as err:
                raise from_rpc_error(err) from err
            return "SERVING" if ready else "NOT_SERVING"
        check = health_pb2_grpc.HealthStub(self._channel).Check
        try:
            response = await check(**self._health_call(service, timeout_s))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return _health_status(response)

    async def stream(
        self,
        texts: Iterable[str],
        attention: AttentionMode | str = AttentionMode.NONE,
        chunk_size: int = 16,
        window: int = 16,
    ) -> AsyncIterator[Prediction]:
        """As SentimentClient.stream: in order, at most `window` requests in flight."""
        order = _InOrder((self._info or await self.model_info()).labels)
        if self._http is not None:
            for group in self._stream_groups(texts, attention, chunk_size, window, order):
                for prediction in await self._http_exchange(self._http, group, order):
                    yield prediction
            return
        call = self._stub.PredictStream(metadata=self._call_metadata())
        slots = asyncio.Semaphore(window)

        async def write() -> None:
            for request in self._stream_requests(texts, attention, chunk_size, order):
                await slots.acquire()
                await call.write(request)
            await call.done_writing()

        writer = asyncio.create_task(write())
        try:
            async for response in call:
                slots.release()
                for prediction in order.answered(response):
                    yield prediction
            await writer
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            writer.cancel()
            call.cancel()

    async def _http_exchange(
        self, http: AsyncHttpStub, group: list[pb.PredictStreamRequest], order: _InOrder
    ) -> list[Prediction]:
        try:
            answers = await http.stream(group, self.timeout_s, self._call_metadata())
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return [prediction for answer in answers for prediction in order.answered(answer)]


__all__ = ["AsyncSentimentClient", "SentimentClient", "SentimentError"]
