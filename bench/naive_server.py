"""The naive peer: what an engineer writes in an afternoon instead of running a model server.

A synchronous grpcio server whose thread pool takes each KServe v2 ModelInfer as it comes, tokenizes
it, and runs ONNX Runtime once for that request alone: no queue, no batching across callers, one
session shared by every thread with ONNX Runtime's own defaults (a thread per core, threads that
spin-wait). It answers the same outputs as this server (label, probabilities) from the same
model.onnx and tokenizer.json. Prints `READY port=N` once it listens.
"""

from __future__ import annotations

import argparse
import json
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from model_contract import pad
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc


class Naive(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, version_dir: Path, model_file: str) -> None:
        config = json.loads((version_dir / "config.json").read_text())
        self.labels = config["labels"]
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(config["max_length"])
        self.session = ort.InferenceSession(str(version_dir / model_file), providers=["CPUExecutionProvider"])

    def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=True)

    def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2.ModelInferResponse:
        texts = [raw.decode() for raw in request.inputs[0].contents.bytes_contents]
        ids, mask = pad([e.ids for e in self.tokenizer.encode_batch(texts)])
        (logits,) = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        response = v2.ModelInferResponse(model_name=request.model_name, model_version="1")
        label = response.outputs.add(name="label", datatype="BYTES", shape=[len(texts)])
        label.contents.bytes_contents.extend(self.labels[i].encode() for i in probabilities.argmax(axis=1))
        out = response.outputs.add(name="probabilities", datatype="FP32", shape=list(probabilities.shape))
        out.contents.fp32_contents.extend(probabilities.ravel().tolist())
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-version-dir", type=Path, required=True)
    parser.add_argument("--model-file", default="model.onnx")
    parser.add_argument("--threads", type=int, default=8, help="the server's thread pool")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        Naive(args.model_version_dir, args.model_file), server
    )
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"READY port={port} metrics_port=None", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
