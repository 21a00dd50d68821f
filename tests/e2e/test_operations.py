"""Operating a real server: health, reflection, metrics, auth, TLS, start-up failures, SIGTERM drain."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import onnx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from onnx import TensorProto, helper

from model_contract import sha256_file
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import (
    PATIENCE_S,
    RunningServer,
    codes,
    eventually,
    launch,
    predict_all,
    scrape,
    wait_until,
)

SERVICE = "sentiment.v1.SentimentService"


def test_health_reports_serving_for_server_and_service(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_describes_the_api(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE, "grpc.health.v1.Health"} <= services
        descriptor = database.FindFileContainingSymbol(SERVICE)
        assert descriptor.package == "sentiment.v1"
        assert [m.name for m in descriptor.service[0].method] == ["Predict", "PredictStream", "GetModelInfo"]


def test_metrics_move_with_real_calls(server: RunningServer, stub) -> None:
    predict = (("code", "OK"), ("method", f"{SERVICE}/Predict"), ("protocol", "grpc"))
    invalid = (("code", "INVALID_ARGUMENT"), ("method", f"{SERVICE}/Predict"), ("protocol", "grpc"))
    before = scrape(server)
    for _ in range(3):
        stub.Predict(pb.PredictRequest(texts=["good film", "bad film", "fine"]))
    with pytest.raises(grpc.RpcError):
        stub.Predict(pb.PredictRequest())

    def with_the_refusal_counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        # the interceptor counts a call just after its answer leaves
        now = scrape(server)
        key = ("sentiment_requests_total", invalid)
        return now if now.get(key) == before.get(key, 0) + 1 else None

    after = wait_until("the refused call counted", with_the_refusal_counted)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert moved("sentiment_requests_total", predict) == 3
    assert moved("sentiment_requests_total", invalid) == 1
    assert moved("sentiment_texts_total") == 9
    assert moved("sentiment_tokens_total") >= 9 * 3
    assert 1 <= moved("sentiment_batch_size_count") <= 9
    assert moved("sentiment_batch_size_sum") == 9
    assert moved("sentiment_queue_wait_seconds_count", (("priority", "normal"),)) == 9
    assert (
        moved(
            "sentiment_request_duration_seconds_count",
            (("method", f"{SERVICE}/Predict"), ("protocol", "grpc")),
        )
        == 4
    )
    assert moved("sentiment_batch_padding_ratio_count") >= 1
    assert after[("sentiment_queue_depth", ())] == 0
    info = [key for key in after if key[0] == "sentiment_model_info"]
    assert info and ("version", "1") in info[0][1]


def test_start_up_fails_clearly_on_a_bad_model_directory(model_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_root, corrupt)
    onnx_path = corrupt / "1" / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:-20] + b"\0" * 20)
    wrong = tmp_path / "wrong"
    shutil.copytree(model_root, wrong)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["out"])],
        "g",
        [helper.make_tensor_value_info("text", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), wrong / "1" / "model.onnx"
    )
    config = json.loads((wrong / "1" / "config.json").read_text())
    config["sha256"]["model.onnx"] = sha256_file(wrong / "1" / "model.onnx")
    (wrong / "1" / "config.json").write_text(json.dumps(config))
    for root, message in (
        (empty, "holds no model versions"),
        (corrupt, "sha256"),
        (wrong, "breaks the model contract"),
        (tmp_path / "absent", "no model versions"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "--model-dir",
                str(root),
                "--port",
                "0",
                "--metrics-port",
                "-1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_bearer_token_guards_everything_but_health(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, env={"SENTIMENT_AUTH_TOKEN": "s3cret"})
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            request = pb.PredictRequest(texts=["hello"])
            for metadata, fragment in (
                (None, "needs `authorization"),
                ((("authorization", "Bearer nope"),), "wrong"),
                ((("authorization", "Basic czNjcmV0"),), "must be `Bearer <token>`"),
                # two headers are refused even when one of them is right
                ((("authorization", "Bearer s3cret"), ("authorization", "Bearer nope")), "2 authorization"),
                ((("authorization", "Bearer nope"), ("authorization", "Bearer s3cret")), "2 authorization"),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Predict(request, metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert fragment in caught.value.details()
            assert stub.Predict(request, metadata=(("authorization", "Bearer s3cret"),)).predictions
            # the scheme is case-insensitive (RFC 6750)
            assert stub.Predict(request, metadata=(("authorization", "bearer s3cret"),)).predictions
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # KServe's liveness and readiness probes are open like grpc.health; model calls are not
            v2_stub = v2_grpc.GRPCInferenceServiceStub(channel)
            assert v2_stub.ServerLive(v2.ServerLiveRequest()).live
            assert v2_stub.ServerReady(v2.ServerReadyRequest()).ready
            with pytest.raises(grpc.RpcError) as caught:
                v2_stub.ModelMetadata(v2.ModelMetadataRequest(name="sentiment"))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert running.stop() == 0


def test_tls_and_mutual_tls(model_root: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    running = launch(
        model_root,
        tmp_path,
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-client-ca-file",
        str(cert),
    )
    try:
        target = f"localhost:{running.port}"
        request = pb.PredictRequest(texts=["secure"])
        with_client_cert = grpc.ssl_channel_credentials(
            cert.read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        with grpc.secure_channel(target, with_client_cert) as channel:
            assert sentiment_pb2_grpc.SentimentServiceStub(channel).Predict(request, timeout=10).predictions
        without = grpc.ssl_channel_credentials(cert.read_bytes())
        with grpc.secure_channel(target, without) as channel, pytest.raises(grpc.RpcError) as caught:
            sentiment_pb2_grpc.SentimentServiceStub(channel).Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError):
            sentiment_pb2_grpc.SentimentServiceStub(channel).Predict(request, timeout=5)
        # the HTTP port: the same certificate, and the same demand for a client certificate
        body, headers = json.dumps({"texts": ["secure"]}), {"Content-Type": "application/json"}
        context = ssl.create_default_context(cafile=str(cert))
        context.load_cert_chain(str(cert), str(key))
        https = http.client.HTTPSConnection("localhost", running.http_port, timeout=10, context=context)
        https.request("POST", "/v1/predict", body=body, headers=headers)
        assert json.loads(https.getresponse().read())["predictions"]
        https.close()
        no_client_cert = ssl.create_default_context(cafile=str(cert))
        https = http.client.HTTPSConnection(
            "localhost", running.http_port, timeout=10, context=no_client_cert
        )
        plain = http.client.HTTPConnection("localhost", running.http_port, timeout=10)
        try:  # closed whatever happens: a socket left to the collector warns in a later test
            with pytest.raises((ssl.SSLError, ConnectionError)):
                https.request("POST", "/v1/predict", body=body, headers=headers)
                https.getresponse().read()
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                plain.request("POST", "/v1/predict", body=body, headers=headers)
                plain.getresponse().read()
        finally:
            https.close()
            plain.close()
    finally:
        assert running.stop() == 0


async def test_sigterm_under_load_loses_no_accepted_request(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--max-concurrent-batches", "1", "--grace-period-s", "60")
    texts = [f"review number {i} was rather good, though long in places" for i in range(64)]
    seen: list[grpc.StatusCode] = []
    health_updates: list[int] = []
    watching = threading.Event()

    def watch_health() -> None:
        with grpc.insecure_channel(running.target) as channel:
            try:
                for update in health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=SERVICE)
                ):
                    health_updates.append(update.status)
                    watching.set()
            except grpc.RpcError:
                pass

    watcher = threading.Thread(target=watch_health, daemon=True)
    try:
        watcher.start()
        assert watching.wait(PATIENCE_S)
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

            async def caller() -> None:
                for _ in range(200):  # bounded: stops by itself
                    try:
                        response = await stub.Predict(pb.PredictRequest(texts=texts), timeout=PATIENCE_S)
                        assert len(response.predictions) == len(texts)
                        seen.append(grpc.StatusCode.OK)
                    except grpc.RpcError as err:
                        seen.append(err.code())
                        if err.code() == grpc.StatusCode.UNAVAILABLE:
                            return

            callers = [asyncio.create_task(caller()) for _ in range(16)]
            # the signal comes once calls are flowing
            await eventually("32 calls answered", lambda: seen.count(grpc.StatusCode.OK) >= 32)
            running.process.send_signal(signal.SIGTERM)
            await asyncio.gather(*callers)
        exit_code = await asyncio.to_thread(running.process.wait, PATIENCE_S)
    finally:
        running.stop()
        watcher.join(PATIENCE_S)
    assert exit_code == 0, running.log()
    answered = json.loads(running.log().split("calls answered: ")[1].splitlines()[0])[f"{SERVICE}/Predict"]
    # every call the server took in was answered OK or refused UNAVAILABLE, none cut off or failed
    assert set(answered) <= {"OK", "UNAVAILABLE"}, answered
    assert answered["OK"] == seen.count(grpc.StatusCode.OK) >= 32
    # the rest never reached the service: refused, or dropped by the transport as it closed
    assert set(seen) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert health_pb2.HealthCheckResponse.NOT_SERVING in health_updates, health_updates
    assert "signal received: draining" in running.log()


async def test_full_queue_answers_resource_exhausted_and_loses_nothing_accepted(
    model_root: Path, tmp_path: Path
) -> None:
    running = launch(
        model_root,
        tmp_path,
        "--max-queue-size",
        "8",
        "--max-texts-per-request",
        "8",
        "--max-concurrent-batches",
        "1",
        "--max-batch-size",
        "4",
    )
    try:
        texts = [f"a fairly long sentence number {i} to keep the model busy for a while" for i in range(4)]
        outcomes = await predict_all(running.target, [pb.PredictRequest(texts=texts)] * 60)
        refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        answered = [o for o in outcomes if not isinstance(o, BaseException)]
        assert refused and answered
        assert set(codes(outcomes)) == {"OK", "RESOURCE_EXHAUSTED"}
        assert "the limit is 8" in refused[0].details()
        assert all(len(a.predictions) == 4 for a in answered)
        dropped = scrape(running)[("sentiment_dropped_texts_total", (("reason", "queue_full"),))]
        assert dropped == 4 * len(refused)
    finally:
        assert running.stop() == 0


def test_sigterm_closes_open_streams_promptly_with_unavailable(model_root: Path, tmp_path: Path) -> None:
    # a grace period far longer than the test waits: the stream must be told at once, not when it ends
    running = launch(model_root, tmp_path, "--grace-period-s", "3600")
    requests: queue.Queue[pb.PredictStreamRequest | None] = queue.Queue()

    def stream_requests():
        while (message := requests.get(timeout=PATIENCE_S)) is not None:
            yield message

    try:
        with grpc.insecure_channel(running.target) as channel:
            responses = sentiment_pb2_grpc.SentimentServiceStub(channel).PredictStream(
                stream_requests(), timeout=PATIENCE_S
            )
            first = pb.PredictStreamRequest(request_id="a", request=pb.PredictRequest(texts=["fine"]))
            requests.put(first)
            assert next(responses).request_id == "a"
            running.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as caught:
                next(responses)  # UNAVAILABLE, not DEADLINE_EXCEEDED: told before the call's deadline
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "send the others again on a new stream" in caught.value.details()
            requests.put(None)
        assert running.process.wait(PATIENCE_S) == 0
    finally:
        requests.put(None)
        running.stop()


def test_drain_delay_keeps_answering_while_health_says_not_serving(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--drain-delay-s", "5")
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            running.process.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # told as it happens
            watch.cancel()
            # answered, not refused UNAVAILABLE as calls are once the delay is over
            assert stub.Predict(pb.PredictRequest(texts=["still answered"]), timeout=PATIENCE_S).predictions
        assert running.process.wait(PATIENCE_S) == 0
    finally:
        running.stop()
    assert "still answering for 5.0 s" in running.log()
