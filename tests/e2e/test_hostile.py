"""Hostile input, generated: whatever arrives on either API, over gRPC or HTTP, gets a well-formed
answer or the right status with a message that names the problem; never INTERNAL or UNKNOWN (over
HTTP: never a 5xx). Afterwards the server still
answers a known text as before and its resident memory has not jumped.

Seeded (derandomize) with a bounded number of examples; `pytest --slow` runs many more.
"""

from __future__ import annotations

import http.client
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import RunningServer, launch

BAD_INPUT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
KNOWN = "a warm, funny and moving film"
MAX_MESSAGE = 4 << 20

# every kind of character a caller may send: controls and NUL, zero-width and direction marks,
# right-to-left scripts, combining marks, emoji and other astral characters, lone letters
HOSTILE_CHARS = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["\x00", "\u200b", "\u200d", "\u202e", "\ufeff", "\u0301", "\U0001f600", "\U0001f1fa"]),
    st.characters(min_codepoint=0x0590, max_codepoint=0x06FF),  # Hebrew, Arabic
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn"]),
)
TEXT = st.one_of(
    st.text(HOSTILE_CHARS, max_size=300),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "😀", "\x00", "é ", "word "]), st.integers(1, 25_000)
    ),
    st.just("x" * (1 << 20)),  # a 1 MB string
)
TEXTS = st.one_of(
    st.lists(TEXT, max_size=8),
    st.builds(lambda t, n: [t] * n, st.sampled_from(["a", "ok then", "\u200b"]), st.integers(200, 3000)),
)
RANDOM_BYTES = st.binary(max_size=2000)

outcomes: Counter[str] = Counter()


