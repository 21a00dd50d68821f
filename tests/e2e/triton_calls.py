"""Run by test_kserve.py in its own process: tritonclient registers its own `inference.*` protobuf
messages, so it cannot share a process with this project's generated v2 modules.

Usage: python triton_calls.py HOST:PORT TEXT... ; prints one JSON object with what it got.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def main() -> None:
    target, texts = sys.argv[1], sys.argv[2:]
    client = triton.InferenceServerClient(url=target)
    out: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("sentiment"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata("sentiment", as_json=True),
    }
    text = triton.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    outputs = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")]
    result = client.infer("sentiment", [text], outputs=outputs, request_id="r1")
    out["labels"] = [v.decode() for v in result.as_numpy("label").tolist()]
    out["probabilities"] = result.as_numpy("probabilities").tolist()
    out["id"] = result.get_response().id
    summary = client.infer("sentiment", [text], parameters={"attention": "summary"})
    out["num_tokens"] = summary.as_numpy("num_tokens").tolist()
    out["rollout"] = summary.as_numpy("rollout").tolist()
    out["tokens"] = [[t.decode() for t in row] for row in summary.as_numpy("tokens").tolist()]
    classes = [triton.InferRequestedOutput("probabilities", class_count=1)]
    top = client.infer("sentiment", [text], outputs=classes).as_numpy("probabilities")
    out["classes"] = [[cell.decode() for cell in row] for row in top.tolist()]
    try:
        client.infer("nope", [text])
    except InferenceServerException as err:
        out["unknown_model"] = [err.status(), err.message()]
    client.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
