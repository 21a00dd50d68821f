"""Version policies: which of the model root's versions a server loads.

The same three kinds as Triton's model configuration, written as a setting (--versions) or given as
Triton's `version_policy` JSON through the repository API: the latest N versions, all of them, or
a list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from model_contract import version_number, version_of

MAX_LISTED = 64  # versions a list may name: a policy is read by people


@dataclass(frozen=True)
class VersionPolicy:
    kind: Literal["latest", "all", "specific"]
    count: int = 1  # latest: how many
    listed: tuple[int, ...] = ()  # specific: which

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """`latest:N`, `latest` (1), `all`, or a comma-separated list of versions; ValueError saying
        what is allowed."""
        value = text.strip().lower()
        if value == "all":
            return cls("all")
        if value == "latest" or value.startswith("latest:"):
            count = value.partition(":")[2] or "1"
            if not (
                count.isascii() and count.isdigit() and len(count) <= 3 and 1 <= int(count) <= MAX_LISTED
            ):
                raise ValueError(f"latest:{count} must name 1 to {MAX_LISTED} versions")
            return cls("latest", int(count))
        parts = [part.strip() for part in value.split(",") if part.strip()]
        numbers = [version_number(part) for part in parts]
        if not numbers or None in numbers:
            raise ValueError("use latest:N, all, or versions like 3,5 (version numbers: 1, 2, ...)")
        listed = tuple(sorted({n for n in numbers if n is not None}))
        if len(listed) > MAX_LISTED:
            raise ValueError(f"a list may name at most {MAX_LISTED} versions")
        return cls("specific", listed=listed)

    @classmethod
    def from_triton(cls, policy: Mapping[str, Any]) -> VersionPolicy:
        """Triton's `version_policy` object: {"latest": {"num_versions": N}}, {"all": {}} or
        {"specific": {"versions": [..]}}; ValueError naming what was wrong."""
        if not isinstance(policy, Mapping) or len(policy) != 1:
            raise ValueError('version_policy holds one of "latest", "all" or "specific"')
        ((kind, body),) = policy.items()
        if not isinstance(body, Mapping):
            raise ValueError(f"version_policy.{kind} must be an object")
        if kind == "all":
            return cls("all")
        if kind == "latest":
            count = body.get("num_versions", 1)
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_LISTED:
                raise ValueError(f"version_policy.latest.num_versions must be 1 to {MAX_LISTED}")
            return cls("latest", count)
        if kind == "specific":
            listed = body.get("versions")
            if (
                not isinstance(listed, list)
                or not listed
                or len(listed) > MAX_LISTED
                or not all(isinstance(v, int) and version_of(v) is not None for v in listed)
            ):
                raise ValueError(f"version_policy.specific.versions must list 1 to {MAX_LISTED} versions")
            return cls("specific", listed=tuple(sorted(set(listed))))
        raise ValueError(f'version_policy {kind!r} is not one of "latest", "all" or "specific"')

    def choose(self, available: Sequence[int]) -> list[int]:
        """The versions to load among those available, ascending."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "latest":
            return ordered[-self.count :]
        return [v for v in ordered if v in self.listed]

    def missing(self, available: Sequence[int]) -> list[int]:
        """Versions the policy names that are not available (a list only)."""
        return [v for v in self.listed if v not in available] if self.kind == "specific" else []

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "latest":
            return f"latest:{self.count}"
        return ",".join(map(str, self.listed))