def slow_settings(examples: int):
    return settings(
        max_examples=examples * (10 if os.environ.get("SENTIMENT_SLOW_TESTS") else 1),
        derandomize=True,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def hostile_server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = launch(model_root, tmp_path_factory.mktemp("hostile"), "--max-message-bytes", str(MAX_MESSAGE))
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
def channel(hostile_server: RunningServer) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(hostile_server.target, options=options) as opened:
        yield opened


@pytest.fixture(scope="module")
def before(hostile_server: RunningServer, channel: grpc.Channel) -> tuple[pb.PredictResponse, int]:
    """The known text's answer and the resident memory, once the server is warm."""
    stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
    for _ in range(20):
        stub.Predict(pb.PredictRequest(texts=[KNOWN] * 32), timeout=30)
    return stub.Predict(pb.PredictRequest(texts=[KNOWN]), timeout=30), rss_kib(hostile_server.process.pid)


def judge(call, kind: str) -> object | None:
    """Make the call; a refusal must carry a bad-input status and a message. Returns the answer or None."""
    try:
        answer = call()
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
        assert code in BAD_INPUT, f"{kind}: {code.name} {details!r}"
        assert len(details) > 10, f"{kind}: {code.name} without a message a person understands"
        outcomes[f"{kind} {code.name}"] += 1
        return None
    outcomes[f"{kind} OK"] += 1
    return answer


@pytest.mark.usefixtures("before")
@slow_settings(60)
@given(
    texts=TEXTS,
    attention=st.integers(-3, 5),
    version=st.sampled_from([0, 0, 0, 1, 1, 2, -1, 1 << 40]),
    priority=st.integers(-2, 5),
    long_texts=st.integers(-2, 4),
    explain=st.integers(-2, 5),
)
def test_sentiment_v1_predict_survives_anything(
    channel, texts, attention, version, priority, long_texts, explain
) -> None:
    stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
    request = pb.PredictRequest(
        texts=texts,
        attention=attention,
        model_version=version,
        priority=priority,
        long_texts=long_texts,
        explain=explain,
    )  # type: ignore[arg-type]
    answer = judge(lambda: stub.Predict(request, timeout=60), "v1")
    if answer is not None:
        assert isinstance(answer, pb.PredictResponse)
        assert len(answer.predictions) == len(texts)
        for prediction in answer.predictions:
            assert prediction.label in ("negative", "positive")
            assert abs(sum(prediction.probabilities) - 1) < 1e-4
            if explain in (pb.EXPLAIN_MODE_SHAPLEY, pb.EXPLAIN_MODE_OCCLUSION):
                assert all(-1 <= w.contribution <= 1 for w in prediction.explanation.words)


def bytes_input(draw: st.DrawFn) -> tuple[v2.ModelInferRequest.InferInputTensor, list[bytes]]:
    """A BYTES input whose contents are typed, raw (lengths may lie) or of the wrong kind."""
    elements = draw(st.lists(st.one_of(RANDOM_BYTES, TEXT.map(str.encode)), max_size=6))
    shape = draw(st.one_of(st.just([len(elements)]), st.lists(st.integers(-2, 1 << 33), max_size=3)))
    tensor = v2.ModelInferRequest.InferInputTensor(
        name=draw(st.sampled_from(["text"] * 6 + ["TEXT", "", "\x00", "input_ids"])),
        datatype=draw(st.sampled_from(["BYTES"] * 6 + ["FP32", "INT64", "STRING", ""])),
        shape=shape,
    )
    raw: list[bytes] = []
    how = draw(st.sampled_from(["typed", "typed", "raw", "raw", "lying raw", "fp32", "none"]))
    if how == "typed":
        tensor.contents.bytes_contents.extend(elements)
    elif how == "raw":
        raw.append(b"".join(len(e).to_bytes(4, "little") + e for e in elements))
    elif how == "lying raw":
        raw.append(draw(RANDOM_BYTES))
    elif how == "fp32":
        tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    return tensor, raw


PARAMETER = st.one_of(
    st.builds(
        lambda s: v2.InferParameter(string_param=s), st.sampled_from(["none", "summary", "full", "x", ""])
    ),
    st.builds(lambda b: v2.InferParameter(bool_param=b), st.booleans()),
    st.builds(lambda i: v2.InferParameter(int64_param=i), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.builds(lambda d: v2.InferParameter(double_param=d), st.floats()),
    st.just(v2.InferParameter()),
)


@st.composite
def infer_requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    if draw(st.booleans()):  # well-formed, hostile only in its texts: the answer must be right
        texts = [t.encode() for t in draw(TEXTS)]
        tensor = v2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[len(texts)])
        request = v2.ModelInferRequest(model_name="sentiment", inputs=[tensor])
        if draw(st.booleans()):
            tensor.contents.bytes_contents.extend(texts)
        else:
            request.raw_input_contents.append(b"".join(len(t).to_bytes(4, "little") + t for t in texts))
        mode = draw(st.sampled_from(["none", "summary", "full"]))
        request.parameters["attention"].string_param = mode
        if draw(st.booleans()):
            request.parameters["explain"].string_param = draw(
                st.sampled_from(["shapley", "occlusion", "none"])
            )
        return request
    request = v2.ModelInferRequest(
        model_name=draw(st.sampled_from(["sentiment"] * 8 + ["", "other", "\x00"])),
        model_version=draw(st.sampled_from([""] * 5 + ["1"] * 3 + ["2", "-1", "one"])),
    )
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2]))):
        tensor, raw = bytes_input(draw)
        request.inputs.append(tensor)
        request.raw_input_contents.extend(raw)
    names = st.sampled_from(
        ["attention", "timeout", "typed_output", "priority", "explain", "unknown", "sequence_id"]
    )
    for name, value in draw(st.dictionaries(names, PARAMETER, max_size=2)).items():
        request.parameters[name].CopyFrom(value)
    wanted = st.sampled_from(
        ["label", "probabilities", "rollout", "attention_weights", "contributions", "words", "nope", ""]
    )
    for name in draw(st.lists(wanted, max_size=3)):
        request.outputs.add(name=name)
    return request


@pytest.mark.usefixtures("before")
@slow_settings(80)
@given(request=infer_requests())
def test_kserve_v2_model_infer_survives_anything(channel, request) -> None:
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    answer = judge(lambda: stub.ModelInfer(request, timeout=60), "v2")
    if answer is not None:
        assert isinstance(answer, v2.ModelInferResponse)
        assert answer.outputs and answer.model_name == "sentiment"


