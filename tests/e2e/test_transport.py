"""Transport limits: half-open and surplus connections are closed, oversized metadata is refused,
and the metrics endpoint can ask for the token."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.half_open import closes
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import PATIENCE_S, RunningServer, launch, scrape, wait_until

HALF_OPEN = 500


def predict(target: str, metadata: tuple[tuple[str, str], ...] = ()) -> pb.PredictResponse:
    with grpc.insecure_channel(target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        response: pb.PredictResponse = stub.Predict(
            pb.PredictRequest(texts=["a fine film"]), timeout=PATIENCE_S, metadata=metadata
        )
        return response


def served(target: str) -> bool:
    """Whether a call on a new connection is answered; False when the server refuses it."""
    try:
        return bool(predict(target).predictions)
    except grpc.RpcError as err:
        if err.code() is grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
            return False
        raise


def half_open(server: RunningServer, count: int, stack: ExitStack) -> list[socket.socket]:
    """`count` TCP connections that never send the HTTP/2 preface."""
    sockets = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE_S))
        sockets.append(sock)
    return sockets


def closed_by_server(sockets: list[socket.socket], timeout_s: float) -> int:
    """How many of the sockets the server closed (their read ends) within timeout_s."""
    return len(closes(sockets, timeout_s))


@pytest.fixture
def limited(model_root: Path, tmp_path: Path) -> Iterator[RunningServer]:
    running = launch(
        model_root,
        tmp_path,
        "--handshake-timeout-s",
        "1",
        "--max-connections",
        str(HALF_OPEN + 10),
        "--max-metadata-bytes",
        "2048",
    )
    yield running
    assert running.stop() == 0, running.log()


def test_half_open_connections_are_closed_while_callers_are_served(limited: RunningServer) -> None:
    with ExitStack() as stack:
        sockets = half_open(limited, HALF_OPEN, stack)
        assert predict(limited.target).predictions  # a normal caller is served meanwhile
        # each is closed once the handshake timeout (1 s) has passed; the bound only catches a hang
        assert closed_by_server(sockets, PATIENCE_S) == HALF_OPEN
        assert predict(limited.target).predictions


def test_connections_beyond_the_limit_are_refused_until_one_closes(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--max-connections", "4", "--handshake-timeout-s", "60")
    try:
        with ExitStack() as stack:
            held = half_open(running, 4, stack)
            with pytest.raises(grpc.RpcError) as refused:
                predict(running.target)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            for sock in held:
                sock.close()
        # the server notices the closes on its own time: until then a new connection is still refused
        wait_until("a connection accepted once the held ones closed", lambda: served(running.target))
    finally:
        assert running.stop() == 0, running.log()


def metric(server: RunningServer, name: str, **labels: str) -> float:
    return scrape(server).get((name, tuple(sorted(labels.items()))), 0.0)


def answered(server: RunningServer) -> float:
    return sum(
        v
        for (name, labels), v in scrape(server).items()
        if name == "sentiment_requests_total" and ("protocol", "grpc") in labels
    )


def test_metadata_beyond_the_limit_is_refused_and_counted(limited: RunningServer) -> None:
    assert predict(limited.target, (("x-small", "y" * 100),)).predictions
    with pytest.raises(grpc.RpcError) as refused:
        predict(limited.target, (("x-large", "y" * 8192),))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    # the refused call never reached the service's code, only the transport's count (polled each second)
    wait_until(
        "the transport's count of failed calls",
        lambda: metric(limited, "sentiment_transport_calls_total", outcome="failed") >= 1,
    )
    started = metric(limited, "sentiment_transport_calls_total", outcome="started")
    assert started - answered(limited) == 1


def test_idle_connections_are_closed_and_open_ones_are_shown(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--idle-timeout-s", "1", "--max-connections", "7")
    try:
        assert metric(running, "sentiment_connections_limit") == 7
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=PATIENCE_S
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            # a call in progress keeps the connection from being idle however long the gauge takes
            wait_until(
                "the open connection in the gauge", lambda: metric(running, "sentiment_connections") == 1
            )
            watch.cancel()
            # no call for longer than the idle timeout: the server closes it (GOAWAY) by itself
            wait_until("the idle connection closed", lambda: metric(running, "sentiment_connections") == 0)
            assert stub.Predict(pb.PredictRequest(texts=["fine"]), timeout=PATIENCE_S).predictions
    finally:
        assert running.stop() == 0, running.log()


def test_the_metrics_endpoint_can_ask_for_the_token(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--auth-token", "s3cret", "--metrics-auth")
    url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=PATIENCE_S)
        assert refused.value.code == 401
        assert b"Bearer" in refused.value.read()
        refused.value.close()
        wrong = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=PATIENCE_S)
        assert refused.value.code == 401
        refused.value.close()
        right = urllib.request.Request(url, headers={"Authorization": "bearer s3cret"})
        with urllib.request.urlopen(right, timeout=PATIENCE_S) as answer:
            body = answer.read().decode()
        assert "sentiment_requests_total" in body or "sentiment_queue_capacity" in body
    finally:
        assert running.stop() == 0, running.log()
