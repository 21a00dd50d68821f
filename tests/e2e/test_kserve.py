"""The Open Inference Protocol (KServe v2) endpoint on the same server, port and batcher."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from tests.e2e.conftest import RunningServer, scrape, wait_until

TEXTS = ["A wonderful, moving film.", "Dull and far too long.", "ok", "The best thing I have seen in years!"]


def raw_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def request(texts: list[str], raw: bool = True, **parameters: str | bool) -> v2.ModelInferRequest:
    encoded = [t.encode() for t in texts]
    message = v2.ModelInferRequest(model_name="sentiment", id="req-7")
    tensor = message.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    if raw:
        message.raw_input_contents.append(raw_bytes(encoded))
    else:
        tensor.contents.bytes_contents.extend(encoded)
    for key, value in parameters.items():
        if isinstance(value, bool):
            message.parameters[key].bool_param = value
        else:
            message.parameters[key].string_param = value
    return message


def labels_from_raw(raw: bytes) -> list[str]:
    values, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        values.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return values


def tritonclient_run(script: str, server: RunningServer) -> dict:
    """What a tritonclient script beside this file got from the server (it runs in its own
    process: tritonclient registers the same `inference.*` messages as this project)."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name(script)), server.target, *TEXTS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer: dict = json.loads(result.stdout)
    return answer


@pytest.fixture
def v2_stub(server: RunningServer):
    with grpc.insecure_channel(server.target) as channel:
        yield v2_grpc.GRPCInferenceServiceStub(channel)


def test_raw_and_typed_answers_equal_sentiment_v1(v2_stub, stub) -> None:
    expected = stub.Predict(pb.PredictRequest(texts=TEXTS)).predictions
    raw = v2_stub.ModelInfer(request(TEXTS))
    assert raw.id == "req-7" and raw.model_name == "sentiment" and raw.model_version == "1"
    assert [o.name for o in raw.outputs] == ["label", "probabilities"]
    assert list(raw.outputs[1].shape) == [len(TEXTS), 2] and raw.outputs[1].datatype == "FP32"
    probabilities = np.frombuffer(raw.raw_output_contents[1], dtype="<f4").reshape(len(TEXTS), 2)
    assert labels_from_raw(raw.raw_output_contents[0]) == [p.label for p in expected]
    np.testing.assert_allclose(probabilities, [list(p.probabilities) for p in expected], atol=1e-5)
    typed = v2_stub.ModelInfer(request(TEXTS, raw=False, typed_output=True))
    assert not typed.raw_output_contents
    assert [b.decode() for b in typed.outputs[0].contents.bytes_contents] == [p.label for p in expected]
    np.testing.assert_allclose(typed.outputs[1].contents.fp32_contents, probabilities.ravel(), atol=1e-6)


def test_only_the_requested_outputs_come_back(v2_stub) -> None:
    message = request(TEXTS[:2])
    message.outputs.add(name="probabilities")
    response = v2_stub.ModelInfer(message)
    assert [o.name for o in response.outputs] == ["probabilities"] and len(response.raw_output_contents) == 1


def test_outputs_named_without_the_attention_parameter_switch_on_what_makes_them(v2_stub) -> None:
    # as a generic client does: every output the metadata lists, and no parameters
    metadata = v2_stub.ModelMetadata(v2.ModelMetadataRequest(name="sentiment"))
    message = request(TEXTS[:2])
    for output in metadata.outputs:
        message.outputs.add(name=output.name)
    response = v2_stub.ModelInfer(message)
    assert [o.name for o in response.outputs] == [o.name for o in metadata.outputs]
    assert "attention_weights" in [o.name for o in response.outputs]
    summary = request(TEXTS[:2])
    summary.outputs.add(name="rollout")
    summary.outputs.add(name="label")
    response = v2_stub.ModelInfer(summary)
    assert [o.name for o in response.outputs] == ["rollout", "label"]
    # an attention parameter the caller sets still rules: a contradiction is refused, not overridden
    contradiction = request(TEXTS[:1], attention="none")
    contradiction.outputs.add(name="tokens")
    with pytest.raises(grpc.RpcError) as err:
        v2_stub.ModelInfer(contradiction)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "with attention=none use ['label', 'probabilities']" in err.value.details()


