"""Health probe: asks a server's grpc.health.v1 and exits 0 only when it answers SERVING.

The container image's HEALTHCHECK runs `python -m service.ops.probe`; it needs nothing beyond the
server's own dependencies (grpc_health_probe is not packaged everywhere). The target defaults to
this process's own server, 127.0.0.1 on SENTIMENT_PORT (50051), so the same command works whatever
port a deployment sets.

    python -m service.ops.probe                          # 127.0.0.1:$SENTIMENT_PORT, whole server
    python -m service.ops.probe --target host:50051 --service sentiment.v1.SentimentService
    python -m service.ops.probe --tls --ca-file ca.pem   # servers with TLS on

Exit codes: 0 SERVING, 1 anything else (NOT_SERVING, unknown service, no answer in time).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(
    target: str,
    service: str = "",
    timeout_s: float = 3.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """The status name the server gives `service` ("SERVING", "NOT_SERVING", ...), or the gRPC
    status code's name when the call itself failed ("UNAVAILABLE", "DEADLINE_EXCEEDED", ...)."""
    channel = (
        grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.ops.probe",
        description="Exit 0 when the server's grpc.health.v1 answers SERVING, 1 otherwise.",
    )
    port = os.environ.get("SENTIMENT_PORT", "50051")
    parser.add_argument(
        "--target", default=f"127.0.0.1:{port}", help="host:port (default 127.0.0.1:$SENTIMENT_PORT)"
    )
    parser.add_argument("--service", default="", help="service name to ask about (default: the server)")
    parser.add_argument("--timeout-s", type=float, default=3.0, help="deadline of the check")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", type=Path, help="CA certificate (PEM) to trust; implies --tls")
    parser.add_argument("--quiet", action="store_true", help="print nothing, only set the exit code")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    credentials = None
    if args.tls or args.ca_file is not None:
        roots = args.ca_file.read_bytes() if args.ca_file is not None else None
        credentials = grpc.ssl_channel_credentials(roots)
    status = check(args.target, args.service, args.timeout_s, credentials)
    if not args.quiet:
        print(f"{args.target} {args.service or '(server)'}: {status}")
    sys.exit(0 if status == "SERVING" else 1)


if __name__ == "__main__":
    main()
