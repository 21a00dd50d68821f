"""The model directory contract shared by the exporter, the server and the bench."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model_contract import MAX_VERSION, PAD_ID, pad, sha256_file, version_of, versions
from service.versions.policy import VersionPolicy


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


def test_one_rule_names_a_version_in_text_and_in_numbers() -> None:
    assert [version_of(v) for v in ("3", 3, str(MAX_VERSION), MAX_VERSION)] == [
        3,
        3,
        MAX_VERSION,
        MAX_VERSION,
    ]
    refused = ("03", "0", "", "3.0", "²", "-1", 0, -1, True, MAX_VERSION + 1, str(MAX_VERSION + 1), 3.0, None)
    assert [version_of(v) for v in refused] == [None] * len(refused)
    with pytest.raises(ValueError, match="version numbers"):
        VersionPolicy.parse("0003,5")  # the same rule in a setting
    with pytest.raises(ValueError, match="must list"):
        VersionPolicy.from_triton({"specific": {"versions": [2**63]}})
