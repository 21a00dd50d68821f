"""Generated protobuf code is exactly what protos/generate.py makes from protos/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = ROOT / "clients" / "python" / "src" / "sentiment_client" / "pb"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True)
    fresh_root = tmp_path / "sentiment_client" / "pb"
    fresh = {p.relative_to(fresh_root): p.read_bytes() for p in fresh_root.rglob("*") if p.is_file()}
    current = {
        p.relative_to(CHECKED_IN): p.read_bytes()
        for p in CHECKED_IN.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(map(str, current)) == sorted(map(str, fresh)), "generated files differ in name"
    stale = [str(name) for name, content in fresh.items() if current[name] != content]
    assert not stale, f"run `python protos/generate.py`: stale {stale}"
