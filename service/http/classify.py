"""The classify APIs of the servers our users come from, on the HTTP door, each a call of
calls/classify.py, answered and refused in its own shapes:

- vLLM and SGLang: POST /v1/classify, {"model", "input"} in; {"id", "object", "created", "model",
  "data": [{"index", "label", "probs", "num_classes"}], "usage"} out; OpenAI's error shape; and
  GET /v1/models, the model list OpenAI's clients read.
- Infinity: POST /classify, {"model", "input", "raw_scores"} in; each text's labels by score out.
- Hugging Face text-embeddings-inference: POST /predict ({"inputs", "truncate", "raw_scores"}; a
  long text with "truncate": false is read whole, in windows),
  POST /tokenize, GET /info, GET /health; its {"error", "error_type"} error shape. POST / answers
  the Inference API's text-classification shape that huggingface_hub's InferenceClient sends there.

The texts' limits, the token, the metrics (under these routes' own method names), tracing and the
status of each failure are the door's, as for every other route.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sentiment_client import __version__
from service.calls.priority import from_signed, from_urgency
from service.core.errors import InvalidInput, quoted
from service.core.fair_queue import Priority
from service.http.bodies import Limits, header, parse_json, parsed, read_body
from service.http.classify_openapi import SCORE_FUNCTIONS

if TYPE_CHECKING:
    from service.calls.classify import Classified, ClassifyCalls
    from service.calls.status import Status
    from service.core.results import TextResult

# the name OpenAI's clients give each HTTP status (vLLM and Infinity answer errors this way)
OPENAI_TYPES = {
    400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError",
    408: "TimeoutError", 409: "ConflictError", 413: "BadRequestError", 415: "BadRequestError",
    429: "RateLimitError", 500: "InternalServerError", 503: "ServiceUnavailableError", 504: "TimeoutError",
}  # fmt: skip
# text-embeddings-inference's error types by HTTP status (Unauthorized is this server's: TEI sends none)
TEI_TYPES = {401: "Unauthorized", 403: "Unauthorized", 429: "Overloaded", 503: "Unhealthy", 500: "Backend",
             504: "Backend"}  # fmt: skip


def openai_error(message: str, status: Status) -> dict[str, Any]:
    kind = OPENAI_TYPES.get(status.http, "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": None, "code": status.http}}


def tei_error(message: str, status: Status) -> dict[str, Any]:
    return {"error": message, "error_type": TEI_TYPES.get(status.http, "Validation")}


def _texts(value: Any, field: str, single: bool = True) -> list[str]:
    """The texts of a request field: a list of strings, or (single) one string."""
    if isinstance(value, str) and single:
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    if isinstance(value, list) and value and all(isinstance(item, int) for item in value):
        raise InvalidInput(f"{field} holds token ids; this server takes text: send the text itself")
    if isinstance(value, list) and not value:
        raise InvalidInput(f"{field} is an empty list; send at least one text")
    wanted = "a string or a list of strings" if single else "a list of strings"
    raise InvalidInput(f"{field} must be {wanted}, got {type(value).__name__}")


def _flag(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be true or false, got {quoted(str(value))}")
    return value


def _model(body: dict[str, Any]) -> str | None:
    name = body.get("model")
    if name is not None and not isinstance(name, str):
        raise InvalidInput(f"model must be a string, got {type(name).__name__}")
    return name


def _sigmoid(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(1.0 / (1.0 + np.exp(-values)))


def _scores(result: TextResult, function: str) -> list[float]:
    """A text's score for each label: probabilities (softmax), logits (none) or their sigmoids."""
    if function == "softmax" or result.logits is None:
        values = result.probabilities
    else:
        values = result.logits if function == "none" else _sigmoid(result.logits)
    return [float(value) for value in values]


def _ranked(labels: list[str], scores: list[float], top: int | None = None) -> list[dict[str, Any]]:
    """{"label", "score"} for each label, highest score first (the first `top` of them)."""
    order = sorted(range(len(labels)), key=lambda index: -scores[index])[:top]
    return [{"label": labels[index], "score": scores[index]} for index in order]


