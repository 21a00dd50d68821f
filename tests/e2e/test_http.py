"""The HTTP front door on a real server: KServe v2 over HTTP (tritonclient.http unmodified), the
service's own API in protobuf's JSON mapping, the OpenAPI document, the status table, the token, the
metrics, and hostile callers that never get past their own request."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from tests.e2e.conftest import PATIENCE_S, RunningServer, launch, scrape, wait_until

TEXTS = ["A wonderful, moving film.", "Dull and far too long.", "ok", "The best thing I have seen in years!"]
TOKEN = "s3cret-token"
JSON = {"Content-Type": "application/json"}
# an input whose binary_data_size claims more bytes than follow the JSON
LYING = json.dumps(
    {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 90}}]}
).encode()


def call(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on its own connection: status, headers (lower-case names), body."""
    if isinstance(body, dict):
        body, headers = json.dumps(body), {**JSON, **(headers or {})}
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=PATIENCE_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw_exchange(server: RunningServer, data: bytes, wait_s: float = 0.0) -> bytes:
    """Send `data` on a fresh socket (pausing wait_s first when it is given), and everything the
    server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=PATIENCE_S) as sock:
        if wait_s:
            time.sleep(wait_s)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while sending; what it said is still read below
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_line(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture(scope="module")
def strict(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a token and short limits, for the token and for hostile callers."""
    running = launch(
        model_root,
        tmp_path_factory.mktemp("strict"),
        "--auth-token", TOKEN,
        "--handshake-timeout-s", "1",
        "--http-read-timeout-s", "1",
        "--http-keepalive-timeout-s", "1",
        "--max-message-bytes", "65536",
        "--max-metadata-bytes", "4096",
    )  # fmt: skip
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()


def tritonclient_http(server: RunningServer, token: str = "-") -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("triton_http.py")), f"127.0.0.1:{server.http_port}",
         token, *TEXTS],
        capture_output=True, text=True, timeout=PATIENCE_S, check=True,
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_tritonclient_http_unmodified_binary_on_and_off(server: RunningServer, stub: Any) -> None:
    got = tritonclient_http(server)
    assert got["live"] and got["ready"] and got["model_ready"] and got["version_ready"]
    assert got["server_metadata"]["name"] == "sentiment-service"
    metadata = got["model_metadata"]
    assert metadata["name"] == "sentiment" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    grpc_answer = stub.Predict(pb.PredictRequest(texts=TEXTS), timeout=PATIENCE_S)
    expected = [p.label for p in grpc_answer.predictions]
    assert set(got["runs"]) == {f"in={i} out={o}" for i in (True, False) for o in (True, False)}
    for run in got["runs"].values():
        assert run["labels"] == expected and run["id"] == "r1"
        for row, prediction in zip(run["probabilities"], grpc_answer.predictions, strict=True):
            assert row == pytest.approx(list(prediction.probabilities), abs=1e-5)
    assert got["num_tokens"] == [p.num_tokens for p in grpc_answer.predictions]
    assert got["tokens"][0][0] == "[CLS]" and len(got["rollout"]) == len(TEXTS)
    assert got["weights_shape"][0] == len(TEXTS) and got["weights_shape"][3] == max(got["num_tokens"])
    assert got["unknown_model"][0] == "404" and "unknown model 'nope'" in got["unknown_model"][1]
    assert got["unknown_version"][0] == "404" and "version 7" in got["unknown_version"][1]
    assert got["unknown_parameter"][0] == "400" and "'x' is unknown" in got["unknown_parameter"][1]
    assert got["no_token"] is None  # this server has no token
    for binary_out in (True, False):
        classes = got[f"classes binary={binary_out}"]
        for row, prediction in zip(classes, grpc_answer.predictions, strict=True):
            assert len(row) == 2 and row[0].split(":")[2] == prediction.label
            assert float(row[0].split(":")[0]) >= float(row[1].split(":")[0])


def test_tritonclient_http_with_the_token(strict: RunningServer) -> None:
    got = tritonclient_http(strict, TOKEN)
    assert got["live"] and got["ready"]  # probes need no token
    assert all(run["labels"] for run in got["runs"].values())
    assert got["no_token"][0] == "401" and "Bearer" in got["no_token"][1]
    status, headers, body = call(strict, "POST", "/v1/predict", {"texts": ["fine"]})
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["code"] == "UNAUTHENTICATED"
    wrong = {"Authorization": "Bearer not-it"}
    assert call(strict, "POST", "/v1/predict", {"texts": ["fine"]}, wrong)[0] == 401
    right = {"Authorization": f"bearer {TOKEN}"}
    assert call(strict, "POST", "/v1/predict", {"texts": ["fine"]}, right)[0] == 200
    assert call(strict, "GET", "/v2/health/ready")[0] == 200
    assert call(strict, "GET", "/")[0] == 200  # the page asks for the token itself


