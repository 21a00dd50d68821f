"""inference.GRPCInferenceService over gRPC: KServe v2 and Triton's repository extension, each a call
of calls/infer.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as pb
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from service.calls.infer import InferenceCalls, server_metadata
from service.grpc.boundary import deadline_of, streaming, unary

if TYPE_CHECKING:
    from service.calls.repository import RepositoryCalls
    from service.calls.streams import Malformed

Context = grpc.aio.ServicerContext[Any, Any]


def parameters_of(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> dict[str, Any]:
    """A repository request's parameters as plain values, as the HTTP door reads them from JSON."""
    values = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        values[key] = None if kind is None else getattr(parameter, kind)
    return values


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Thin: the caller's deadline, the call, the status table."""

    def __init__(self, calls: InferenceCalls, repository: RepositoryCalls) -> None:
        self.calls = calls
        self.repository = repository

    @unary
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @unary
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.calls.models.ready)

    @unary
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.calls.model_ready(request.name, request.version))

    @unary
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return server_metadata()

    @unary
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        return self.calls.model_metadata(request)

    @unary
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return await self.calls.infer(request, deadline_of(context))

    @streaming
    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest | Malformed], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for response in self.calls.infer_each(request_iterator, deadline_of(context)):
            yield response

    @unary
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        entry = pb.RepositoryIndexResponse.ModelIndex
        rows = self.repository.index(request.ready)
        return pb.RepositoryIndexResponse(models=[entry(**row) for row in rows])

    @unary
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        await self.repository.load(request.model_name, parameters_of(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @unary
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self.repository.unload(request.model_name, parameters_of(request.parameters))
        return pb.RepositoryModelUnloadResponse()
