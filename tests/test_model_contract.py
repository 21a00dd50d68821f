"""The model directory contract shared by the exporter, the server and the bench."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from model_contract import PAD_ID, pad, sha256_file, versions


def test_pad_right_pads_with_the_pad_id_and_masks_real_tokens() -> None:
    ids, mask = pad([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == "int64"


def test_versions_are_integer_directories_in_order(tmp_path: Path) -> None:
    for name in ("10", "2", "staging", ".staging-3"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert versions(tmp_path) == [2, 10]
    assert versions(tmp_path / "missing") == []
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_the_server_loads_without_the_exporter_or_torch() -> None:
    code = "import sys, service.ops.server; print(sorted({'torch', 'model_export'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