class ClassifyEndpoints:
    """The endpoints of the classify APIs; serving(): what health says of the whole server."""

    def __init__(self, calls: ClassifyCalls, limits: Limits, serving: Callable[[], bool]) -> None:
        self.calls = calls
        self.limits = limits
        self._serving = serving
        self._started = int(time.time())

    async def _body(self, request: Request) -> dict[str, Any]:
        data = await read_body(request, self.limits, ("application/json",))
        return await parsed(data, lambda: parse_json(data, "the request body", self.limits.max_json_values))

    async def _classify(
        self, request: Request, body: dict[str, Any], texts: list[str], whole: bool | None = None
    ) -> Classified:
        """The texts' answer, at the priority the Priority header asks for (the body's `priority`,
        vLLM's field, first)."""
        self.calls.check_model(_model(body))
        signed = body.get("priority")
        if signed is not None and (isinstance(signed, bool) or not isinstance(signed, int)):
            raise InvalidInput(f"priority must be a whole number (below 0 sooner), got {quoted(str(signed))}")
        priority = from_signed(signed) if signed is not None else from_urgency(header(request, "priority"))
        return await self.calls.classify(texts, whole, Priority.NORMAL if priority is None else priority)

    async def vllm_classify(self, request: Request) -> Response:
        """vLLM's and SGLang's /v1/classify: the top label and every label's probability."""
        body = await self._body(request)
        cut = body.get("truncate_prompt_tokens")
        if cut is not None and cut != -1:
            raise InvalidInput(
                "truncate_prompt_tokens cuts nothing here: the model reads the first "
                f"{self.calls.info().spec.max_length} tokens of a text; leave it out, or send -1"
            )
        answer = await self._classify(request, body, _texts(body.get("input"), "input"))
        return JSONResponse(
            {
                "id": f"classify-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": answer.name,
                "data": [
                    {
                        "index": index,
                        "label": result.label,
                        "probs": [float(p) for p in result.probabilities],
                        "num_classes": len(answer.labels),
                    }
                    for index, result in enumerate(answer.results)
                ],
                "usage": {
                    "prompt_tokens": answer.tokens,
                    "total_tokens": answer.tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                },
            }
        )

    async def openai_models(self, request: Request) -> Response:
        """OpenAI's model list, as vLLM serves it (clients list the models before they call)."""
        spec = self.calls.info().spec
        model = {"id": spec.name, "object": "model", "created": self._started,
                 "owned_by": "sentiment-service", "max_model_len": spec.max_length}  # fmt: skip
        return JSONResponse({"object": "list", "data": [model]})

    async def infinity_classify(self, request: Request) -> Response:
        """Infinity's /classify: each text's labels by score (logits with raw_scores)."""
        body = await self._body(request)
        function = "none" if _flag(body, "raw_scores", False) else "softmax"
        answer = await self._classify(request, body, _texts(body.get("input"), "input"))
        return JSONResponse(
            {
                "object": "classify",
                "data": [_ranked(answer.labels, _scores(r, function)) for r in answer.results],
                "model": answer.name,
                "usage": {"prompt_tokens": answer.tokens, "total_tokens": answer.tokens},
                "id": f"infinity-{uuid.uuid4()}",
                "created": int(time.time()),
            }
        )

    async def tei_predict(self, request: Request) -> Response:
        """text-embeddings-inference's /predict: one text (a string, or a list of one) answers its
        labels by score; a batch ([[text], [text], ...]) answers a list of those. A pair of texts
        ([text, text]) is a cross-encoder's input, which this model is not."""
        body = await self._body(request)
        inputs = body.get("inputs")
        single = isinstance(inputs, str) or (
            isinstance(inputs, list) and bool(inputs) and all(isinstance(i, str) for i in inputs)
        )
        if isinstance(inputs, list) and len(inputs) > 1 and single:
            raise InvalidInput(
                f"inputs is a list of {len(inputs)} strings: a pair of texts is a cross-encoder's input, "
                'and this model reads one text at a time; send a batch as [["first"], ["second"]]'
            )
        if single:
            texts = _texts(inputs, "inputs")
        elif isinstance(inputs, list) and inputs and all(isinstance(i, list) for i in inputs):
            texts = [self._one(item, index) for index, item in enumerate(inputs)]
        else:
            raise InvalidInput(
                'inputs must be a string, or a batch of texts each in its own list: [["first"], ["second"]]'
            )
        direction = body.get("truncation_direction", "Right")
        if direction not in ("Right", "right", None):
            raise InvalidInput(f"truncation_direction {quoted(str(direction))} is not taken: only Right")
        truncate = body.get("truncate")
        whole = None if truncate is None else not _flag(body, "truncate", True)  # None: the server's way
        function = "none" if _flag(body, "raw_scores", False) else "softmax"
        answer = await self._classify(request, body, texts, whole)
        ranked = [_ranked(answer.labels, _scores(r, function)) for r in answer.results]
        return JSONResponse(ranked[0] if single else ranked)

    @staticmethod
    def _one(item: list[Any], index: int) -> str:
        if len(item) == 1 and isinstance(item[0], str):
            return item[0]
        raise InvalidInput(
            f'inputs[{index}] must hold one text (["text"]); this model reads single texts, not pairs'
        )

    async def hf_task(self, request: Request) -> Response:
        """The Inference API's text-classification task, as huggingface_hub's InferenceClient posts
        it to a model's address: {"inputs", "parameters": {"function_to_apply", "top_k"}}; each text
        answers its labels by score, in a list per text."""
        body = await self._body(request)
        texts = _texts(body.get("inputs"), "inputs")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"parameters must be an object, got {type(parameters).__name__}")
        function = parameters.get("function_to_apply") or "softmax"
        if function not in SCORE_FUNCTIONS:
            raise InvalidInput(
                f"function_to_apply {quoted(str(function))} is unknown; use {', '.join(SCORE_FUNCTIONS)}"
            )
        top = parameters.get("top_k")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise InvalidInput(f"top_k must be a whole number of at least 1, got {quoted(str(top))}")
        answer = await self._classify(request, body, texts)
        return JSONResponse([_ranked(answer.labels, _scores(r, function), top) for r in answer.results])

    async def tei_tokenize(self, request: Request) -> Response:
        """text-embeddings-inference's /tokenize: every token of each text, with the characters it
        stands for."""
        body = await self._body(request)
        texts = _texts(body.get("inputs"), "inputs")
        special = _flag(body, "add_special_tokens", True)
        pieces = await self.calls.tokenize(texts, special)
        return JSONResponse(
            [
                [
                    {"id": p.id, "text": p.text, "special": p.special, "start": p.start, "stop": p.stop}
                    for p in text
                ]  # fmt: skip
                for text in pieces
            ]
        )

    async def tei_info(self, request: Request) -> Response:
        """text-embeddings-inference's /info: the model, its labels and the request limits."""
        info = self.calls.info()
        spec = info.spec
        return JSONResponse(
            {
                "model_id": spec.name,
                "model_sha": None,
                "model_dtype": "float32" if spec.variant == "fp32" else spec.variant,
                "model_type": {
                    "classifier": {
                        "id2label": {str(index): label for index, label in enumerate(spec.labels)},
                        "label2id": {label: index for index, label in enumerate(spec.labels)},
                    }
                },
                "max_input_length": spec.max_length,
                "max_client_batch_size": info.max_texts,
                "auto_truncate": not self.calls.reads_whole(),
                "tokenization_workers": info.sizing.workers,
                "version": __version__,
                "sha": None,
                "docker_label": None,
                "model_version": spec.version,
            }
        )

    async def tei_health(self, request: Request) -> Response:
        if self._serving():
            return Response(status_code=200)
        return JSONResponse({"error": "not serving: starting or draining", "error_type": "Unhealthy"}, 503)