@pytest.mark.usefixtures("before")
@slow_settings(40)
@given(garbage=RANDOM_BYTES)
def test_garbage_bytes_as_the_whole_message(channel, garbage) -> None:
    for method in ("/sentiment.v1.SentimentService/Predict", "/inference.GRPCInferenceService/ModelInfer"):
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        judge(lambda call=call: call(garbage, timeout=30), "garbage")


# bad input; and 429 (queue full) and 504 (a `timeout` parameter the caller set too short), as
# RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED would be over gRPC
HTTP_REFUSALS = {400, 404, 413, 415, 429, 504}
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(HOSTILE_CHARS, max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=24,
)
V1_KEYS = st.sampled_from(
    ["texts", "attention", "modelVersion", "model_version", "priority", "longTexts", "explain", "x", ""]
)
# the classify APIs of other servers (vLLM, Infinity, text-embeddings-inference, the Inference API)
CLASSIFY_PATHS = st.sampled_from(["/v1/classify", "/classify", "/predict", "/", "/tokenize"])
CLASSIFY_KEYS = st.sampled_from([
    "input", "inputs", "model", "raw_scores", "truncate", "truncation_direction", "parameters", "priority",
    "truncate_prompt_tokens", "add_special_tokens", "x",
])  # fmt: skip
PRIORITY_HEADERS = st.sampled_from([None, "u=0", "u=7, i", "u=9", "u=", "nonsense", "u=3"])
V2_KEYS = st.sampled_from(["inputs", "outputs", "parameters", "id", "name", "data", "shape", "datatype"])


