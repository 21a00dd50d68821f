"""What the KServe v2 / Open Inference Protocol calls mean, for both doors: model `sentiment` takes
one input, `text` (BYTES, shape [N]); it answers `label` (BYTES [N]) and `probabilities` (FP32 [N,
labels]). Request parameter `attention` ("none", "summary", "full") adds `num_tokens` (INT32 [N]),
`tokens` (BYTES [N, T]), `cls_attention` and `rollout` (FP32 [N, T]) and, for "full",
`attention_weights` (FP32 [N, layers, heads, T, T]); T is the longest text's token count and each
row i is zero-padded beyond num_tokens[i]. Outputs are raw (raw_output_contents) unless request
parameter `typed_output` is true. Triton's classification extension: an output asked for with the
parameter `classification` = k comes back as the k most probable classes per text, BYTES [N, k],
each "probability:index:label", most probable first (only `probabilities` has classes). Without
the `attention` parameter, the outputs asked for choose it: a request that names `tokens` (say) gets
the summary, one that names `attention_weights` the full weights, as generic clients that ask for
every output the metadata lists expect. Triton's `priority` (1 the highest, 2 the next, 3 or more
low, 0 the default) sets the texts' priority, `timeout` (microseconds) is a deadline, and
`long_texts` ("truncate" or "windows") says whether a long text is cut or read whole, and `explain`
("shapley" or "occlusion", core/explain.py) adds each text's words' contributions to its answer:
`num_words` (INT32 [N]), `words` (BYTES [N, W]) and `contributions` (FP32 [N, W], towards the
predicted label), W the most words of any text, rows padded with "" and 0 (naming one of these
outputs without the parameter asks for "shapley"); any other request parameter is refused with
INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from model_contract import version_number
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as pb
from service.calls.priority import from_triton
from service.calls.streams import Malformed, answer_each
from service.calls.tensors import EXPLANATION_OUTPUTS, INPUT, fill_outputs, parse_bytes_tensor
from service.core.errors import InvalidInput, ModelNotFound, quoted
from service.core.explain import DEFAULT as DEFAULT_EXPLANATION
from service.core.explain import Method
from service.core.fair_queue import Priority
from service.core.results import AttentionMode

if TYPE_CHECKING:
    from service.calls.status import Status
    from service.core.engine import Engine
    from service.versions.registry import ModelRegistry

DEFAULT_OUTPUTS = ("label", "probabilities")
SUMMARY_OUTPUTS = ("num_tokens", "tokens", "cls_attention", "rollout")
FULL_OUTPUTS = ("attention_weights",)
MODES = {"none": AttentionMode.NONE, "summary": AttentionMode.SUMMARY, "full": AttentionMode.FULL}

try:
    SERVER_VERSION = version("sentiment-service")
except PackageNotFoundError:  # running from a source tree that is not installed
    SERVER_VERSION = "0"


# request parameters this endpoint understands, and the kinds of value each may carry
PARAMETERS: dict[str, tuple[str, ...]] = {
    "attention": ("string_param",),  # none, summary or full
    "typed_output": ("bool_param",),  # answers in typed contents instead of raw_output_contents
    "priority": ("int64_param", "uint64_param"),  # Triton's level: 1 the highest, 0 the default
    "timeout": ("int64_param", "uint64_param"),  # Triton's, microseconds: a deadline for this call
    "long_texts": ("string_param",),  # truncate, or windows: a long text read whole
    "explain": ("string_param",),  # none, shapley or occlusion: the words' contributions
}


@dataclass(frozen=True)
class Options:
    """What a ModelInfer request's parameters ask for (mode None: no `attention` parameter)."""

    mode: AttentionMode | None
    typed: bool
    timeout_s: float | None
    priority: Priority = Priority.NORMAL
    whole: bool | None = None  # long texts read in windows (None: as the server does)
    explain: Method | None = None  # the `explain` parameter's method (None: no such parameter)


def parse_parameters(request: pb.ModelInferRequest) -> Options:
    """Check every request parameter by name and by kind; an unknown one is refused, not ignored."""
    values: dict[str, Any] = {}
    for name, parameter in request.parameters.items():
        kinds = PARAMETERS.get(name)
        if kinds is None:
            raise InvalidInput(f"request parameter {quoted(name)} is unknown; known: {sorted(PARAMETERS)}")
        kind = parameter.WhichOneof("parameter_choice")
        if kind not in kinds:
            wanted = " or ".join(k.removesuffix("_param") for k in kinds)
            got = (kind or "nothing").removesuffix("_param")
            raise InvalidInput(f"request parameter {quoted(name)} must be a {wanted}, got {got}")
        values[name] = getattr(parameter, kind)
    mode_name = values.get("attention")
    mode = None if mode_name is None else MODES.get(mode_name)
    if mode_name is not None and mode is None:
        raise InvalidInput(f"parameter attention={quoted(mode_name)} is unknown; use none, summary or full")
    timeout_us = values.get("timeout")
    if timeout_us is not None and timeout_us <= 0:
        raise InvalidInput(f"parameter timeout={timeout_us} must be a positive number of microseconds")
    timeout_s = None if timeout_us is None else timeout_us / 1e6
    long_texts = values.get("long_texts")
    if long_texts not in (None, "truncate", "windows"):
        raise InvalidInput(f"parameter long_texts={quoted(long_texts)} is unknown; use truncate or windows")
    whole = None if long_texts is None else long_texts == "windows"
    priority = from_triton(values.get("priority", 0))
    explain_name = values.get("explain")
    if explain_name not in (None, *(m.value for m in Method)):
        raise InvalidInput(
            f"parameter explain={quoted(explain_name)} is unknown; use none, shapley or occlusion"
        )
    explain = None if explain_name is None else Method(explain_name)
    return Options(mode, values.get("typed_output", False), timeout_s, priority, whole, explain)


