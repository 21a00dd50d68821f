"""What Triton's model repository extension means, for both doors: the index of versions, and loading
and unloading while serving (--model-control explicit only), through versions/changes.py.

Load reads the model's version policy from Triton's configuration JSON ("config" parameter:
{"version_policy": {"specific": {"versions": [3]}}} and the like), so that tritonclient's load_model
chooses versions unmodified; "shadow" (bool) loads the chosen versions that are not loaded yet as
shadows instead. Unload takes every version out, or only the one a "version" parameter names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from model_contract import version_of
from service.core.errors import InvalidInput, ModelNotFound, VersionRefused, quoted
from service.ops.settings import ModelControl
from service.versions.policy import VersionPolicy

if TYPE_CHECKING:
    from service.versions.changes import VersionChanges

log = logging.getLogger(__name__)

LOAD_PARAMETERS = {"config": str, "shadow": bool}
UNLOAD_PARAMETERS = {"version": (int, str), "unload_dependents": bool}  # dependents: Triton's; none here
CONFIG_KEYS = {"name", "version_policy"}


def check_control(control: ModelControl) -> None:
    if control is ModelControl.EXPLICIT:
        return
    how = {
        ModelControl.NONE: "its versions are chosen at start (--model-control none)",
        ModelControl.POLL: "it follows the model directory by itself (--model-control poll)",
    }[control]
    raise VersionRefused(
        f"this server does not load or unload on request: {how}; start it with --model-control explicit"
    )


def check_parameters(given: Mapping[str, Any], allowed: Mapping[str, Any]) -> None:
    for key, value in given.items():
        kind = allowed.get(key)
        if kind is None:
            raise InvalidInput(f"parameter {quoted(key)} is not taken here; known: {sorted(allowed)}")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise InvalidInput(f"parameter {quoted(key)} has the wrong kind of value: {quoted(value)}")


def policy_of(config: str, name: str) -> VersionPolicy | None:
    """The version policy of a Triton model configuration (JSON) for model `name`; None when it has
    none."""
    try:
        parsed = json.loads(config)
    except (ValueError, RecursionError) as err:  # not JSON, a number too long, nested too deep
        raise InvalidInput(f"parameter config is not JSON this server reads: {err}") from None
    if not isinstance(parsed, dict):
        raise InvalidInput("parameter config must be a JSON object (a model configuration)")
    if "name" in parsed and parsed["name"] != name:
        raise InvalidInput(f"the configuration names model {quoted(parsed['name'])}; this is {name!r}")
    extra = sorted(set(parsed) - CONFIG_KEYS)
    if extra:
        raise InvalidInput(f"this server reads only version_policy from a configuration; got {quoted(extra)}")
    if "version_policy" not in parsed:
        return None
    try:
        return VersionPolicy.from_triton(parsed["version_policy"])
    except ValueError as err:
        raise InvalidInput(str(err)) from None


class RepositoryCalls:
    """The repository extension's calls over the version changes; control: how versions change here
    (only --model-control explicit takes load and unload calls)."""

    def __init__(self, changes: VersionChanges, control: ModelControl = ModelControl.NONE) -> None:
        self.changes = changes
        self.control = control

    async def load(self, name: str, parameters: Mapping[str, Any]) -> None:
        """Load `name` as its (possibly new) version policy chooses; ServiceError on failure."""
        changes = self.changes
        models = changes.models
        models.check_name(name)
        check_control(self.control)
        check_parameters(parameters, LOAD_PARAMETERS)
        config = parameters.get("config")
        policy = policy_of(config, models.name) if config is not None else None
        chosen = policy or changes.policy
        available = models.available()
        missing = chosen.missing(available)
        if missing:
            raise ModelNotFound(f"no version {missing} under the model directory; it has {available}")
        if parameters.get("shadow", False):
            failures = []
            for version in chosen.choose(available):
                if version not in models.loaded():
                    try:
                        await changes.load(version, shadow=True)
                    except VersionRefused as err:
                        failures.append(err.message)
        else:
            failures = await changes.apply(chosen)
        if failures:
            raise VersionRefused("; ".join(failures))

    async def unload(self, name: str, parameters: Mapping[str, Any]) -> None:
        self.changes.models.check_name(name)
        check_control(self.control)
        check_parameters(parameters, UNLOAD_PARAMETERS)
        version = parameters.get("version")
        if version is None:
            await self.changes.unload_all()
            return
        number = version_of(version)
        if number is None:
            raise InvalidInput(f"parameter version {quoted(version)} is not a version number (1, 2, ...)")
        await self.changes.unload(number)

    def index(self, ready_only: bool) -> list[dict[str, str]]:
        name = self.changes.models.name
        return [
            {"name": name, "version": str(version), "state": state, "reason": reason}
            for version, state, reason in self.changes.index()
            if state == "READY" or not ready_only
        ]
