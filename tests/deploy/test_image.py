"""The server image built without Docker (buildah on a debootstrapped Debian) and started inside.

Minutes long, so not in the default run: `.venv/bin/python -m pytest -m image` (as root on Debian).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT


@pytest.mark.image
def test_server_image_builds_and_serves(model_root: Path) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image"), str(model_root)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEALTHCHECK says SERVING" in result.stderr