def test_v1_predict_is_the_grpc_answer_in_json(server: RunningServer, stub: Any) -> None:
    request = {"texts": TEXTS[:2], "attention": "ATTENTION_MODE_FULL"}
    status, headers, body = call(server, "POST", "/v1/predict", request)
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    grpc_answer = stub.Predict(
        pb.PredictRequest(texts=TEXTS[:2], attention=pb.ATTENTION_MODE_FULL), timeout=PATIENCE_S
    )
    assert answer["modelName"] == "sentiment" and answer["modelVersion"] == str(grpc_answer.model_version)
    for got, want in zip(answer["predictions"], grpc_answer.predictions, strict=True):
        assert got["label"] == want.label and got["numTokens"] == want.num_tokens
        assert got["probabilities"] == pytest.approx(list(want.probabilities), abs=1e-5)
        assert got["attention"]["tokens"] == list(want.attention.tokens)
        assert len(got["attention"]["weights"]) == len(want.attention.weights)
        assert got["truncated"] is False  # fields at their default are written too
    # field names as in the .proto are accepted as well (protobuf's JSON mapping)
    status, _, body = call(server, "POST", "/v1/predict", {"texts": ["fine"], "model_version": "1"})
    assert status == 200 and json.loads(body)["predictions"][0]["label"]


def test_kserve_json_outputs_named_switch_on_the_attention_that_makes_them(server: RunningServer) -> None:
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a fine film"]}],
        "outputs": [{"name": "label"}, {"name": "tokens"}, {"name": "num_tokens"}],
    }
    status, _, answer = call(server, "POST", "/v2/models/sentiment/infer", body)
    assert status == 200, answer
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    assert list(outputs) == ["label", "tokens", "num_tokens"]
    assert outputs["num_tokens"]["data"] == [len(outputs["tokens"]["data"])]


def test_v1_model_info_and_the_openapi_document(server: RunningServer) -> None:
    status, _, body = call(server, "GET", "/v1/model")
    info = json.loads(body)
    assert status == 200 and info["name"] == "sentiment" and info["maxTextsPerRequest"] > 0
    assert call(server, "GET", "/v1/model?model_version=9")[0] == 404
    assert call(server, "GET", "/v1/model?model_version=x")[0] == 400
    status, _, body = call(server, "GET", "/openapi.json")
    document = json.loads(body)
    validate(document)  # raises on any breach of the OpenAPI 3.1 schema
    schemas = document["components"]["schemas"]
    # every field the server writes is in the document, and no more
    assert set(info) == set(schemas["sentiment.v1.GetModelInfoResponse"]["properties"])
    asked = {"texts": ["fine"], "attention": "ATTENTION_MODE_SUMMARY", "explain": "EXPLAIN_MODE_OCCLUSION"}
    _, _, body = call(server, "POST", "/v1/predict", asked)
    prediction = json.loads(body)["predictions"][0]
    assert set(prediction) == set(schemas["sentiment.v1.Prediction"]["properties"])
    assert set(prediction["attention"]) == set(schemas["sentiment.v1.Attention"]["properties"])
    assert set(prediction["explanation"]) == set(schemas["sentiment.v1.Explanation"]["properties"])
    word = prediction["explanation"]["words"][0]
    assert set(word) == set(schemas["sentiment.v1.WordContribution"]["properties"])
    served = {path for path in document["paths"]}
    assert {"/v1/predict", "/v1/predict/stream", "/v2/models/{name}/infer", "/v2/health/ready"} <= served