def test_classification_extension_gives_the_top_classes_as_triton_writes_them(v2_stub, stub) -> None:
    expected = stub.Predict(pb.PredictRequest(texts=TEXTS)).predictions
    labels = list(stub.GetModelInfo(pb.GetModelInfoRequest()).labels)
    for count, asked in ((1, 1), (2, 2), (5, 2)):  # more classes than the model has: all of them
        message = request(TEXTS)
        message.outputs.add(name="probabilities").parameters["classification"].int64_param = count
        message.outputs.add(name="label")
        response = v2_stub.ModelInfer(message)
        tensor = response.outputs[0]
        assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("probabilities", "BYTES", [4, asked])
        cells = labels_from_raw(response.raw_output_contents[0])
        for row, prediction in enumerate(expected):
            top = sorted(enumerate(prediction.probabilities), key=lambda pair: -pair[1])[:asked]
            got = [cell.split(":") for cell in cells[row * asked : (row + 1) * asked]]
            assert [(int(i), label) for _, i, label in got] == [(i, labels[i]) for i, _ in top]
            assert [float(p) for p, _, _ in got] == pytest.approx([p for _, p in top], abs=1e-6)
            assert got[0][2] == prediction.label
        assert labels_from_raw(response.raw_output_contents[1]) == [p.label for p in expected]
    metadata = v2_stub.ServerMetadata(v2.ServerMetadataRequest())
    assert "classification" in metadata.extensions
    for output, value, fragment in (
        ("label", 1, "'label' has no classes; ask for 'probabilities'"),
        ("probabilities", 0, "classification must be a positive number of classes, got 0"),
    ):
        message = request(TEXTS[:1])
        message.outputs.add(name=output).parameters["classification"].int64_param = value
        with pytest.raises(grpc.RpcError) as err:
            v2_stub.ModelInfer(message)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.value.details()
    message = request(TEXTS[:1])
    message.outputs.add(name="label").parameters["top_k"].int64_param = 1
    with pytest.raises(grpc.RpcError) as err:
        v2_stub.ModelInfer(message)
    assert "'top_k'" in err.value.details() and "known: ['classification']" in err.value.details()


def test_attention_outputs_are_padded_rows_with_their_lengths(v2_stub, stub) -> None:
    response = v2_stub.ModelInfer(request(TEXTS, attention="full"))
    names = [o.name for o in response.outputs]
    assert names == [
        "label",
        "probabilities",
        "num_tokens",
        "tokens",
        "cls_attention",
        "rollout",
        "attention_weights",
    ]
    arrays = dict(zip(names, response.raw_output_contents, strict=True))
    num_tokens = np.frombuffer(arrays["num_tokens"], dtype="<i4")
    longest = int(num_tokens.max())
    rollout = np.frombuffer(arrays["rollout"], dtype="<f4").reshape(len(TEXTS), longest)
    summary = stub.Predict(pb.PredictRequest(texts=TEXTS, attention=pb.ATTENTION_MODE_SUMMARY)).predictions
    for row, prediction in enumerate(summary):
        n = prediction.num_tokens
        assert num_tokens[row] == n
        np.testing.assert_allclose(rollout[row, :n], prediction.attention.rollout, atol=1e-6)
        assert not rollout[row, n:].any()
    shape = list(response.outputs[names.index("attention_weights")].shape)
    assert shape[0] == len(TEXTS) and shape[-2:] == [longest, longest]


