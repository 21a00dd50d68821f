"""Generate the Python protobuf and gRPC modules from protos/ (the only way stubs are made).

Usage: python protos/generate.py [OUTPUT_DIR]; OUTPUT_DIR defaults to the client package's pb/.
The include path maps protos/ to `sentiment_client/pb`, so generated imports are absolute and
correct with no rewriting.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent
PACKAGE = "sentiment_client/pb"
DEFAULT_OUT = ROOT / "clients" / "python" / "src"


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    """Write generated modules under out/sentiment_client/pb/ (plus __init__.py files)."""
    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    files = [f"{PACKAGE}/{p.relative_to(PROTOS).as_posix()}" for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE}={PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in {(out / f).parent for f in files} | {out / PACKAGE}:
        while directory != out and directory.is_relative_to(out / PACKAGE):
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated from protos/ by protos/generate.py; do not edit."""\n')
            directory = directory.parent


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
