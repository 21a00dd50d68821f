"""The HTTP transport's reading of answers, alone: an HTTP error as the gRPC status its body names
(else its status stands for), Retry-After honoured between attempts, a stream's error lines."""

from __future__ import annotations

import grpc
import httpx
import pytest

from sentiment_client import RetryPolicy, SentimentClient
from sentiment_client._http import HttpCallError, error_of, http_url, stream_answers, transport_error


def test_the_scheme_chooses_the_transport() -> None:
    assert http_url("http://host:8080/") == "http://host:8080"
    assert http_url("https://host") == "https://host"
    assert http_url("host:50051") is None


def test_an_error_answer_is_the_status_its_body_names_else_its_http_status() -> None:
    named = error_of(httpx.Response(400, json={"error": "text 0 is empty", "code": "INVALID_ARGUMENT"}))
    assert named.code() is grpc.StatusCode.INVALID_ARGUMENT and named.details() == "text 0 is empty"
    full = error_of(httpx.Response(429, json={"error": "queue full", "code": "RESOURCE_EXHAUSTED"},
                                   headers={"Retry-After": "3"}))  # fmt: skip
    assert full.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and full.retry_after == 3.0
    proxy = error_of(httpx.Response(502, text="<html>bad gateway</html>"))  # a proxy's, no JSON
    assert proxy.code() is grpc.StatusCode.UNAVAILABLE and proxy.retry_after is None
    assert transport_error(httpx.ConnectError("refused")).code() is grpc.StatusCode.UNAVAILABLE
    assert transport_error(httpx.ReadTimeout("slow")).code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_retry_after_is_honoured_else_the_policy_backs_off() -> None:
    with SentimentClient("http://127.0.0.1:9", retry=RetryPolicy(max_backoff_s=0.2)) as client:
        told = HttpCallError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", retry_after=3.0)
        assert client._backoff(told, 1) == 3.0
        assert client._backoff(HttpCallError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", 1e6), 1) == 60.0
        assert 0.0 <= client._backoff(HttpCallError(grpc.StatusCode.UNAVAILABLE, "down"), 4) <= 0.2


def test_a_stream_answer_line_per_request_and_a_line_that_ends_the_stream() -> None:
    lines = ['{"requestId": "0", "response": {"predictions": [{"label": "positive"}]}}',
             '{"requestId": "1", "error": {"code": 3, "message": "text 0 is empty"}}', ""]  # fmt: skip
    answers = stream_answers(lines)
    assert [a.request_id for a in answers] == ["0", "1"] and answers[1].error.code == 3
    with pytest.raises(HttpCallError) as ended:
        stream_answers([*lines, '{"error": "the server is draining", "code": "UNAVAILABLE"}'])
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
