"""KServe v2 over HTTP (JSON, or Triton's binary tensor extension: http/kserve.py) and Triton's model
repository extension, each a call of calls/infer.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as pb
from service.calls.infer import InferenceCalls, server_metadata
from service.calls.priority import TRITON_LEVEL, from_urgency
from service.core.errors import InvalidInput
from service.http import kserve
from service.http.answers import check_answer
from service.http.bodies import Limits, header, parse_json, parsed, read_body

if TYPE_CHECKING:
    from service.calls.repository import RepositoryCalls


class InferenceEndpoints:
    """The endpoints of KServe v2 and the repository extension; serving(): what health says of the
    whole server (HTTP readiness follows it)."""

    def __init__(
        self, calls: InferenceCalls, repository: RepositoryCalls, limits: Limits, serving: Callable[[], bool]
    ) -> None:
        self.calls = calls
        self.repository = repository
        self.limits = limits
        self._serving = serving

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self._serving()
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        metadata = server_metadata()
        return JSONResponse(
            {"name": metadata.name, "version": metadata.version, "extensions": list(metadata.extensions)}
        )

    @staticmethod
    def _model(request: Request) -> tuple[str, str]:
        return request.path_params["name"], request.path_params.get("version", "")

    async def model_metadata(self, request: Request) -> Response:
        name, version = self._model(request)
        metadata = self.calls.model_metadata(pb.ModelMetadataRequest(name=name, version=version))
        return JSONResponse(kserve.metadata(metadata))

    async def model_ready(self, request: Request) -> Response:
        name, version = self._model(request)
        ready = self.calls.model_ready(name, version) and self._serving()
        return JSONResponse({"name": name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        length = header(request, kserve.HEADER_LENGTH)
        types = ("application/json", "application/octet-stream")
        # tritonclient sends no content type; a browser's form content types are refused
        data = await read_body(request, self.limits, types, optional_type=True)
        max_values = self.limits.max_json_values
        call = await parsed(data, lambda: kserve.parse_infer(data, length, max_values))
        call.request.model_name, call.request.model_version = self._model(request)
        priority = from_urgency(header(request, "priority"))
        if priority is not None and "priority" not in call.request.parameters:  # the body's wins
            call.request.parameters["priority"].int64_param = TRITON_LEVEL[priority]
        answer = await self.calls.infer(call.request, None, json=True)
        heavy = len(answer.raw_output_contents) > 4 or answer.ByteSize() > 1 << 16
        body, json_length = (
            await asyncio.to_thread(kserve.render_infer, answer, call)
            if heavy
            else kserve.render_infer(answer, call)
        )
        check_answer(len(body), self.limits.max_body_bytes)
        if json_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    async def _object(self, request: Request) -> dict[str, Any]:
        """A repository request's JSON object body; an empty body is an empty object."""
        data = await read_body(request, self.limits, ("application/json",), optional_type=True)
        if not data.strip():
            return {}
        max_values = self.limits.max_json_values
        return await parsed(data, lambda: parse_json(data, "the request body", max_values))

    async def _parameters(self, request: Request) -> dict[str, Any]:
        parameters = (await self._object(request)).get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be a JSON object")
        return parameters

    async def repository_index(self, request: Request) -> Response:
        ready = (await self._object(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput("ready must be true or false")
        return JSONResponse(self.repository.index(ready))

    async def repository_load(self, request: Request) -> Response:
        await self.repository.load(request.path_params["name"], await self._parameters(request))
        return JSONResponse({})

    async def repository_unload(self, request: Request) -> Response:
        await self.repository.unload(request.path_params["name"], await self._parameters(request))
        return JSONResponse({})
