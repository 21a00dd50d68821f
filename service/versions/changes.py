"""How the version table changes while the server serves (--model-control): at start only, by
following the model root (poll), or through the repository API (explicit). Whichever way, a change
is one at a time and safe:
- a version is loaded beside the others: its directory checked (config, sha256 of the graph, the
  graph's contract), its labels compared with the serving version's, vetted (versions/vetting.py: a
  few texts alone and in one padded batch must give the same probabilities) and warmed up, at a
  lower CPU priority; only then is it put in the table, in one step of the event loop. A version
  failing any check is refused with a log line and sentiment_model_version_events_total
  {event="refused"}; what was serving is untouched;
- unloading takes the version out of the table first, waits until its last call is answered, stops
  its batcher and drops its sessions, and gives the freed memory back to the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from model_contract import versions
from service.core.engine import Engine
from service.core.errors import ModelNotFound, NotServing, StartupError, VersionRefused
from service.core.results import PredictionObserver
from service.versions.loaded import Loaded, VersionObserver
from service.versions.store import no_versions
from service.versions.vetting import PARITY_TOLERANCE, fingerprint, give_back_memory, in_background, parity

if TYPE_CHECKING:
    from service.versions.policy import VersionPolicy
    from service.versions.registry import ModelRegistry

log = logging.getLogger(__name__)

Build = Callable[[int, VersionObserver, PredictionObserver | None], Engine]


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("shadow batches stopped: %r", task.exception())


class VersionChanges:
    """Loads, unloads and polls the versions of `models` as `policy` chooses; see the module's
    docstring."""

    def __init__(self, models: ModelRegistry, build: Build, policy: VersionPolicy) -> None:
        """build(version, batch observer, prediction observer) loads and checks one version
        (assembly.build_engine), raising ModelDirectoryError."""
        self.models = models
        self._build = build
        self.policy = policy
        self.root = models.root
        self.metrics = models.metrics
        self._leaving: dict[int, tuple[int, Loaded]] = {}  # ticket -> (version, its entry): draining
        self._tickets = itertools.count()
        self._releases: set[asyncio.Task[None]] = set()
        self._applying = asyncio.Lock()  # one whole change of the loaded set at a time
        self._changing = asyncio.Lock()  # one version's change at a time
        self._depths: dict[int, int] = {}  # each version's queue depth, summed in the metrics
        self._refused: dict[int, tuple[str, object]] = {}  # version -> (why, its fingerprint then)
        self._seen: dict[int, object] = {}  # version not loaded -> its fingerprint at the last poll
        self._pumping: asyncio.Task[None] | None = None

    def _engine(self, version: int, shadow: bool = False) -> Loaded:
        """Build one version and check its labels (blocking: it reads and hashes files and creates
        sessions); ModelDirectoryError or VersionRefused on failure."""
        observer = VersionObserver(self.metrics, version, self._depths, serving=not shadow)
        engine = self._build(version, observer, None)  # the table tells the engine whom to tell
        models = self.models
        reference = models.entry(models.default_version) or next(iter(models.entries()), None)
        if reference is not None and engine.spec.labels != reference.engine.spec.labels:
            raise VersionRefused(
                f"its labels {list(engine.spec.labels)} differ from the serving version's "
                f"{list(reference.engine.spec.labels)}: callers read answers by label"
            )
        return Loaded(engine, observer, shadow)

    def _vet(self, engine: Engine, warm: bool) -> None:
        """The vetting run, then (warm) the warm-up: VersionRefused when vetting fails."""
        parity(engine, PARITY_TOLERANCE[engine.spec.variant])
        if warm:
            engine.warm_up()

    def load_at_start(self) -> None:
        """Load what the policy chooses, before the server listens; StartupError when it chooses none
        or one fails (the server must not start without the versions it was told to serve)."""
        available = versions(self.root)
        if not available:
            raise no_versions(self.root)
        missing = self.policy.missing(available)
        if missing:
            raise StartupError(
                f"--versions {self.policy}: {self.root} has no version {missing}; it has {available}"
            )
        for version in self.policy.choose(available):
            try:
                held = self._engine(version)
                self._vet(held.engine, warm=False)  # start() warms every version up
            except VersionRefused as err:
                raise StartupError(f"version {version} is refused: {err.message}") from None
            self.models.put(version, held)

    async def start(self) -> None:
        """Warm every loaded version up, start serving, and start the shadows' batches."""
        for held in self.models.entries():
            await held.engine.start()
            self._announce(held.engine, "loaded")
        self._pumping = asyncio.get_running_loop().create_task(self.models.shadow_tap.pump(), name="shadows")
        self._pumping.add_done_callback(_report_end)

    async def load(self, version: int, shadow: bool = False) -> bool:
        """Load `version` beside the others (or turn a loaded shadow into a serving version, or back);
        False when it was already loaded that way. VersionRefused when it fails a check. A caller
        that goes away does not stop a load half way: it completes, and holds the lock until then."""
        return await asyncio.shield(asyncio.get_running_loop().create_task(self._load(version, shadow)))

    async def _load(self, version: int, shadow: bool) -> bool:
        models = self.models
        async with self._changing:
            held = models.entry(version)
            if held is not None:
                if held.shadow == shadow:
                    return False
                models.set_shadow(version, shadow)
                self._event(version, "shadow" if shadow else "promoted")
                log.info("version %d is now %s", version, "a shadow" if shadow else "serving")
                return True
            if models.draining.is_set():
                raise NotServing("the server is shutting down: it loads no version now")
            available = versions(self.root)
            if version not in available:
                raise ModelNotFound(f"the model directory has no version {version}; it has {available}")
            began = time.monotonic()
            # what the files were when read: a copy that finishes after a failed read is tried again
            seen = await asyncio.to_thread(fingerprint, self.root, version)
            try:
                held = await asyncio.to_thread(self._engine, version, shadow)
                await in_background(self._vet, held.engine, True)
                await held.engine.start(warm=False)
            except Exception as err:
                why = err.message if isinstance(err, VersionRefused) else str(err)
                self._refused[version] = (why, seen)
                self._event(version, "refused")
                log.error("version %d refused, versions %s still serving: %s", version, models.loaded(), why)
                held = None  # the half-built sessions go, and their memory back to the system
                await asyncio.to_thread(give_back_memory)
                raise VersionRefused(f"version {version} refused: {self._private(why)}") from None
            self._refused.pop(version, None)
            models.put(version, held)
            self._announce(held.engine, "shadow" if shadow else "loaded", time.monotonic() - began)
            return True

    def _private(self, message: str) -> str:
        """`message` with the model root's path taken out: callers see versions, not this server's
        file system (the log keeps the whole path)."""
        return message.replace(f"{self.root}/", "").replace(str(self.root), "the model directory")

    async def unload(self, version: int, keep_one: bool = False) -> None:
        """Take `version` out of the table, let its calls finish, then release it. keep_one: never the
        last serving version (ModelNotFound for a version not loaded). The release is a task of its
        own: a caller that goes away does not leave a version half released."""
        models = self.models
        async with self._changing:
            held = models.entry(version)
            if held is None:
                raise ModelNotFound(f"version {version} is not loaded; loaded: {models.loaded()}")
            if keep_one and not held.shadow and models.loaded() == [version]:
                log.warning("version %d stays: it is the only version serving", version)
                return
            ticket = next(self._tickets)
            self._leaving[ticket] = (version, models.take(version))
        del held  # the release drops the last reference to its sessions
        task = asyncio.get_running_loop().create_task(self._release(ticket))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        await asyncio.shield(task)

    async def _release(self, ticket: int) -> None:
        began = time.monotonic()
        version, held = self._leaving[ticket]
        await held.idle.wait()  # calls that started on it are answered by it
        engine = held.engine
        engine.stop_accepting()
        await engine.stop()
        if self.models.entry(version) is None:  # not loaded again meanwhile: its series go
            self._depths.pop(version, None)
            info_labels = self._info_labels(engine)
            self.metrics.model.labels(*info_labels).set(0)  # workers' shared files keep removed series
            self.metrics.model.remove(*info_labels)
        del self._leaving[ticket], held, engine  # the sessions go with the last reference
        await asyncio.to_thread(give_back_memory)
        self._event(version, "unloaded")
        log.info(
            "version %d unloaded after %.2f s; loaded: %s",
            version,
            time.monotonic() - began,
            self.models.loaded(),
        )

    async def unload_all(self) -> None:
        """Unload every version, shadows included (calls are then UNAVAILABLE)."""
        async with self._applying:
            for version in [*self.models.loaded(), *self.models.shadows()]:
                with contextlib.suppress(ModelNotFound):  # gone meanwhile
                    await self.unload(version)

    async def apply(self, policy: VersionPolicy | None = None) -> list[str]:
        """On request (explicit): make the loaded versions what `policy` (default: the current one)
        chooses from the model root now, new ones loaded first (newest first), then the others
        unloaded. When any fails to load, nothing is unloaded and the policy stays as it was: the
        failures are returned, one line each."""
        async with self._applying:
            chosen = policy or self.policy
            available = versions(self.root)
            wanted = chosen.choose(available)
            if not wanted:
                raise ModelNotFound(f"the version policy {chosen} chooses no version among {available}")
            failures = await self._load_all(wanted)
            if failures:
                return failures
            self.policy = chosen
            for version in sorted(set(self.models.loaded()) - set(wanted)):
                with contextlib.suppress(ModelNotFound):  # unloaded meanwhile
                    await self.unload(version)
            return []

    async def _load_all(self, wanted: Sequence[int]) -> list[str]:
        failures = []
        for version in sorted(set(wanted) - set(self.models.loaded()), reverse=True):  # a shadow is promoted
            try:
                await self.load(version)
            except VersionRefused as err:
                failures.append(err.message)
        return failures

    async def refresh(self) -> None:
        """The poller's step: the policy chooses among the versions that can be loaded, so a bad new
        version leaves the serving ones as they are; a serving version whose directory went missing is
        unloaded, never the last one. A version is tried once its files have stayed as they were for
        one poll (a copy still under way is waited for, not refused), and one refused is tried again
        only once its files change."""
        models = self.models
        available = versions(self.root)
        settled = []  # versions not loaded whose files are as they were at the last poll
        for version in available:
            if models.entry(version) is not None:
                continue
            now = await asyncio.to_thread(fingerprint, self.root, version)
            refused = self._refused.get(version)
            if self._seen.get(version) == now and (refused is None or refused[1] != now):
                settled.append(version)
            self._seen[version] = now
        for gone in set(self._seen) - set(available):
            del self._seen[gone]
        await self._load_all(self.policy.choose([*models.loaded(), *settled]))
        loadable = [
            v for v in available if models.entry(v) is not None or (v in settled and v not in self._refused)
        ]
        wanted = self.policy.choose(loadable)
        for version in sorted(set(models.loaded()) - set(wanted)):
            await self.unload(version, keep_one=True)

    async def follow(self, interval_s: float) -> None:
        """--model-control poll: refresh from the model root every interval, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # a bad poll must not end polling
                log.exception("reading the model root %s failed; polling goes on", self.root)

    def index(self) -> list[tuple[int, str, str]]:
        """(version, state, reason) for every version under the model root and every loaded one:
        READY (serving, or a shadow), UNAVAILABLE (not loaded, or refused: the reason says)."""
        models, rows = self.models, []
        for version in sorted(set(versions(self.root)) | {*models.loaded(), *models.shadows()}):
            held = models.entry(version)
            if held is not None:
                reason = "shadow" if held.shadow else ("default" if version == models.default_version else "")
                rows.append((version, "READY", reason))
            elif version in self._refused:
                rows.append((version, "UNAVAILABLE", f"refused: {self._refused[version][0]}"))
            else:
                rows.append((version, "UNAVAILABLE", f"not chosen by the version policy {self.policy}"))
        return rows

    async def stop(self) -> None:
        """Answer everything accepted on every version, then stop them."""
        self.models.stop_accepting()
        if self._pumping is not None:
            self._pumping.cancel()
            await asyncio.gather(self._pumping, return_exceptions=True)
        await asyncio.gather(*self._releases, return_exceptions=True)  # unloads in progress finish
        await asyncio.gather(*(held.engine.stop() for held in self.models.entries()))

    def _event(self, version: int, event: str) -> None:
        self.metrics.version_events.labels(str(version), event).inc()

    def _info_labels(self, engine: Engine) -> tuple[str, ...]:
        """A version's sentiment_model_info labels: name, version, provider, variant, labels."""
        spec = engine.spec
        return (spec.name, str(spec.version), engine.info().provider, spec.variant, ",".join(spec.labels))

    def _announce(self, engine: Engine, event: str, seconds: float | None = None) -> None:
        spec, info, models = engine.spec, engine.info(), self.models
        self.metrics.model.labels(*self._info_labels(engine)).set(1)
        self.metrics.model_loaded(spec.version, spec.labels)
        self._event(spec.version, event)
        took = f" in {seconds:.2f} s" if seconds is not None else ""
        log.info(
            "version %d %s%s (%s); serving %s, default %s, shadows %s",
            spec.version,
            event,
            took,
            info.provider,
            models.loaded(),
            models.default_version,
            models.shadows(),
        )
