"""The version table: the model versions one server holds, and which answers a call.

Each loaded version is an Engine of its own: its ONNX Runtime sessions, its fair queue and batcher,
so a batch never mixes versions. The highest loaded version that is not a shadow is the default: it
answers every call that names no version; a call may name any loaded version, and holds it (use())
until it is answered, so a change of the table never moves or fails accepted work. The table
changes only through versions/changes.py; a shadow answers no call (versions/shadows.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from model_contract import versions
from service.core.errors import ModelNotFound, NotServing, quoted
from service.versions.shadows import Shadows

if TYPE_CHECKING:
    from service.core.engine import Engine
    from service.core.results import PredictionObserver, TextResult
    from service.core.spec import EngineInfo
    from service.ops.metrics import Metrics
    from service.versions.loaded import Loaded

log = logging.getLogger(__name__)


class ModelRegistry:
    """The loaded versions of the one model this server serves; see the module's docstring."""

    def __init__(
        self,
        root: Path,
        name: str,
        metrics: Metrics,
        predictions: PredictionObserver | None = None,
        shadow_share: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        """predictions: told of every serving version's answers (model monitoring, the access log)."""
        self.root = root
        self.name = name
        self.metrics = metrics
        self._predictions = predictions
        self.shadow_tap = Shadows(self, metrics, shadow_share, rng)
        self._loaded: dict[int, Loaded] = {}
        self.on_change: Callable[[], None] | None = None  # called when the default comes or goes
        self.default_version = 0
        self.draining = asyncio.Event()  # set once new work is refused: open streams close

    # what calls see ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        held = self._loaded.get(self.default_version)
        return held is not None and held.engine.accepting and not self.draining.is_set()

    def loaded(self) -> list[int]:
        """Versions that answer calls, ascending (shadows are not among them)."""
        return sorted(v for v, held in self._loaded.items() if not held.shadow)

    def available(self) -> list[int]:
        """Versions under the model root now."""
        return versions(self.root)

    def shadows(self) -> list[int]:
        return sorted(v for v, held in self._loaded.items() if held.shadow)

    def default(self) -> Engine:
        """The engine answering calls that name no version; NotServing when there is none."""
        held = self._loaded.get(self.default_version)
        if held is None:
            raise NotServing(f"no version of model {self.name!r} is loaded; retry (another replica)")
        return held.engine

    def info(self, version: int = 0) -> EngineInfo:
        return self._resolve(version).engine.info()

    def check_name(self, name: str) -> None:
        """ModelNotFound unless `name` is the model this server serves."""
        if name != self.name:
            raise ModelNotFound(f"unknown model {quoted(name)}; this server serves {self.name!r}")

    def check_version(self, version: int) -> None:
        """ModelNotFound unless `version` (0: the default) answers calls here."""
        self._resolve(version)

    def _resolve(self, version: int) -> Loaded:
        if not version:
            self.default()
            return self._loaded[self.default_version]
        held = self._loaded.get(version)
        if held is None or held.shadow:
            loaded = self.loaded()
            exists = version in versions(self.root)
            why = "is not loaded" if exists else "does not exist"
            raise ModelNotFound(
                f"model {self.name!r} version {version} {why}; loaded: {loaded} "
                f"(default {self.default_version or 'none'})"
            )
        return held

    @asynccontextmanager
    async def use(self, version: int) -> AsyncIterator[Engine]:
        """The engine of `version` (0: the default), held until the block ends: unloading waits."""
        with self._resolve(version).hold() as engine:
            yield engine

    def predicted(self, texts: Sequence[str], results: Sequence[TextResult], version: int) -> None:
        """A serving version answered: its observers are told, then the shadows' tap on the default
        version's answers."""
        if self._predictions is not None:
            self._predictions.predicted(texts, results, version)
        if version == self.default_version:
            self.shadow_tap.sample(texts, results)

    def entry(self, version: int) -> Loaded | None:
        """`version`'s place in the table (a shadow's too), or None when it is not loaded."""
        return self._loaded.get(version)

    def entries(self) -> list[Loaded]:
        return list(self._loaded.values())

    def serving_idle(self) -> bool:
        """Whether the default version has nothing to do now (or there is none)."""
        serving = self._loaded.get(self.default_version)
        return serving is None or serving.engine.idle

    # changes (versions/changes.py makes them) ------------------------------------------------------

    def put(self, version: int, held: Loaded) -> None:
        """`version` joins the table in one step, and is the default if it is the highest serving."""
        held.engine.observe(None if held.shadow else self)
        self._loaded[version] = held
        self._settle_default()

    def take(self, version: int) -> Loaded:
        """`version` leaves the table (KeyError when it is not in it); calls holding it finish on it."""
        held = self._loaded.pop(version)
        self.shadow_tap.forget(version)
        self._settle_default()
        return held

    def set_shadow(self, version: int, shadow: bool) -> None:
        """A loaded version becomes a shadow, or serves again."""
        held = self._loaded[version]
        held.shadow = shadow
        held.observer.serving = not shadow
        held.engine.observe(None if shadow else self)
        self.shadow_tap.forget(version)
        self._settle_default()

    def _settle_default(self) -> None:
        serving = self.loaded()
        new = serving[-1] if serving else 0
        if new != self.default_version:
            old, self.default_version = self.default_version, new
            self.metrics.default_version.set(new)
            if new:
                self.metrics.version_events.labels(str(new), "default").inc()
            if old:
                log.info("default version %s -> %s", old, new or "none")
            if (not old or not new) and self.on_change is not None:
                self.on_change()  # serving, or not: health follows

    def stop_accepting(self) -> None:
        """Every version refuses new work (each engine's own gate) and open streams close."""
        self.draining.set()
        for held in self._loaded.values():
            held.engine.stop_accepting()
