"""KServe v2 / Open Inference Protocol over HTTP: its JSON (and Triton's binary tensor data extension)
to and from the same protobuf messages the gRPC servicer takes, so that one servicer checks and
answers both.

A request body is JSON, or, with the header `Inference-Header-Content-Length: N`, N bytes of JSON
followed by the inputs' binary data, each input's `binary_data_size` bytes in input order. An output
is sent as binary data when its `binary_data` parameter says so, else when the request's
`binary_data_output` parameter does; the answer then carries the same header and the outputs' bytes
after its JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as pb
from service.calls.tensors import parse_bytes_tensor
from service.core.errors import InvalidInput, quoted
from service.http.bodies import parse_json

HEADER_LENGTH = "inference-header-content-length"
# request parameters of the binary extension: they say how the HTTP body is laid out, and the
# servicer never sees them
BINARY_OUTPUT = "binary_data_output"
BINARY_SIZE = "binary_data_size"
BINARY = "binary_data"
CLASSIFICATION = "classification"  # an output's: Triton's classification extension, the classes wanted
TYPED = "typed_output"  # the gRPC servicer's choice between raw and typed contents: not for HTTP
NUMERIC = {"FP32": "<f4", "INT32": "<i4"}  # the numeric datatypes this model answers in


@dataclass(frozen=True)
class InferCall:
    """A parsed HTTP inference request: the message for the servicer, and how to send each output."""

    request: pb.ModelInferRequest
    binary_default: bool
    binary: dict[str, bool]


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    value = obj.get(name, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        wanted = " or ".join(k.__name__ for k in _kinds(kind))
        raise InvalidInput(f"{where}: {name!r} must be {wanted}, got {quoted(value)}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _parameter(name: str, value: Any, where: str) -> pb.InferParameter:
    """A JSON parameter value as an InferParameter: bool, integer, number or string."""
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return pb.InferParameter(int64_param=value)
        if 0 <= value < 2**64:
            return pb.InferParameter(uint64_param=value)
        raise InvalidInput(f"{where}: parameter {quoted(name)} is out of range")
    if isinstance(value, float) and math.isfinite(value):
        return pb.InferParameter(double_param=value)
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    raise InvalidInput(f"{where}: parameter {quoted(name)} must be a boolean, number or string")


def _flatten(data: Any, where: str) -> list[Any]:
    """A tensor's `data`, nested row-major lists or flat, as a flat list."""
    flat: list[Any] = []
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) > 8:  # no model tensor has more dimensions; bounds the work
                    raise InvalidInput(f"{where}: 'data' nests lists more deeply than any tensor's shape")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise InvalidInput(f"{where}: 'shape' must be a list of integers, got {quoted(value)}")
    if any(not -(2**63) <= d < 2**63 for d in value):
        raise InvalidInput(f"{where}: 'shape' {quoted(value)} is out of range")
    return value


def parse_infer(body: bytes, header_length: str | None, max_values: int) -> InferCall:
    """The inference request in `body` (JSON of at most `max_values` values, then binary data when
    header_length is given)."""
    json_part, binary = body, b""
    if header_length is not None:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit()) or int(text) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {quoted(header_length)}; it must be a whole number of "
                f"bytes no larger than the body ({len(body)} bytes)"
            )
        json_part, binary = body[: int(text)], body[int(text) :]
    obj = parse_json(json_part, "the inference request", max_values)
    request = pb.ModelInferRequest()
    request.id = _field(obj, "id", str, "the request", "")
    parameters = dict(_field(obj, "parameters", dict, "the request", {}))
    binary_default = _field(parameters, BINARY_OUTPUT, bool, "the request's parameters", False)
    parameters.pop(BINARY_OUTPUT, None)
    if TYPED in parameters:
        raise InvalidInput(f"parameter {TYPED!r} is for gRPC; over HTTP each output's {BINARY!r} chooses")
    for name, value in parameters.items():
        request.parameters[name].CopyFrom(_parameter(name, value, "the request"))
    offset = 0
    inputs = _field(obj, "inputs", list, "the request", None)
    for index, item in enumerate(inputs):
        where = f"input {index}"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be a JSON object")
        tensor = request.inputs.add(
            name=_field(item, "name", str, where, None),
            datatype=_field(item, "datatype", str, where, None),
            shape=_shape(item.get("shape"), where),
        )
        own = dict(_field(item, "parameters", dict, where, {}))
        size = own.pop(BINARY_SIZE, None)
        for name, value in own.items():
            tensor.parameters[name].CopyFrom(_parameter(name, value, where))
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"{where}: {BINARY_SIZE} must be a number of bytes, got {quoted(size)}")
            if "data" in item:
                raise InvalidInput(f"{where} has both 'data' and {BINARY_SIZE}; send one")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{where}: {BINARY_SIZE} says {size} bytes but only {len(binary) - offset} bytes of "
                    "binary data remain after the JSON"
                )
            request.raw_input_contents.append(binary[offset : offset + size])
            offset += size
            continue
        if "data" not in item:
            raise InvalidInput(f"{where} has neither 'data' nor {BINARY_SIZE}")
        values = _flatten(item["data"], where)
        if tensor.datatype == "BYTES":
            if not all(isinstance(v, str) for v in values):
                raise InvalidInput(f"{where}: BYTES data must be strings")
            tensor.contents.bytes_contents.extend(v.encode("utf-8", "surrogatepass") for v in values)
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the JSON that no input's "
            f"{BINARY_SIZE} claims"
        )
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidInput("send every input as binary data or none: this server takes one input, 'text'")
    per_output: dict[str, bool] = {}
    for index, item in enumerate(_field(obj, "outputs", list, "the request", [])):
        where = f"output {index}"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be a JSON object")
        name = _field(item, "name", str, where, None)
        output = request.outputs.add(name=name)
        own = _field(item, "parameters", dict, where, {})
        unknown = sorted(set(own) - {BINARY, CLASSIFICATION})
        if unknown:
            raise InvalidInput(
                f"{where}: parameters {quoted(unknown)} are unknown; known: [{BINARY!r}, {CLASSIFICATION!r}]"
            )
        if CLASSIFICATION in own:
            output.parameters[CLASSIFICATION].CopyFrom(_parameter(CLASSIFICATION, own[CLASSIFICATION], where))
        if BINARY in own:
            per_output[name] = _field(own, BINARY, bool, where, None)
    return InferCall(request, binary_default, per_output)


def _data(datatype: str, raw: bytes, count: int) -> list[Any]:
    if datatype == "BYTES":
        return [element.decode("utf-8") for element in parse_bytes_tensor(raw, count)]
    values: list[Any] = np.frombuffer(raw, dtype=NUMERIC[datatype]).tolist()
    return values


def render_infer(response: pb.ModelInferResponse, call: InferCall) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON when binary data follows it (else None)."""
    outputs = []
    tail: list[bytes] = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        shape = list(tensor.shape)
        output: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": shape}
        if call.binary.get(tensor.name, call.binary_default):
            output["parameters"] = {BINARY_SIZE: len(raw)}
            tail.append(raw)
        else:
            output["data"] = _data(tensor.datatype, raw, math.prod(shape))
        outputs.append(output)
    answer: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        answer["id"] = response.id
    answer["outputs"] = outputs
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not tail:
        return header, None
    return b"".join([header, *tail]), len(header)


def metadata(response: pb.ModelMetadataResponse) -> dict[str, Any]:
    """Model metadata as the HTTP protocol writes it (shapes as numbers, not protobuf's strings)."""

    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": tensors(response.inputs),
        "outputs": tensors(response.outputs),
    }