def test_v1_stream_answers_each_line_and_goes_on_after_a_bad_one(server: RunningServer) -> None:
    lines = [
        {"requestId": "a", "request": {"texts": ["Lovely"]}},
        "this line is not JSON",
        {"requestId": "c", "request": {"texts": []}},
        {"requestId": "d", "request": {"texts": ["Awful", "Fine"]}},
    ]
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    status, headers, answer = call(
        server, "POST", "/v1/predict/stream", body, {"Content-Type": "application/x-ndjson"}
    )
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    answers = [json.loads(line) for line in answer.decode().splitlines()]
    by_id = {a["requestId"]: a for a in answers if a["requestId"]}
    assert len(answers) == 4
    assert len(by_id["a"]["response"]["predictions"]) == 1
    assert len(by_id["d"]["response"]["predictions"]) == 2
    assert by_id["c"]["error"]["code"] == 3 and "no texts" in by_id["c"]["error"]["message"]
    malformed = [a for a in answers if not a["requestId"]]
    assert malformed and "not a valid sentiment.v1.PredictStreamRequest" in malformed[0]["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "says"),
    [
        ("POST", "/v1/predict", b'{"texts": [', JSON, 400, "not valid JSON"),
        ("POST", "/v1/predict", b"[1, 2]", JSON, 400, "must be a JSON object"),
        ("POST", "/v1/predict", b'{"txts": ["a"]}', JSON, 400, "txts"),
        ("POST", "/v1/predict", b'{"texts": ["\xff\xfe"]}', JSON, 400, "not UTF-8"),
        ("POST", "/v1/predict", b'{"texts": ["a"]}', {"Content-Type": "text/plain"}, 415, "text/plain"),
        ("POST", "/v1/predict", b'{"texts": ["a"]}', {**JSON, "Content-Encoding": "gzip"}, 415, "gzip"),
        ("POST", "/v1/predict", b"{}", {**JSON, "Content-Length": "99999999999"}, 413, "limit"),
        ("POST", "/v1/predict", b'{"texts": ["a"], "modelVersion": "4"}', JSON, 404, "version 4"),
        ("GET", "/v1/predict", None, {}, 405, "Method Not Allowed"),
        ("GET", "/v3/nothing", None, {}, 404, "Not Found"),
        ("POST", "/v2/models/sentiment/infer", b'{"inputs": [{"name": "text", "datatype": "BYTES",'
         b' "shape": [1], "data": ["a"]}], "parameters": {"timeout": 1}}', JSON, 504, "deadline"),
        ("POST", "/v2/models/sentiment/infer", LYING + b"\x05\x00\x00\x00hello",
         {"Inference-Header-Content-Length": str(len(LYING))}, 400, "says 90 bytes but only 9"),
        ("POST", "/v2/models/sentiment/infer", b'{"inputs": []}', {"Inference-Header-Content-Length": "500"},
         400, "no larger than the body"),
        ("POST", "/v2/models/sentiment/infer", b'{"inputs": [{"name": "text", "datatype": "BYTES",'
         b' "shape": [1], "data": [7]}]}', JSON, 400, "BYTES data must be strings"),
        ("POST", "/v2/models/sentiment/infer", b'{"inputs": [], "parameters": {"typed_output": true}}', JSON,
         400, "typed_output"),
        ("GET", "/v2/models/other", None, {}, 404, "unknown model 'other'"),
    ],
)  # fmt: skip
def test_every_failure_gets_its_status_and_a_message(
    server: RunningServer, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int,
    says: str,
) -> None:  # fmt: skip
    got, _, answer = call(server, method, path, body, headers)
    assert got == status, answer
    assert says in json.loads(answer)["error"]


def test_http_calls_are_counted_beside_grpc_ones(server: RunningServer) -> None:
    assert call(server, "POST", "/v1/predict", {"texts": ["counted"]})[0] == 200
    assert call(server, "POST", "/v1/predict", {"texts": []})[0] == 400
    samples = scrape(server)

    def count(method: str, code: str, protocol: str) -> float:
        key = ("sentiment_requests_total", (("code", code), ("method", method), ("protocol", protocol)))
        return samples.get(key, 0.0)

    predict = "sentiment.v1.SentimentService/Predict"
    assert count(predict, "OK", "http") >= 1 and count(predict, "INVALID_ARGUMENT", "http") >= 1
    assert count("inference.GRPCInferenceService/ModelInfer", "OK", "http") >= 1


