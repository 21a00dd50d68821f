"""Version policies, the repository requests' parameters, and which directories are versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_contract import versions
from service.calls.repository import (
    LOAD_PARAMETERS,
    UNLOAD_PARAMETERS,
    check_control,
    check_parameters,
    policy_of,
)
from service.core.errors import InvalidInput, VersionRefused
from service.ops.settings import ModelControl
from service.versions.policy import VersionPolicy


@pytest.mark.parametrize(
    ("text", "chosen"),
    [
        ("latest:1", [5]),
        ("latest", [5]),
        ("LATEST:2", [3, 5]),
        ("all", [1, 3, 5]),
        ("3, 1", [1, 3]),
        ("4", []),
    ],
)
def test_a_policy_chooses_among_the_versions_there_are(text: str, chosen: list[int]) -> None:
    assert VersionPolicy.parse(text).choose([5, 1, 3]) == chosen


@pytest.mark.parametrize(
    "text", ["latest:0", "latest:x", "latest:65", "", ",", "0", "-1", "1.5", "²", "9" * 5000]
)
def test_a_policy_that_names_nothing_sensible_is_refused_with_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="latest|versions|list"):
        VersionPolicy.parse(text)


def test_tritons_version_policies_and_their_mistakes() -> None:
    assert VersionPolicy.from_triton({"latest": {"num_versions": 2}}) == VersionPolicy("latest", 2)
    assert VersionPolicy.from_triton({"all": {}}).kind == "all"
    assert VersionPolicy.from_triton({"specific": {"versions": [3, 1, 3]}}).listed == (1, 3)
    for wrong in ({}, {"latest": 1}, {"latest": {"num_versions": True}}, {"specific": {"versions": []}},
                  {"specific": {"versions": [0]}}, {"newest": {}}, {"all": {}, "latest": {}}):  # fmt: skip
        with pytest.raises(ValueError):
            VersionPolicy.from_triton(wrong)


def test_repository_parameters_are_checked_by_name_and_kind() -> None:
    check_parameters({"config": "{}", "shadow": True}, LOAD_PARAMETERS)
    check_parameters({"version": 3}, UNLOAD_PARAMETERS)
    check_parameters({"version": "3", "unload_dependents": False}, UNLOAD_PARAMETERS)
    for given, allowed in (
        ({"version": True}, UNLOAD_PARAMETERS),  # a bool is an int to Python: it would unload version 1
        ({"shadow": 1}, LOAD_PARAMETERS),
        ({"files": b"x"}, LOAD_PARAMETERS),
    ):
        with pytest.raises(InvalidInput):
            check_parameters(given, allowed)


def test_a_configuration_gives_its_version_policy_and_nothing_else() -> None:
    assert policy_of('{"version_policy": {"specific": {"versions": [2]}}}', "sentiment") == VersionPolicy(
        "specific", listed=(2,)
    )
    assert policy_of('{"name": "sentiment"}', "sentiment") is None
    for wrong in (
        "not json",
        "[]",
        '{"max_batch_size": 8}',
        "[" * 100_000,
        '{"version_policy": ' + "9" * 5000 + "}",
    ):
        with pytest.raises(InvalidInput):
            policy_of(wrong, "sentiment")


def test_load_and_unload_only_in_explicit_mode() -> None:
    check_control(ModelControl.EXPLICIT)
    for mode in (ModelControl.NONE, ModelControl.POLL):
        with pytest.raises(VersionRefused, match="--model-control explicit"):
            check_control(mode)


def test_only_whole_numbers_from_one_are_versions(tmp_path: Path) -> None:
    for name in ("1", "12", "0", "²", "١", ".staging-3", "x"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a directory")
    assert versions(tmp_path) == [1, 12]