def outputs_mode(request: pb.ModelInferRequest, asked: AttentionMode | None) -> AttentionMode:
    """The attention mode: the `attention` parameter's, or else the least that makes every output
    the request names."""
    if asked is not None:
        return asked
    names = {o.name for o in request.outputs}
    if names & set(FULL_OUTPUTS):
        return AttentionMode.FULL
    return AttentionMode.SUMMARY if names & set(SUMMARY_OUTPUTS) else AttentionMode.NONE


def outputs_explain(request: pb.ModelInferRequest, asked: Method | None) -> Method:
    """The explanation: the `explain` parameter's, or else the default one when the request names
    an output only an explanation makes."""
    if asked is not None:
        return asked
    return (
        DEFAULT_EXPLANATION if {o.name for o in request.outputs} & set(EXPLANATION_OUTPUTS) else Method.NONE
    )


# parameters an output may carry: Triton's classification extension, the number of classes wanted
OUTPUT_PARAMETERS = ("classification",)
CLASSIFIED = "probabilities"


def class_counts(request: pb.ModelInferRequest, labels: int) -> dict[str, int]:
    """The outputs asked for as classes (the classification extension), and how many of each: at
    most the model's number of labels, as Triton gives."""
    counts: dict[str, int] = {}
    for output in request.outputs:
        unknown = sorted(set(output.parameters) - set(OUTPUT_PARAMETERS))
        if unknown:
            raise InvalidInput(
                f"output {quoted(output.name)} has the parameters {quoted(unknown)}, which are unknown; "
                f"known: {list(OUTPUT_PARAMETERS)}"
            )
        if "classification" not in output.parameters:
            continue
        parameter = output.parameters["classification"]
        kind = parameter.WhichOneof("parameter_choice")
        count = getattr(parameter, kind) if kind in ("int64_param", "uint64_param") else None
        if count is None or count < 1:
            raise InvalidInput(
                f"output {quoted(output.name)}: classification must be a positive number of classes, "
                f"got {quoted(getattr(parameter, kind) if kind else None)}"
            )
        if output.name != CLASSIFIED:
            raise InvalidInput(
                f"output {quoted(output.name)} has no classes; ask for {CLASSIFIED!r} with classification"
            )
        counts[output.name] = min(count, labels)
    return counts


def wanted_outputs(
    request: pb.ModelInferRequest, mode: AttentionMode, explain: Method = Method.NONE
) -> list[str]:
    """The outputs the request asks for (all that `mode` and `explain` make when it names none)."""
    available = list(DEFAULT_OUTPUTS)
    if mode is not AttentionMode.NONE:
        available += SUMMARY_OUTPUTS
    if mode is AttentionMode.FULL:
        available += FULL_OUTPUTS
    if explain is not Method.NONE:
        available += EXPLANATION_OUTPUTS
    wanted = [o.name for o in request.outputs] or available
    twice = sorted(name for name, count in Counter(wanted).items() if count > 1)
    if twice:
        raise InvalidInput(f"outputs {quoted(twice)} are asked for more than once; name each once")
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise InvalidInput(
            f"unknown or unavailable outputs {quoted(unknown)}; with attention={mode.value}"
            + ("" if explain is Method.NONE else f" and explain={explain.value}")
            + f" use {available}"
        )
    return wanted


