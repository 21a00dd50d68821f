"""Ceiling for any gRPC server here: grpc.aio answering Predict with a constant, no model at all."""

from __future__ import annotations

import argparse
import asyncio

import grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc


class Constant(sentiment_pb2_grpc.SentimentServiceServicer):
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        prediction = pb.Prediction(label="positive", score=0.9, probabilities=[0.1, 0.9], num_tokens=12)
        return pb.PredictResponse(predictions=[prediction] * len(request.texts), model_name="sentiment")


async def serve(port: int) -> None:
    server = grpc.aio.server()
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(Constant(), server)
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
