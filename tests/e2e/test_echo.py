"""Errors never echo unbounded input: a megabyte name, version, parameter, datatype or output comes
back as the right status with a short message quoting only its start and its length."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import PATIENCE_S, RunningServer

HUGE = 2**20  # characters
MESSAGE_LIMIT = 400  # characters: the status message must fit a default client's metadata limit easily


def infer(**changes: object) -> v2.ModelInferRequest:
    """A valid ModelInfer request with one field replaced by a huge value."""
    message = v2.ModelInferRequest(model_name="sentiment")
    tensor = message.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"a fine film")
    for field, value in changes.items():
        if field == "input_name":
            tensor.name = str(value)
        elif field == "datatype":
            tensor.datatype = str(value)
        elif field == "output":
            message.outputs.add(name=str(value))
        elif field == "parameter":
            message.parameters[str(value)].string_param = "x"
        elif field == "attention":
            message.parameters["attention"].string_param = str(value)
        else:
            setattr(message, field, value)
    return message


def model_infer(**changes: object) -> Callable[[grpc.Channel], object]:
    """A ModelInfer call of infer(**changes)."""
    message = infer(**changes)
    return lambda c: v2_grpc.GRPCInferenceServiceStub(c).ModelInfer(message, timeout=PATIENCE_S)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", 64 * 2**20)]
    ) as opened:
        yield opened


NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
CASES: dict[str, tuple[Callable[[grpc.Channel], object], grpc.StatusCode]] = {
    "model name": (model_infer(model_name="m" * HUGE), NOT_FOUND),
    "model version digits": (model_infer(model_version="9" * HUGE), NOT_FOUND),
    "model version letters": (model_infer(model_version="v" * HUGE), NOT_FOUND),
    "parameter name": (model_infer(parameter="p" * HUGE), INVALID),
    "attention value": (model_infer(attention="a" * HUGE), INVALID),
    "datatype": (model_infer(datatype="D" * HUGE), INVALID),
    "input name": (model_infer(input_name="n" * HUGE), INVALID),
    "output name": (model_infer(output="o" * HUGE), INVALID),
    "metadata name": (
        lambda c: v2_grpc.GRPCInferenceServiceStub(c).ModelMetadata(
            v2.ModelMetadataRequest(name="m" * HUGE), timeout=PATIENCE_S
        ),
        NOT_FOUND,
    ),
    "text": (
        lambda c: sentiment_pb2_grpc.SentimentServiceStub(c).Predict(
            pb.PredictRequest(texts=["t" * HUGE]), timeout=PATIENCE_S
        ),
        INVALID,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_huge_value_gets_its_status_and_a_short_message(channel: grpc.Channel, case: str) -> None:
    call, expected = CASES[case]
    with pytest.raises(grpc.RpcError) as caught:
        call(channel)
    error = caught.value
    assert error.code() is expected, error.details()  # type: ignore[attr-defined]
    details = error.details()  # type: ignore[attr-defined]
    assert len(details) < MESSAGE_LIMIT, details[:MESSAGE_LIMIT]
    if case != "text":  # a text is never quoted at all; the others by their start and length
        assert f"({HUGE} characters)" in details, details
