"""SentimentClient and AsyncSentimentClient against a real server on loopback: one behavioural suite,
run over each transport (gRPC at host:port, HTTP at http://host:port)."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import grpc
import pytest

from sentiment_client import (
    AsyncSentimentClient,
    Explain,
    InvalidInput,
    NotFound,
    RetryPolicy,
    SentimentClient,
    Unauthenticated,
    Unavailable,
)
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from tests.e2e.conftest import PATIENCE_S, RunningServer, launch, scrape, wait_until

TEXTS = [f"review {i}: " + ("a fine and moving film " * (i % 7 + 1)) for i in range(40)]


@pytest.fixture(params=["grpc", "http"])
def door(request: pytest.FixtureRequest) -> str:
    """The transport a test's clients use."""
    return str(request.param)


def address(server: RunningServer, door: str, host: str = "127.0.0.1") -> str:
    """The server's address as a client of `door` writes it."""
    return f"{host}:{server.port}" if door == "grpc" else f"http://{host}:{server.http_port}"


def nothing_at(door: str) -> str:
    """An address where nothing listens."""
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    return f"127.0.0.1:{port}" if door == "grpc" else f"http://127.0.0.1:{port}"


def test_predict_one_and_many_in_order(server: RunningServer, stub, door: str) -> None:
    expected = stub.Predict(pb.PredictRequest(texts=TEXTS)).predictions
    with SentimentClient(address(server, door)) as client:
        one = client.predict(TEXTS[0])
        many = client.predict(TEXTS)
        info = client.model_info()
    assert one.text == TEXTS[0] and one.label == expected[0].label
    assert [p.label for p in many] == [p.label for p in expected]
    assert list(many[3].probabilities) == list(info.labels) == ["negative", "positive"]
    assert many[3].probabilities[many[3].label] == pytest.approx(many[3].score)
    assert many[0].batch.batch_size >= 1 and many[0].batch.padded_length >= many[0].num_tokens


async def test_health_of_a_service_by_name_of_any_length(server: RunningServer, door: str) -> None:
    service = "sentiment.v1.SentimentService"
    with SentimentClient(address(server, door)) as client:
        assert client.health(service) == "SERVING"
        # a name of 128 bytes or more needs a two-byte length in the request: still understood
        with pytest.raises(NotFound):
            client.health("x" * 300)
    async with AsyncSentimentClient(address(server, door)) as client:
        assert await client.health(service) == "SERVING"
        with pytest.raises(NotFound):
            await client.health("y" * 200)


def test_large_inputs_are_chunked_to_the_server_limit(server: RunningServer, door: str) -> None:
    texts = [f"text number {i}" for i in range(600)]  # the server takes 256 per request
    with SentimentClient(address(server, door)) as client:
        results = client.predict(texts)
    assert [p.text for p in results] == texts


async def test_async_client_matches_blocking(server: RunningServer, door: str) -> None:
    with SentimentClient(address(server, door)) as client:
        expected = client.predict(TEXTS, attention="summary")
    async with AsyncSentimentClient(address(server, door)) as client:
        got = await client.predict(TEXTS, attention="summary")
        streamed = [p async for p in client.stream(iter(TEXTS), chunk_size=3, window=2)]
        assert await client.health() == "SERVING"
    assert [p.label for p in got] == [p.label for p in expected] == [p.label for p in streamed]
    assert got[5].attention is not None and got[5].attention.tokens == expected[5].attention.tokens


def test_attention_full_is_indexable(server: RunningServer, door: str) -> None:
    with SentimentClient(address(server, door)) as client:
        prediction = client.predict("the acting was brilliant", attention="full")
    attention = prediction.attention
    assert attention is not None and attention.num_layers >= 1
    n = len(attention.tokens)
    row = [attention.weight(0, 0, 0, k) for k in range(n)]
    assert sum(row) == pytest.approx(1.0, abs=1e-4)


async def test_explanations_are_the_same_through_both_clients(server: RunningServer, door: str) -> None:
    text = "The flight was delayed four hours and the staff were rude."
    with SentimentClient(address(server, door)) as client:
        explained = client.predict(text, explain="shapley")
        plain = client.predict(text)
        labels = client.model_info().labels
    async with AsyncSentimentClient(address(server, door)) as client:
        again = await client.predict([text], explain=Explain.SHAPLEY)
    why = explained.explanation
    assert plain.explanation is None and why is not None and why.method == "shapley"
    assert again[0].explanation == why  # the same numbers, whichever client and door
    assert [w.text for w in why.words] == [text[w.start : w.end] for w in why.words]
    assert sum(w.contribution for w in why.words) == pytest.approx(explained.score - why.baseline, abs=1e-4)
    other = next(label for label in labels if label != why.label)
    assert why.towards(other, labels) == tuple(-w.contribution for w in why.words)


