"""Run by test_http.py in its own process, as triton_calls.py is: tritonclient.http, unmodified,
against the server's HTTP port.

Usage: python triton_http.py HOST:PORT TOKEN|- TEXT... ; prints one JSON object with what it got.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


def main() -> None:
    target, token, texts = sys.argv[1], sys.argv[2], sys.argv[3:]

    # tritonclient writes Inference-Header-Content-Length into the headers it is given: a fresh
    # dict for every call, else a later call without binary data carries a stale length
    def auth() -> dict[str, str] | None:
        return None if token == "-" else {"Authorization": f"Bearer {token}"}

    client = triton.InferenceServerClient(url=target)
    out: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("sentiment", headers=auth()),
        "version_ready": client.is_model_ready("sentiment", "1", headers=auth()),
        "server_metadata": client.get_server_metadata(headers=auth()),
        "model_metadata": client.get_model_metadata("sentiment", headers=auth()),
    }
    runs: dict[str, object] = {}
    for binary_in in (True, False):
        text = triton.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(
            np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary_in
        )
        for binary_out in (True, False):
            outputs = [
                triton.InferRequestedOutput("label", binary_data=binary_out),
                triton.InferRequestedOutput("probabilities", binary_data=binary_out),
            ]
            result = client.infer("sentiment", [text], outputs=outputs, request_id="r1", headers=auth())
            runs[f"in={binary_in} out={binary_out}"] = {
                "labels": [
                    v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()
                ],
                "probabilities": result.as_numpy("probabilities").tolist(),
                "id": result.get_response()["id"],
            }
    out["runs"] = runs
    # no outputs named: tritonclient asks for every output as binary data
    summary = client.infer("sentiment", [text], parameters={"attention": "summary"}, headers=auth())
    out["num_tokens"] = summary.as_numpy("num_tokens").tolist()
    out["rollout"] = summary.as_numpy("rollout").tolist()
    out["tokens"] = [[t.decode() for t in row] for row in summary.as_numpy("tokens").tolist()]
    full = client.infer(
        "sentiment", [text], model_version="1", parameters={"attention": "full"}, headers=auth()
    )
    out["weights_shape"] = list(full.as_numpy("attention_weights").shape)
    for binary_out in (True, False):  # the classification extension, as binary data and as JSON
        classes = [triton.InferRequestedOutput("probabilities", binary_data=binary_out, class_count=2)]
        top = client.infer("sentiment", [text], outputs=classes, headers=auth()).as_numpy("probabilities")
        out[f"classes binary={binary_out}"] = [
            [cell.decode() if isinstance(cell, bytes) else cell for cell in row] for row in top.tolist()
        ]
    for name, call in {
        "unknown_model": lambda: client.infer("nope", [text], headers=auth()),
        "unknown_version": lambda: client.infer("sentiment", [text], model_version="7", headers=auth()),
        "unknown_parameter": lambda: client.infer("sentiment", [text], parameters={"x": 1}, headers=auth()),
        "no_token": lambda: client.infer("sentiment", [text]),
    }.items():
        try:
            call()
            out[name] = None
        except InferenceServerException as err:
            out[name] = [err.status(), err.message()]
    client.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
