"""Run by test_kserve.py in its own process (tritonclient registers its own `inference.*` messages):
tritonclient's streaming API, unmodified, against this server.

Usage: python triton_stream.py HOST:PORT TEXT... ; prints one JSON object with what came back.
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as triton


def main() -> None:
    target, texts = sys.argv[1], sys.argv[2:]
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client = triton.InferenceServerClient(url=target)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for index, text in enumerate(texts):
        tensor = triton.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        client.async_stream_infer("sentiment", [tensor], request_id=f"r{index}")
    bad = triton.InferInput("text", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"fine"], dtype=np.object_))
    client.async_stream_infer("sentiment", [bad], request_id="bad", parameters={"attention": "most"})
    labels: dict[str, str] = {}
    errors: list[str] = []
    for _ in range(len(texts) + 1):
        result, error = answers.get(timeout=60)
        if error is not None:
            errors.append(str(error))
        else:
            response = result.get_response()  # type: ignore[attr-defined]
            labels[response.id] = result.as_numpy("label")[0].decode()  # type: ignore[attr-defined]
    client.stop_stream()
    client.close()
    print(json.dumps({"labels": labels, "errors": errors}))


if __name__ == "__main__":
    main()
