"""Run by test_versions.py in its own process (tritonclient registers its own `inference.*` messages):
Triton's model repository extension through tritonclient, gRPC and HTTP, unmodified.

Usage: python triton_repository.py GRPC_TARGET HTTP_HOST:PORT TOKEN STEP... ; prints one JSON object,
each step's result, or {"error": message} when tritonclient raised.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException


def policy(value: dict[str, Any]) -> str:
    return json.dumps({"version_policy": value})


def main() -> None:
    target, web_target, token, *steps = sys.argv[1:]
    grpc_client = triton_grpc.InferenceServerClient(url=target)
    web = triton_http.InferenceServerClient(url=web_target)
    headers = {"authorization": f"Bearer {token}"}
    actions: dict[str, Callable[[], Any]] = {
        "index_without_token": lambda: grpc_client.get_model_repository_index(as_json=True),
        "load_without_token": lambda: grpc_client.load_model("sentiment", config=policy({"all": {}})),
        "index": lambda: grpc_client.get_model_repository_index(headers=headers, as_json=True)["models"],
        "load_all": lambda: grpc_client.load_model("sentiment", headers=headers, config=policy({"all": {}})),
        "ready_1": lambda: grpc_client.is_model_ready("sentiment", "1", headers=headers),
        "ready_2": lambda: grpc_client.is_model_ready("sentiment", "2", headers=headers),
        "metadata": lambda: grpc_client.get_model_metadata("sentiment", headers=headers, as_json=True),
        "http_index": lambda: web.get_model_repository_index(headers=headers),
        "http_load_1": lambda: web.load_model(
            "sentiment", headers=headers, config=policy({"specific": {"versions": [1]}})
        ),
        "http_ready_1": lambda: web.is_model_ready("sentiment", "1", headers=headers),
        "http_ready_2": lambda: web.is_model_ready("sentiment", "2", headers=headers),
        "unload": lambda: grpc_client.unload_model("sentiment", headers=headers),
        "load": lambda: grpc_client.load_model("sentiment", headers=headers),
    }
    results: dict[str, Any] = {}
    for step in steps:
        try:
            results[step] = actions[step]()
        except InferenceServerException as err:
            results[step] = {"error": str(err)}
    grpc_client.close()
    web.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