def tensor_json(draw: st.DrawFn) -> dict[str, object]:
    texts = draw(TEXTS)
    tensor: dict[str, object] = {
        "name": draw(st.sampled_from(["text"] * 4 + ["TEXT", ""])),
        "datatype": draw(st.sampled_from(["BYTES"] * 4 + ["FP32", ""])),
        "shape": draw(st.one_of(st.just([len(texts)]), st.lists(st.integers(-2, 1 << 40), max_size=3))),
    }
    if draw(st.booleans()):
        tensor["data"] = texts
    else:
        tensor["data"] = draw(JSON_VALUE)
    return tensor


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers): well-formed but hostile JSON, JSON of any shape, or any bytes."""
    json_type = {"Content-Type": "application/json"}
    kind = draw(st.sampled_from(["v1", "v1 any", "v2", "v2 any", "v2 binary", "classify", "bytes"]))
    priority = draw(PRIORITY_HEADERS)
    if priority is not None:
        json_type = {**json_type, "Priority": priority}
    if kind == "v1":
        attention = draw(st.sampled_from(["ATTENTION_MODE_SUMMARY", "ATTENTION_MODE_FULL", "MOST", 7, None]))
        body = {"texts": draw(TEXTS), "attention": attention}
        if draw(st.booleans()):
            body["explain"] = draw(
                st.sampled_from(["EXPLAIN_MODE_SHAPLEY", "EXPLAIN_MODE_OCCLUSION", "WHY", 9])
            )
        return "/v1/predict", json.dumps(body).encode(), json_type
    if kind == "classify":
        texts = draw(st.one_of(TEXTS, TEXT, st.lists(st.lists(TEXT, max_size=3), max_size=3)))
        body = {draw(st.sampled_from(["input", "inputs"])): texts}
        body.update(draw(st.dictionaries(CLASSIFY_KEYS, JSON_VALUE, max_size=3)))
        return draw(CLASSIFY_PATHS), json.dumps(body).encode(), json_type
    if kind == "v1 any":
        body = draw(st.one_of(JSON_VALUE, st.dictionaries(V1_KEYS, JSON_VALUE, max_size=3)))
        return "/v1/predict", json.dumps(body).encode(), json_type
    path = draw(
        st.sampled_from(["/v2/models/sentiment/infer"] * 4 + ["/v2/models/sentiment/versions/9/infer"])
    )
    if kind == "v2":
        body = {"inputs": [tensor_json(draw) for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2])))]}
        if draw(st.booleans()):
            body["parameters"] = draw(
                st.dictionaries(
                    st.sampled_from(["attention", "timeout", "priority", "long_texts", "explain", "x"]),
                    JSON_VALUE,
                )
            )
        return path, json.dumps(body).encode(), json_type
    if kind == "v2 any":
        body = draw(st.one_of(JSON_VALUE, st.dictionaries(V2_KEYS, JSON_VALUE, max_size=3)))
        return path, json.dumps(body).encode(), json_type
    if kind == "v2 binary":  # the binary extension, its lengths true or lying
        texts = [t.encode("utf-8", "surrogatepass") for t in draw(st.lists(TEXT, max_size=4))]
        raw = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
        size = draw(st.one_of(st.just(len(raw)), st.integers(-3, len(raw) + 10)))
        head = json.dumps(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)],
                         "parameters": {"binary_data_size": size}}]}
        ).encode()  # fmt: skip
        length = draw(st.one_of(st.just(len(head)), st.integers(-2, len(head) + len(raw) + 5)))
        return path, head + raw, {"Inference-Header-Content-Length": str(length)}
    return draw(st.sampled_from(["/v1/predict", path])), draw(RANDOM_BYTES), json_type


@pytest.mark.usefixtures("before")
@slow_settings(80)
@given(request=http_requests())
def test_http_endpoints_survive_anything(hostile_server, request) -> None:
    path, body, headers = request
    connection = http.client.HTTPConnection("127.0.0.1", hostile_server.http_port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        status, answer = response.status, response.read()
    finally:
        connection.close()
    kind = "http v1" if path == "/v1/predict" else "http v2" if path.startswith("/v2") else "http classify"
    outcomes[f"{kind} {status}"] += 1
    if status != 200:
        assert status in HTTP_REFUSALS, (status, answer[:300])
        error = json.loads(answer)["error"]
        message = error["message"] if isinstance(error, dict) else error  # OpenAI's shape nests it
        assert len(message) > 10, answer[:300]
        return
    parsed = json.loads(answer[: int(response.headers.get("Inference-Header-Content-Length") or len(answer))])
    if kind == "http classify":
        assert parsed  # an answer in the API's own shape: its contents are tested in test_classify_apis
    elif path == "/v1/predict":
        assert all(p["label"] in ("negative", "positive") for p in parsed["predictions"])
    else:
        assert parsed["model_name"] == "sentiment" and parsed["outputs"]


@pytest.mark.parametrize("count", [0, 5000])
def test_empty_and_thousands_of_texts_in_v2(channel, count) -> None:
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    tensor = v2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[count])
    tensor.contents.bytes_contents.extend([b"fine"] * count)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(v2.ModelInferRequest(model_name="sentiment", inputs=[tensor]), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert ("no texts" if count == 0 else "5000 texts") in (refused.value.details() or "")


def test_afterwards_the_server_answers_as_before_and_memory_held(hostile_server, channel, before) -> None:
    """Runs after the generated tests in this module (pytest keeps file order)."""
    answer, rss_before = before
    stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
    again = stub.Predict(pb.PredictRequest(texts=[KNOWN]), timeout=30)
    assert again.predictions[0].label == answer.predictions[0].label
    assert list(again.predictions[0].probabilities) == pytest.approx(
        list(answer.predictions[0].probabilities)
    )
    rss_after = rss_kib(hostile_server.process.pid)
    print(f"\nhostile inputs: {sum(outcomes.values())} calls {dict(sorted(outcomes.items()))}")
    print(f"server RSS: {rss_before / 1024:.0f} MiB after warm-up, {rss_after / 1024:.0f} MiB after")
    assert sum(outcomes.values()) >= 150, outcomes
    assert rss_after < rss_before + 150 * 1024, (rss_before, rss_after)
