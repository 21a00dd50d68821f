"""Ceiling for any gRPC server here: grpc.aio answering Predict and KServe v2 ModelInfer with a
constant, no model at all."""

from __future__ import annotations

import argparse
import asyncio

import grpc

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc


class Constant(sentiment_pb2_grpc.SentimentServiceServicer):
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        prediction = pb.Prediction(label="positive", score=0.9, probabilities=[0.1, 0.9], num_tokens=12)
        return pb.PredictResponse(predictions=[prediction] * len(request.texts), model_name="sentiment")


class ConstantV2(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelInferResponse:
        count = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        response = v2.ModelInferResponse(model_name=request.model_name, model_version="1")
        label = response.outputs.add(name="label", datatype="BYTES", shape=[count])
        label.contents.bytes_contents.extend([b"positive"] * count)
        probabilities = response.outputs.add(name="probabilities", datatype="FP32", shape=[count, 2])
        probabilities.contents.fp32_contents.extend([0.1, 0.9] * count)
        return response


async def serve(port: int) -> None:
    server = grpc.aio.server()
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(Constant(), server)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(ConstantV2(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"READY port={bound} metrics_port=None", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