def test_metadata_and_readiness_describe_the_model(v2_stub) -> None:
    assert v2_stub.ServerLive(v2.ServerLiveRequest()).live
    assert v2_stub.ServerReady(v2.ServerReadyRequest()).ready
    assert v2_stub.ModelReady(v2.ModelReadyRequest(name="sentiment", version="1")).ready
    metadata = v2_stub.ModelMetadata(v2.ModelMetadataRequest(name="sentiment"))
    assert list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("text", "BYTES", [-1])]
    outputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
    assert outputs["label"] == ("BYTES", [-1]) and outputs["probabilities"] == ("FP32", [-1, 2])


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda r: setattr(r, "model_name", "other"), grpc.StatusCode.NOT_FOUND, "unknown model 'other'"),
        (lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "version 9 does not exist"),
        (lambda r: setattr(r.inputs[0], "name", "txt"), grpc.StatusCode.INVALID_ARGUMENT, "named 'text'"),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP32"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "datatype BYTES",
        ),
        (lambda r: r.inputs[0].shape.append(3), grpc.StatusCode.INVALID_ARGUMENT, "shape [N]"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 3), grpc.StatusCode.INVALID_ARGUMENT, "shape says 3"),
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"\x09\x00\x00\x00abc"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "says 9 bytes but only 3 remain",
        ),
        (
            lambda r: r.raw_input_contents.__setitem__(0, raw_bytes([b"\xff\xfe", b"ok"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "element 0 of 'text' is not valid UTF-8",
        ),
        (
            lambda r: r.outputs.add(name="logits"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown or unavailable outputs",
        ),
        (
            lambda r: r.parameters["attention"].__setattr__("string_param", "most"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "attention='most'",
        ),
        # versions are ASCII digits: "²" passes str.isdigit() but not int(), "١" passes both
        (lambda r: setattr(r, "model_version", "²"), grpc.StatusCode.NOT_FOUND, "not a version number"),
        (lambda r: setattr(r, "model_version", "١"), grpc.StatusCode.NOT_FOUND, "not a version number"),
        (
            lambda r: r.parameters["temperature"].__setattr__("double_param", 0.5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "request parameter 'temperature' is unknown",
        ),
        (
            lambda r: r.parameters["typed_output"].__setattr__("string_param", "false"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'typed_output' must be a bool, got string",
        ),
        (
            lambda r: r.parameters["timeout"].__setattr__("int64_param", -5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "timeout=-5 must be a positive number",
        ),
        # a raw buffer that holds far more elements than its shape says is not read to its end
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"\x00\x00\x00\x00" * 4_000_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "holds more elements than its shape says (2)",
        ),
        # the declared count is refused before the raw buffer (here 2 elements) is parsed
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 4_000_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request has 4000000 texts; the limit is 256",
        ),
    ],
)
def test_bad_requests_get_clear_errors(v2_stub, mutate, code, fragment) -> None:
    message = request(["good", "bad"])
    mutate(message)
    with pytest.raises(grpc.RpcError) as caught:
        v2_stub.ModelInfer(message)
    assert caught.value.code() == code
    assert fragment in caught.value.details()


def test_triton_priority_and_timeout_parameters_are_understood(v2_stub) -> None:
    message = request(["fine"])
    message.parameters["priority"].uint64_param = 1
    message.parameters["timeout"].int64_param = 5_000_000
    assert labels_from_raw(v2_stub.ModelInfer(message).raw_output_contents[0])
    message.parameters["timeout"].int64_param = 1  # one microsecond: over before the batch runs
    with pytest.raises(grpc.RpcError) as caught:
        v2_stub.ModelInfer(message)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_tritonclient_calls_every_rpc(server: RunningServer, stub) -> None:
    got = tritonclient_run("triton_calls.py", server)
    expected = stub.Predict(pb.PredictRequest(texts=TEXTS)).predictions
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["server_metadata"]["name"] == "sentiment-service"
    assert got["model_metadata"]["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    assert got["labels"] == [p.label for p in expected] and got["id"] == "r1"
    np.testing.assert_allclose(got["probabilities"], [list(p.probabilities) for p in expected], atol=1e-5)
    summary = stub.Predict(pb.PredictRequest(texts=TEXTS, attention=pb.ATTENTION_MODE_SUMMARY)).predictions
    for row, prediction in enumerate(summary):
        n = prediction.num_tokens
        assert got["num_tokens"][row] == n and got["tokens"][row][:n] == list(prediction.attention.tokens)
        np.testing.assert_allclose(got["rollout"][row][:n], prediction.attention.rollout, atol=1e-6)
    assert got["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert got["classes"] == [
        [f"{max(p.probabilities):f}:{list(p.probabilities).index(max(p.probabilities))}:{p.label}"]
        for p in expected
    ]


def test_tritonclient_streams_inference(server: RunningServer, stub) -> None:
    got = tritonclient_run("triton_stream.py", server)
    expected = stub.Predict(pb.PredictRequest(texts=TEXTS)).predictions
    # every request answered on the one stream, matched by its id; a bad one reported, the rest go on
    assert got["labels"] == {f"r{i}": p.label for i, p in enumerate(expected)}
    assert len(got["errors"]) == 1 and "attention='most'" in got["errors"][0]


def test_v2_calls_share_the_metrics_under_their_own_method(v2_stub, server: RunningServer) -> None:
    v2_stub.ModelInfer(request(["counted"]))
    key = (
        "sentiment_requests_total",
        (("code", "OK"), ("method", "inference.GRPCInferenceService/ModelInfer"), ("protocol", "grpc")),
    )
    # the interceptor counts a call just after its answer leaves
    wait_until("the call counted", lambda: scrape(server).get(key, 0) >= 1)