def test_hostile_http_callers_get_a_4xx_and_hold_nothing(strict: RunningServer) -> None:
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    # headers over --max-metadata-bytes: 431, before any of it reaches the application
    huge = b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
    assert status_line(raw_exchange(strict, huge)) == 431
    # a head sent too slowly: 408 after --handshake-timeout-s, the connection closed
    started = time.monotonic()
    assert status_line(raw_exchange(strict, b"GET /v2 HTTP/1.1\r\nHost: x\r\n", wait_s=0.0)) == 408
    assert time.monotonic() - started < 30
    # a body that never arrives whole (Content-Length lies): 408 after --http-read-timeout-s
    short = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Type: application/json\r\n"
    short += b'Content-Length: 500\r\n\r\n{"texts": ["a"]'
    answer = raw_exchange(strict, short)
    assert status_line(answer) == 408 and b"did not arrive" in answer
    # a body larger than --max-message-bytes, declared or not: 413 before it is read whole
    chunked = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Type: application/json\r\n"
    chunked += (
        b"Transfer-Encoding: chunked\r\n\r\n" + (b"8000\r\n" + b"a" * 0x8000 + b"\r\n") * 3 + b"0\r\n\r\n"
    )
    assert b" 413 " in raw_exchange(strict, chunked)[:20]
    # not HTTP at all
    assert status_line(raw_exchange(strict, b"\x16\x03\x01\x02\x00binary garbage\r\n\r\n")) == 400
    # an idle keep-alive connection is closed after --http-keepalive-timeout-s
    connection = http.client.HTTPConnection("127.0.0.1", strict.http_port, timeout=PATIENCE_S)
    connection.request("GET", "/v2/health/live")
    assert connection.getresponse().read()
    time.sleep(2.5)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        connection.request("GET", "/v2/health/live")
        connection.getresponse()
    connection.close()
    # and the server answers as before
    status, _, body = call(
        strict, "POST", "/v1/predict", {"texts": TEXTS}, {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200 and len(json.loads(body)["predictions"]) == len(TEXTS)


def test_the_readme_curl_lines_work_as_written(server: RunningServer) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## Over HTTP", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) >= 4 and all("127.0.0.1:8080" in line for line in lines)
    for line in lines:
        command = line.replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}")
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=PATIENCE_S
        )
        assert result.returncode == 0, (line, result.stderr)
        answers = [json.loads(part) for part in result.stdout.splitlines()]
        assert answers, line
        if "/v1/predict" in line:
            labels = {p["label"] for a in answers for p in (a.get("response") or a)["predictions"]}
            assert labels <= {"negative", "positive"} and labels


def test_sigterm_drains_http_as_it_drains_grpc(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--drain-delay-s", "2")
    statuses: list[int | str] = []
    lock = threading.Lock()

    def caller() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", running.http_port, timeout=PATIENCE_S)
        body = json.dumps({"texts": TEXTS})
        try:
            for _ in range(400):  # bounded: stops by itself
                try:
                    connection.request("POST", "/v1/predict", body=body, headers=JSON)
                    response = connection.getresponse()
                    answer = response.read()
                except (ConnectionError, http.client.HTTPException) as err:
                    with lock:
                        statuses.append(type(err).__name__)  # closed before the request was taken in
                    return
                with lock:
                    statuses.append(response.status)
                if response.status == 200:
                    assert len(json.loads(answer)["predictions"]) == len(TEXTS)
                else:
                    assert response.status == 503 and json.loads(answer)["code"] == "UNAVAILABLE"
                    return
        finally:
            connection.close()

    try:
        callers = [threading.Thread(target=caller) for _ in range(8)]
        for thread in callers:
            thread.start()
        wait_until("32 calls answered", lambda: statuses.count(200) >= 32)
        running.process.send_signal(signal.SIGTERM)
        # during the drain delay readiness says no, and calls are still answered
        wait_until("readiness 503", lambda: call(running, "GET", "/v2/health/ready")[0] == 503)
        assert call(running, "POST", "/v1/predict", {"texts": ["still answered"]})[0] == 200
        for thread in callers:
            thread.join(PATIENCE_S)
        exit_code = running.process.wait(PATIENCE_S)
    finally:
        running.stop()
    assert exit_code == 0, running.log()
    answered = json.loads(running.log().split("calls answered: ")[1].splitlines()[0])
    predict = answered["sentiment.v1.SentimentService/Predict"]
    # every request the server took in was answered 200 or 503, none cut off
    assert set(predict) <= {"OK", "UNAVAILABLE"}, predict
    assert predict["OK"] == statuses.count(200) + 1 >= 33
    # the callers that were not told 503 found their connection closed as the server stopped
    assert len(statuses) - statuses.count(200) == 8, statuses
