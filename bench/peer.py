"""MLServer 1.7.1, the peer, run by the bench: its own virtual environment and a model folder.

The environment lives under the cache directory and is built once (about a minute): MLServer 1.7.1
with uvloop<0.22 (newer uvloop kills its inference workers at start), and the same onnxruntime and
tokenizers versions as this project. The runtime is bench/mlserver_runtime.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import grpc

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as pb
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc

MLSERVER = "1.7.1"
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def pins() -> list[str]:
    return [
        f"mlserver=={MLSERVER}",
        "uvloop<0.22",
        f"onnxruntime=={version('onnxruntime')}",
        f"tokenizers=={version('tokenizers')}",
        f"numpy=={version('numpy')}",
    ]


def ensure_venv(cache_dir: Path) -> Path:
    """The peer's environment, built when missing or when the pins changed; returns its python."""
    venv = cache_dir / "bench" / f"mlserver-{MLSERVER}"
    python = venv / "bin" / "python"
    stamp = venv / "pins.json"
    wanted = pins()
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    print(f"building the peer's environment in {venv} ({', '.join(wanted)})", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    stamp.write_text(json.dumps(wanted))
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_folder(folder: Path, version_dir: Path, model_file: str, batching: bool, workers: int) -> int:
    """settings.json and the model's model-settings.json; returns the gRPC port."""
    grpc_port = free_port()
    settings = {
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        "http_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": workers,
        "debug": False,
    }
    model = {
        "name": "sentiment",
        "implementation": "mlserver_runtime.OnnxSentiment",
        "max_batch_size": 32 if batching else 0,
        "max_batch_time": 0.005 if batching else 0,
        "parameters": {"uri": str(version_dir.resolve()), "extra": {"model_file": model_file}},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "sentiment").mkdir(exist_ok=True)
    (folder / "sentiment" / "model-settings.json").write_text(json.dumps(model, indent=2))
    return grpc_port


def start(
    python: Path,
    folder: Path,
    version_dir: Path,
    model_file: str = "model.onnx",
    batching: bool = True,
    workers: int = 1,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start MLServer on a free loopback port and wait until the model is ready; (process, port)."""
    port = write_folder(folder, version_dir, model_file, batching, workers)
    env = dict(os.environ, PYTHONPATH=f"{BENCH}{os.pathsep}{ROOT}")
    with (folder / "mlserver.log").open("wb") as log:  # the child keeps its own copy of the file
        process = subprocess.Popen(
            [str(python.parent / "mlserver"), "start", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name="sentiment"), timeout=2).ready:
                    return process, port
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    process.kill()
    process.wait()
    raise RuntimeError(f"MLServer did not become ready; see {folder / 'mlserver.log'}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