def texts_of(request: pb.ModelInferRequest, engine: Engine) -> list[str]:
    """The texts of the request's one BYTES input; its declared count is checked against the engine
    that will answer before anything is parsed (a huge raw buffer costs nothing)."""
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
        names = [i.name for i in request.inputs]
        raise InvalidInput(f"expected exactly one input tensor named {INPUT!r}, got {quoted(names)}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {INPUT!r} must have datatype BYTES, got {quoted(tensor.datatype)}")
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise InvalidInput(f"input {INPUT!r} must have shape [N] (or [N, 1]), got {quoted(shape)}")
    count = shape[0]
    engine.admit(count)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input tensor"
            )
        if tensor.contents.bytes_contents:
            raise InvalidInput(f"input {INPUT!r} has both raw and typed contents; send one")
        elements = parse_bytes_tensor(request.raw_input_contents[0], count)
    else:
        elements = list(tensor.contents.bytes_contents)
        if len(elements) != count:
            raise InvalidInput(f"input {INPUT!r} holds {len(elements)} elements; its shape says {count}")
    texts = []
    for index, element in enumerate(elements):
        try:
            texts.append(element.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InvalidInput(f"element {index} of {INPUT!r} is not valid UTF-8 (byte {err.start})") from err
    return texts


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name="sentiment-service", version=SERVER_VERSION, extensions=["classification", "model_repository"]
    )


class InferenceCalls:
    """KServe v2's calls over the model versions."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def check_model(self, name: str, version_text: str) -> int:
        """The version asked for (0: the default); ModelNotFound unless it is loaded here."""
        self.models.check_name(name)
        if not version_text:
            return 0
        number = version_number(version_text)
        if number is None:
            raise ModelNotFound(f"model version {quoted(version_text)} is not a version number (1, 2, ...)")
        self.models.check_version(number)
        return number

    def model_ready(self, name: str, version_text: str) -> bool:
        self.check_model(name, version_text)
        return self.models.ready

    def model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        number = self.check_model(request.name, request.version)
        spec = self.models.info(number).spec
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=spec.name,
            versions=[str(v) for v in self.models.loaded()],  # those calls may name
            platform="onnxruntime_onnx",
            inputs=[tensor(name=INPUT, datatype="BYTES", shape=[-1])],
            outputs=[
                tensor(name="label", datatype="BYTES", shape=[-1]),
                tensor(name="probabilities", datatype="FP32", shape=[-1, len(spec.labels)]),
                tensor(name="num_tokens", datatype="INT32", shape=[-1]),
                tensor(name="tokens", datatype="BYTES", shape=[-1, -1]),
                tensor(name="cls_attention", datatype="FP32", shape=[-1, -1]),
                tensor(name="rollout", datatype="FP32", shape=[-1, -1]),
                tensor(
                    name="attention_weights",
                    datatype="FP32",
                    shape=[-1, spec.num_layers, spec.num_heads, -1, -1],
                ),
                tensor(name="num_words", datatype="INT32", shape=[-1]),
                tensor(name="words", datatype="BYTES", shape=[-1, -1]),
                tensor(name="contributions", datatype="FP32", shape=[-1, -1]),
            ],
        )

    async def infer(
        self, request: pb.ModelInferRequest, deadline: float | None, json: bool = False
    ) -> pb.ModelInferResponse:
        """The answer to one inference request; ServiceError when it cannot be answered."""
        number = self.check_model(request.model_name, request.model_version)
        options = parse_parameters(request)
        mode, typed = outputs_mode(request, options.mode), options.typed
        explain = outputs_explain(request, options.explain)
        if options.timeout_s is not None:
            own = time.monotonic() + options.timeout_s
            deadline = own if deadline is None else min(deadline, own)
        wanted = wanted_outputs(request, mode, explain)
        async with self.models.use(number) as engine:  # the version answers it all
            texts = texts_of(request, engine)
            classes = class_counts(request, len(engine.info().spec.labels))
            results = await engine.predict(
                texts,
                mode,
                deadline,
                padded=True,
                json=json,
                priority=options.priority,
                whole=options.whole,
                explain=explain,
            )
            with engine.step("answer"):
                spec = engine.info().spec
                response = pb.ModelInferResponse(
                    model_name=spec.name, model_version=str(spec.version), id=request.id
                )
                if mode is AttentionMode.FULL or typed:  # megabytes to copy: not on the event loop
                    await asyncio.to_thread(
                        fill_outputs, response, wanted, results, typed, classes, spec.labels
                    )
                else:
                    fill_outputs(response, wanted, results, typed, classes, spec.labels)
                if mode is not AttentionMode.NONE or explain is not Method.NONE:
                    engine.check_sent_size(response.ByteSize())
        return response

    async def infer_each(
        self, requests: AsyncIterator[pb.ModelInferRequest | Malformed], deadline: float | None
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """A stream's answers; a request that fails is answered with its error, as Triton does (a
        message, and the id that tells which request failed), and the stream goes on."""

        async def handle(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            return pb.ModelStreamInferResponse(infer_response=await self.infer(request, deadline))

        def failed(
            request: pb.ModelInferRequest | Malformed, status: Status, text: str
        ) -> pb.ModelStreamInferResponse:
            request_id = "" if isinstance(request, Malformed) else request.id
            return pb.ModelStreamInferResponse(
                error_message=f"{status.grpc.name}: {text}",
                infer_response=pb.ModelInferResponse(id=request_id),
            )

        async for response in answer_each(requests, handle, failed, self.models.draining):
            yield response