def test_stream_keeps_order_and_bounded_memory(server: RunningServer, door: str) -> None:
    consumed = 0

    def texts():
        nonlocal consumed
        for i in range(400):
            consumed += 1
            yield f"line {i} of a long file, rather good"

    chunk, window = 5, 3
    with SentimentClient(address(server, door)) as client:
        for index, prediction in enumerate(client.stream(texts(), chunk_size=chunk, window=window)):
            assert prediction.text == f"line {index} of a long file, rather good"
            # backpressure: the input is read at most `window` requests ahead of the answers, plus
            # the rest of the answered chunk and the chunk being filled
            assert consumed <= index + 1 + (window + 2) * chunk
    assert index == 399


def test_errors_become_sdk_exceptions(server: RunningServer, door: str) -> None:
    with SentimentClient(address(server, door)) as client:
        with pytest.raises(InvalidInput, match="text 1 is empty"):
            client.predict(["fine", "   "])
        with pytest.raises(NotFound, match="version 9"):
            client.model_info(version=9)
    quick = RetryPolicy(max_attempts=2, initial_backoff_s=0.01)
    with SentimentClient(nothing_at(door), retry=quick, timeout_s=2) as client:
        with pytest.raises(Unavailable) as caught:
            client.model_info()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_invalid_input_is_never_retried(server: RunningServer, door: str) -> None:
    def count(code: str, method: str = "Predict") -> float:
        labels = (("code", code), ("method", f"sentiment.v1.SentimentService/{method}"), ("protocol", door))
        return scrape(server).get(("sentiment_requests_total", labels), 0)

    before = count("INVALID_ARGUMENT")
    with SentimentClient(address(server, door), retry=RetryPolicy(max_attempts=5)) as client:
        client.model_info()
        with pytest.raises(InvalidInput):
            client.predict("")
        # a call made after every attempt the client made: once it is counted, so are they (the
        # server counts each call just after its answer leaves)
        info_before = count("OK", "GetModelInfo")
        client.model_info()
    wait_until("the invalid call counted", lambda: count("INVALID_ARGUMENT") > before)
    wait_until("the call after it counted", lambda: count("OK", "GetModelInfo") > info_before)
    assert count("INVALID_ARGUMENT") - before == 1


def test_retries_until_a_late_server_comes_up(model_root: Path, tmp_path: Path, door: str) -> None:
    target = nothing_at(door)
    port = target.rsplit(":", 1)[1]
    refused = threading.Event()

    class Patient(RetryPolicy):
        """Retries for as long as a server on a busy machine may take to start (a bound on hangs)."""

        def should_retry(self, code: grpc.StatusCode | None, attempt: int) -> bool:
            refused.set()  # the first attempt found no server: now start one
            return super().should_retry(code, attempt)

    started: list[RunningServer] = []

    def start_once_refused() -> None:
        if refused.wait(PATIENCE_S):
            started.append(launch(model_root, tmp_path, "--port" if door == "grpc" else "--http-port", port))

    starter = threading.Thread(target=start_once_refused, daemon=True)
    starter.start()
    patient = Patient(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.5)
    try:
        with SentimentClient(target, retry=patient, timeout_s=PATIENCE_S) as client:
            assert client.predict("worth the wait").label in {"positive", "negative"}
    finally:
        refused.set()
        starter.join(2 * PATIENCE_S)
        assert started and started[0].stop() == 0


def test_token_and_mutual_tls_options(model_root: Path, tmp_path: Path, door: str) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )
    tls = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-client-ca-file", str(cert)]
    running = launch(model_root, tmp_path, "--auth-token", "t0ken", *tls)
    target = address(running, door, "localhost").replace("http://", "https://")
    secure = {"root_certificates": cert, "client_certificate": cert, "client_key": key}
    try:
        with SentimentClient(target, **secure) as client, pytest.raises(Unauthenticated):
            client.model_info()
        with SentimentClient(target, token="t0ken", **secure) as client:
            assert client.predict("hello").label
            assert client.health() == "SERVING"
        # the server wants a client certificate: without one the TLS handshake fails
        no_certificate = SentimentClient(
            target, token="t0ken", root_certificates=cert, retry=RetryPolicy(max_attempts=1)
        )
        with no_certificate as client, pytest.raises(Unavailable):
            client.predict("hello")
    finally:
        assert running.stop() == 0


def test_a_client_may_read_long_texts_whole(server: RunningServer, door: str) -> None:
    long = " ".join(f"part {n}: slow at first, then quite wonderful" for n in range(40))
    with SentimentClient(address(server, door)) as client:
        cut = client.predict(long)
    with SentimentClient(address(server, door), read_whole=True) as client:
        whole = client.predict(long)
    assert cut.truncated and cut.windows == 1
    assert not whole.truncated and whole.windows > 1 and whole.num_tokens > cut.num_tokens
