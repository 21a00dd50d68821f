"""KServe v2 tensors: texts out of a BYTES input, predictions into output tensors (raw or typed).

Raw BYTES tensors are each element's 4-byte little-endian length, then its bytes; numeric tensors
are little-endian arrays, as Triton sends them.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from service.core.errors import InvalidInput, RuntimeFailure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sentiment_client.pb.inference import grpc_predict_v2_pb2 as pb
    from service.core.results import TextResult

INPUT = "text"
# the words' contributions (core/explain.py): W is the most words of any text, rows padded with ""
# and 0 past a text's num_words
EXPLANATION_OUTPUTS = ("num_words", "words", "contributions")
LENGTH = struct.Struct("<I")


def parse_bytes_tensor(raw: bytes, count: int) -> list[bytes]:
    """Elements of a raw BYTES tensor: each a 4-byte little-endian length, then the bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(elements) == count:  # stop here: a buffer of millions of tiny elements is not read
            raise InvalidInput(f"raw input for {INPUT!r} holds more elements than its shape says ({count})")
        if offset + 4 > len(raw):
            raise InvalidInput(f"raw input for {INPUT!r} ends inside the length of element {len(elements)}")
        (size,) = LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidInput(
                f"raw input for {INPUT!r}: element {len(elements)} says {size} bytes but only "
                f"{len(raw) - offset} remain"
            )
        elements.append(raw[offset : offset + size])
        offset += size
    if len(elements) != count:
        raise InvalidInput(f"raw input for {INPUT!r} holds {len(elements)} elements; its shape says {count}")
    return elements


def serialize_bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(LENGTH.pack(len(v)) + v for v in values)


def fill_outputs(
    response: pb.ModelInferResponse,
    wanted: list[str],
    results: list[TextResult],
    typed: bool,
    classes: dict[str, int] | None = None,
    labels: Sequence[str] = (),
) -> None:
    """Write the wanted output tensors of `results` into `response`, raw or typed; an output in
    `classes` as its top classes (the classification extension)."""
    for name in wanted:
        count = (classes or {}).get(name)
        datatype, array = (
            output_tensor(name, results) if count is None else top_classes(results, count, labels)
        )
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if datatype == "BYTES":
            values = [v.encode("utf-8") for v in array.ravel().tolist()]
            if typed:
                tensor.contents.bytes_contents.extend(values)
            else:
                response.raw_output_contents.append(serialize_bytes_tensor(values))
        elif typed:
            contents = tensor.contents.int_contents if datatype == "INT32" else tensor.contents.fp32_contents
            contents.extend(array.ravel().tolist())
        else:
            response.raw_output_contents.append(array.tobytes())


def top_classes(results: list[TextResult], count: int, labels: Sequence[str]) -> tuple[str, np.ndarray]:
    """Each text's `count` most probable classes, most probable first, as Triton writes them:
    "probability:index:label" (the probability with six decimals)."""
    rows = []
    for result in results:
        order = np.argsort(-result.probabilities, kind="stable")[:count]
        rows.append([f"{result.probabilities[i]:f}:{i}:{labels[i]}" for i in order])
    return "BYTES", np.array(rows, dtype=object).reshape(len(results), count)


def output_tensor(name: str, results: list[TextResult]) -> tuple[str, np.ndarray]:
    """One output tensor of the batch of results: (datatype, array)."""
    if name == "label":
        return "BYTES", np.array([r.label for r in results], dtype=object)
    if name == "probabilities":
        return "FP32", np.stack([r.probabilities for r in results]).astype("<f4")
    if name == "num_tokens":
        return "INT32", np.array([r.num_tokens for r in results], dtype="<i4")
    if name in EXPLANATION_OUTPUTS:
        return explanation_tensor(name, results)
    longest = max(r.num_tokens for r in results)
    views = [r.attention for r in results if r.attention is not None]
    if len(views) != len(results):  # the engine computes attention for every text that asked
        raise RuntimeFailure(f"output {name!r} needs attention that was not computed")
    if name == "tokens":
        tokens = np.full((len(results), longest), "", dtype=object)
        for row, view in enumerate(views):
            tokens[row, : len(view.tokens)] = view.tokens
        return "BYTES", tokens
    if name in ("cls_attention", "rollout"):
        values = np.zeros((len(results), longest), dtype="<f4")
        for row, view in enumerate(views):
            row_values = view.cls_attention if name == "cls_attention" else view.rollout
            values[row, : len(row_values)] = row_values
        return "FP32", values
    weights = [view.weights for view in views if view.weights is not None]
    if len(weights) != len(results):
        raise RuntimeFailure("output 'attention_weights' needs full attention that was not computed")
    layers, heads = weights[0].shape[:2]
    padded = np.zeros((len(results), layers, heads, longest, longest), dtype="<f4")
    for row, array in enumerate(weights):
        n = array.shape[-1]
        padded[row, :, :, :n, :n] = array
    return "FP32", padded


def explanation_tensor(name: str, results: list[TextResult]) -> tuple[str, np.ndarray]:
    """One of EXPLANATION_OUTPUTS for the batch of results."""
    explained = [r.explanation for r in results if r.explanation is not None]
    if len(explained) != len(results):  # the engine explains every text when asked
        raise RuntimeFailure(f"output {name!r} needs an explanation that was not made")
    if name == "num_words":
        return "INT32", np.array([len(e.words) for e in explained], dtype="<i4")
    most = max(len(e.words) for e in explained)
    if name == "words":
        words = np.full((len(results), most), "", dtype=object)
        for row, each in enumerate(explained):
            words[row, : len(each.words)] = [w.text for w in each.words]
        return "BYTES", words
    values = np.zeros((len(results), most), dtype="<f4")
    for row, each in enumerate(explained):
        values[row, : len(each.words)] = each.contributions
    return "FP32", values
