"""The model versions one server holds, and how they change while it serves.

Each loaded version is an Engine of its own: its ONNX Runtime sessions, its fair queue and batcher,
so a batch never mixes versions. The highest loaded version that is not a shadow is the default: it
answers every call that names no version; a call may name any loaded version.

Versions change (--model-control) at start only, by following the model root (poll), or through the
repository API (explicit). Whichever way, a change is one at a time and safe:
- a version is loaded beside the others: its directory checked (config, sha256 of the graph, the
  graph's contract), its labels compared with the serving version's, a parity run (a few texts
  alone and in one padded batch must give the same probabilities: the padding mask works), and a
  warm-up; only then is it put in the table, in one step of the event loop, and becomes the default
  if it is the highest. A version failing any check is refused with a log line and
  sentiment_model_version_events_total{event="refused"}; what was serving is untouched;
- a call holds the version it started on (use()) until it is answered, so a switch never moves or
  fails accepted work;
- unloading takes the version out of the table first, waits until its last call is answered, stops
  its batcher and drops its sessions, and gives the freed memory back to the system.

A shadow version answers nothing itself: the texts of a sampled share (--shadow-share) of the
default version's calls are run on it too, after the callers have their answers, in batches and only
while the serving version is idle, and the metrics count how often the two agree and how
long the shadow took, so that an operator promotes (loads it again, not as a shadow) on evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from model_contract import pad, versions
from service.core.engine import Engine, EngineInfo
from service.core.errors import ModelNotFound, NotServing, StartupError, VersionRefused
from service.core.postprocess import softmax
from service.core.results import AttentionMode, PredictionObserver, TextResult
from service.ops.metrics import Metrics
from service.versions.policy import VersionPolicy
from service.versions.store import no_versions

log = logging.getLogger(__name__)

T = TypeVar("T")

# texts of different lengths: alone and padded together they must agree (the mask's contract)
PARITY_TEXTS = (
    "A wonderful film.",
    "The plot drags on and on, and the ending is a letdown that nobody asked for.",
    "Not bad.",
    "I would not watch it again.",
)
# alone and padded in a batch, the same text's probabilities may differ by this much: float rounding
# for fp32; for int8, dynamic quantization scales activations by each batch's range, padding included
PARITY_TOLERANCE = {"fp32": 1e-3, "int8": 0.05}
# a shadow's sampled texts run in batches of up to SHADOW_BATCH, once the batch is full or its oldest
# text has waited SHADOW_MAX_WAIT_S, checked every SHADOW_TICK_S; at most SHADOW_PENDING texts wait
SHADOW_BATCH = 32
SHADOW_MAX_WAIT_S = 1.0
SHADOW_TICK_S = 0.05
SHADOW_PENDING = 512
LOAD_NICENESS = 10  # a version checked and warmed up while serving runs this much nicer (in_background)


def _give_back_memory() -> None:
    """Return freed heap pages to the system (glibc keeps them otherwise), so that RSS falls after an
    unload; a no-op where there is no malloc_trim."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


async def in_background(function: Callable[..., T], *args: object) -> T:
    """function(*args) in a thread of its own at a lower CPU priority (nice +LOAD_NICENESS, Linux):
    checking and warming up a version while serving must not take the cores from the calls being
    answered. A thread of its own because a thread's priority cannot always be raised back (without
    CAP_SYS_NICE); sessions are created before, at the usual priority, because the threads ONNX
    Runtime starts for a session inherit its creator's priority for the session's life."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the load was cancelled meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICENESS)
        except (OSError, AttributeError):  # not Linux, or not allowed: load at the usual priority
            pass
        try:
            result = function(*args)
        except BaseException as err:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, err)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="version-loader", daemon=True).start()
    return await done


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("shadow batches stopped: %r", task.exception())


def fingerprint(root: Path, version: int) -> tuple[tuple[str, int, int], ...]:
    """What a version directory looks like now (file names, sizes, modification times): a refused
    version is tried again only once it changed."""
    path = root / str(version)
    try:
        return tuple(
            sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
        )
    except OSError:
        return ()


class VersionObserver:
    """One version's batcher's metrics: the shared histograms, its own counters by version, and the
    queue depth summed over every version's queue."""

    def __init__(self, metrics: Metrics, version: int, depths: dict[int, int], serving: bool = True) -> None:
        self.metrics = metrics
        self.tag = str(version)
        self.version = version
        self.depths = depths
        self.serving = serving  # a shadow's batches stay out of the shared batch and queue metrics
        self.texts = metrics.version_texts.labels(self.tag)
        self.compute = metrics.version_compute_seconds.labels(self.tag)

    def batch_done(self, size: int, padded_length: int, real_tokens: int, seconds: float) -> None:
        if self.serving:
            self.metrics.batch_done(size, padded_length, real_tokens, seconds)
        self.texts.inc(size)
        self.compute.inc(seconds)

    def queue_wait(self, seconds: float) -> None:
        if self.serving:
            self.metrics.queue_wait(seconds)

    def dropped(self, reason: str, count: int) -> None:
        if self.serving:
            self.metrics.dropped(reason, count)

    def queue_depth(self, depth: int) -> None:
        self.depths[self.version] = depth if self.serving else 0
        self.metrics.queue_depth(sum(self.depths.values()))


class Loaded:
    """A version in the table, and the calls holding it."""

    def __init__(self, engine: Engine, observer: VersionObserver, shadow: bool) -> None:
        self.engine = engine
        self.observer = observer
        self.shadow = shadow
        self.calls = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @contextlib.contextmanager
    def hold(self) -> Iterator[Engine]:
        """The engine, counted as in use until the block ends: unloading waits for `idle`."""
        self.calls += 1
        self.idle.clear()
        try:
            yield self.engine
        finally:
            self.calls -= 1
            if not self.calls:
                self.idle.set()


class ModelRegistry:
    """The loaded versions of the one model this server serves; see the module's docstring."""

    def __init__(
        self,
        build: Callable[[int, VersionObserver, PredictionObserver | None], Engine],
        root: Path,
        name: str,
        policy: VersionPolicy,
        metrics: Metrics,
        predictions: PredictionObserver | None = None,
        shadow_share: float = 0.1,
        variant: str = "fp32",
        rng: random.Random | None = None,
    ) -> None:
        """build(version, batch observer, prediction observer) loads and checks one version
        (assembly.build_engine), raising ModelDirectoryError."""
        self._build = build
        self.root = root
        self.name = name
        self.policy = policy
        self.metrics = metrics
        self._predictions = predictions
        self.shadow_share = shadow_share
        self.variant = variant
        self._random = (rng or random.Random()).random
        self._loaded: dict[int, Loaded] = {}
        self._leaving: dict[int, tuple[int, Loaded]] = {}  # ticket -> (version, its entry): draining
        self._tickets = itertools.count()
        self._releases: set[asyncio.Task[None]] = set()
        self._applying = asyncio.Lock()  # one whole change of the loaded set at a time
        self.on_change: Callable[[], None] | None = None  # called when the default comes or goes
        self._depths: dict[int, int] = {}
        self._refused: dict[int, tuple[str, object]] = {}  # version -> (why, its fingerprint then)
        self._seen: dict[int, object] = {}  # version not loaded -> its fingerprint at the last poll
        self._changing = asyncio.Lock()
        self._pending: dict[int, list[tuple[str, str, float]]] = {}  # shadow -> (text, label, when)
        self._pumping: asyncio.Task[None] | None = None
        self.default_version = 0
        self.accepting = False
        self.draining = asyncio.Event()  # set once new work is refused: open streams close

    # what calls see ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.accepting and self.default_version in self._loaded

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

    def check_count(self, count: int) -> None:
        self.default().check_count(count)

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
        if not self.accepting:
            raise NotServing("the server is starting up or shutting down; retry (another replica)")
        with self._resolve(version).hold() as engine:
            yield engine

    # loading and unloading -----------------------------------------------------------------------

    def _engine(self, version: int, shadow: bool = False) -> Loaded:
        """Build one version and check its labels (blocking: it reads and hashes files and creates
        sessions); ModelDirectoryError or VersionRefused on failure."""
        observer = VersionObserver(self.metrics, version, self._depths, serving=not shadow)
        # a shadow's answers are compared, not monitored as traffic: no prediction observer
        engine = self._build(version, observer, None if shadow else self)
        reference = self._loaded.get(self.default_version) or next(iter(self._loaded.values()), None)
        if reference is not None and engine.spec.labels != reference.engine.spec.labels:
            raise VersionRefused(
                f"its labels {list(engine.spec.labels)} differ from the serving version's "
                f"{list(reference.engine.spec.labels)}: callers read answers by label"
            )
        return Loaded(engine, observer, shadow)

    def _vet(self, engine: Engine, warm: bool) -> None:
        """The parity run, then (warm) the warm-up: VersionRefused when the parity run fails."""
        parity(engine, PARITY_TOLERANCE[self.variant])
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
            self._loaded[version] = held
        self._settle_default()

    async def start(self) -> None:
        """Warm every loaded version up and start serving."""
        for held in list(self._loaded.values()):
            await held.engine.start()
            self._announce(held.engine, "loaded")
        self.accepting = True
        self._pumping = asyncio.get_running_loop().create_task(self._pump(), name="shadows")
        self._pumping.add_done_callback(_report_end)

    async def load(self, version: int, shadow: bool = False) -> bool:
        """Load `version` beside the others (or turn a loaded shadow into a serving version, or back);
        False when it was already loaded that way. VersionRefused when it fails a check. A caller
        that goes away does not stop a load half way: it completes, and holds the lock until then."""
        return await asyncio.shield(asyncio.get_running_loop().create_task(self._load(version, shadow)))

    async def _load(self, version: int, shadow: bool) -> bool:
        async with self._changing:
            held = self._loaded.get(version)
            if held is not None:
                if held.shadow == shadow:
                    return False
                held.shadow = shadow
                held.observer.serving = not shadow
                held.engine.observer = None if shadow else self
                self._pending.pop(version, None)
                self._event(version, "shadow" if shadow else "promoted")
                log.info("version %d is now %s", version, "a shadow" if shadow else "serving")
                self._settle_default()
                return True
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
                log.error("version %d refused, versions %s still serving: %s", version, self.loaded(), why)
                held = None  # the half-built sessions go, and their memory back to the system
                await asyncio.to_thread(_give_back_memory)
                raise VersionRefused(f"version {version} refused: {self._private(why)}") from None
            self._refused.pop(version, None)
            self._loaded[version] = held
            self._settle_default()
            self._announce(held.engine, "shadow" if shadow else "loaded", time.monotonic() - began)
            return True

    def _private(self, message: str) -> str:
        """`message` with the model root's path taken out: callers see versions, not this server's
        file system (the log keeps the whole path)."""
        return message.replace(f"{self.root}/", "").replace(str(self.root), "the model directory")

    async def unload(self, version: int, keep_one: bool = False) -> None:
        """Take `version` out of the table, let its calls finish, then release it. keep_one: never
        the last serving version (ModelNotFound for a version not loaded). The release is the
        registry's own task: a caller that goes away does not leave a version half released."""
        async with self._changing:
            held = self._loaded.get(version)
            if held is None:
                raise ModelNotFound(f"version {version} is not loaded; loaded: {self.loaded()}")
            if keep_one and not held.shadow and self.loaded() == [version]:
                log.warning("version %d stays: it is the only version serving", version)
                return
            ticket = next(self._tickets)
            self._leaving[ticket] = (version, self._loaded.pop(version))
            self._pending.pop(version, None)
            self._settle_default()
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
        if version not in self._loaded:  # not loaded again meanwhile: its series go
            self._depths.pop(version, None)
            info_labels = self._info_labels(engine)
            self.metrics.model.labels(*info_labels).set(0)  # workers' shared files keep removed series
            self.metrics.model.remove(*info_labels)
        del self._leaving[ticket], held, engine  # the sessions go with the last reference
        await asyncio.to_thread(_give_back_memory)
        self._event(version, "unloaded")
        log.info(
            "version %d unloaded after %.2f s; loaded: %s", version, time.monotonic() - began, self.loaded()
        )

    async def unload_all(self) -> None:
        """Unload every version, shadows included (calls are then UNAVAILABLE)."""
        async with self._applying:
            for version in [*self.loaded(), *self.shadows()]:
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
            for version in sorted(set(self.loaded()) - set(wanted)):
                with contextlib.suppress(ModelNotFound):  # unloaded meanwhile
                    await self.unload(version)
            return []

    async def _load_all(self, wanted: Sequence[int]) -> list[str]:
        failures = []
        for version in sorted(set(wanted) - set(self.loaded()), reverse=True):  # a shadow is promoted
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
        available = versions(self.root)
        settled = []  # versions not loaded whose files are as they were at the last poll
        for version in available:
            if version in self._loaded:
                continue
            now = await asyncio.to_thread(fingerprint, self.root, version)
            refused = self._refused.get(version)
            if self._seen.get(version) == now and (refused is None or refused[1] != now):
                settled.append(version)
            self._seen[version] = now
        for gone in set(self._seen) - set(available):
            del self._seen[gone]
        await self._load_all(self.policy.choose([*self.loaded(), *settled]))
        loadable = [v for v in available if v in self._loaded or (v in settled and v not in self._refused)]
        wanted = self.policy.choose(loadable)
        for version in sorted(set(self.loaded()) - set(wanted)):
            await self.unload(version, keep_one=True)

    async def follow(self, interval_s: float) -> None:
        """--model-control poll: refresh from the model root every interval, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # a bad poll must not end polling
                log.exception("reading the model root %s failed; polling goes on", self.root)

    def _settle_default(self) -> None:
        serving = self.loaded()
        new = serving[-1] if serving else 0
        if new != self.default_version:
            old, self.default_version = self.default_version, new
            self.metrics.default_version.set(new)
            if new:
                self._event(new, "default")
            if old:
                log.info("default version %s -> %s", old, new or "none")
            if (not old or not new) and self.on_change is not None:
                self.on_change()  # serving, or not: health follows

    def _event(self, version: int, event: str) -> None:
        self.metrics.version_events.labels(str(version), event).inc()

    def _info_labels(self, engine: Engine) -> tuple[str, ...]:
        """A version's sentiment_model_info labels: name, version, provider, variant, labels."""
        spec = engine.spec
        return (spec.name, str(spec.version), engine.info().provider, self.variant, ",".join(spec.labels))

    def _announce(self, engine: Engine, event: str, seconds: float | None = None) -> None:
        spec, info = engine.spec, engine.info()
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
            self.loaded(),
            self.default_version,
            self.shadows(),
        )

    # shadows -------------------------------------------------------------------------------------

    def predicted(self, texts: Sequence[str], results: Sequence[TextResult], version: int) -> None:
        """The serving observers, then the shadow tap: the texts of a sampled share of the default
        version's answered calls, with the labels they got, wait for each shadow's next batch."""
        if self._predictions is not None:
            self._predictions.predicted(texts, results, version)
        if version != self.default_version or not self.shadow_share:
            return
        now = time.monotonic()
        for shadow in self.shadows():
            if self._random() >= self.shadow_share:
                continue
            pending = self._pending.setdefault(shadow, [])
            if len(pending) + len(texts) > SHADOW_PENDING:  # the replica has had no lull for a while
                self.metrics.shadow_skipped.labels(str(shadow), "busy").inc()
                continue
            pending.extend((text, result.label, now) for text, result in zip(texts, results, strict=True))

    async def _pump(self) -> None:
        """Run each shadow's waiting texts as batches, one batch at a time, and only at a moment the
        serving version is idle (no round running, no text waiting): callers come first, and the
        shadow uses the lulls. A batch goes once it is full or its oldest text has waited
        SHADOW_MAX_WAIT_S, so that a shadow runs batches about as large as the serving version's,
        not one text at a time."""
        while True:
            await asyncio.sleep(SHADOW_TICK_S)
            for version in self.shadows():
                pending = self._pending.get(version)
                if not pending or not self.accepting:
                    continue
                ripe = len(pending) >= SHADOW_BATCH or time.monotonic() - pending[0][2] >= SHADOW_MAX_WAIT_S
                serving = self._loaded.get(self.default_version)
                if not ripe or (serving is not None and not serving.engine.batcher.idle):
                    continue
                held = self._loaded[version]
                size = min(SHADOW_BATCH, held.engine.info().max_texts)
                batch, pending[:size] = pending[:size], []
                await self._shadow(version, [text for text, _, _ in batch], [label for _, label, _ in batch])

    async def _shadow(self, version: int, texts: list[str], labels: list[str]) -> None:
        held = self._loaded.get(version)
        if held is None or not held.shadow:
            return
        tag = str(version)
        began = time.monotonic()
        try:
            with held.hold() as engine:
                results = await engine.predict(texts, AttentionMode.NONE, None)
        except Exception as err:  # a failing shadow costs its sample, never a caller
            self.metrics.shadow_skipped.labels(tag, "failed").inc()
            log.warning("a shadow batch on version %d failed: %s", version, err)
            return
        self.metrics.shadow_seconds.labels(tag).observe(time.monotonic() - began)
        agreed = sum(r.label == label for r, label in zip(results, labels, strict=True))
        self.metrics.shadow_texts.labels(tag, "agree").inc(agreed)
        self.metrics.shadow_texts.labels(tag, "disagree").inc(len(labels) - agreed)

    # stopping ------------------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        self.accepting = False
        self.draining.set()
        for held in self._loaded.values():
            held.engine.stop_accepting()

    async def stop(self) -> None:
        """Answer everything accepted on every version, then stop them."""
        self.stop_accepting()
        if self._pumping is not None:
            self._pumping.cancel()
            await asyncio.gather(self._pumping, return_exceptions=True)
        await asyncio.gather(*self._releases, return_exceptions=True)  # unloads in progress finish
        await asyncio.gather(*(held.engine.stop() for held in self._loaded.values()))

    def index(self) -> list[tuple[int, str, str]]:
        """(version, state, reason) for every version under the model root and every loaded one:
        READY (serving, or a shadow), UNAVAILABLE (not loaded, or refused: the reason says)."""
        rows = []
        for version in sorted(set(versions(self.root)) | set(self._loaded)):
            held = self._loaded.get(version)
            if held is not None:
                reason = "shadow" if held.shadow else ("default" if version == self.default_version else "")
                rows.append((version, "READY", reason))
            elif version in self._refused:
                rows.append((version, "UNAVAILABLE", f"refused: {self._refused[version][0]}"))
            else:
                rows.append((version, "UNAVAILABLE", f"not chosen by the version policy {self.policy}"))
        return rows


def check_claims(engine: Engine) -> None:
    """VersionRefused unless the graph is what config.json says it is: its attention as many layers
    and heads deep, and its vocabulary as large as the tokenizer's and the config's (metadata, the
    answer-size policy and the tokenizer's ids all trust these figures)."""
    spec = engine.spec
    vocab = engine.preprocessor.tokenizer.get_vocab_size()
    if vocab != spec.vocab_size:
        raise VersionRefused(
            f"config.json claims a vocabulary of {spec.vocab_size}; tokenizer.json holds {vocab}"
        )
    ids = np.array([[1, spec.vocab_size - 1, 1]], dtype=np.int64)
    try:
        _, attentions = engine.model.run(ids, np.ones_like(ids), with_attention=True)
    except Exception as err:  # ONNX Runtime's own error: an id past the graph's embedding table
        raise VersionRefused(
            f"the graph cannot read token id {spec.vocab_size - 1} of the claimed vocabulary of "
            f"{spec.vocab_size}: {str(err)[:200]}"
        ) from None
    assert attentions is not None
    depth = tuple(attentions.shape[1:3])
    if depth != (spec.num_layers, spec.num_heads):
        raise VersionRefused(
            f"config.json claims {spec.num_layers} layers x {spec.num_heads} heads; the graph's attention "
            f"has {depth[0]} x {depth[1]}"
        )


def parity(engine: Engine, tolerance: float = PARITY_TOLERANCE["fp32"]) -> None:
    """VersionRefused unless the graph is what its config claims (check_claims) and the model gives
    the same probabilities (within `tolerance`) for texts alone and padded in one batch, and those
    are probabilities (finite, summing to 1)."""
    check_claims(engine)
    encoded = engine.preprocessor.encode(list(PARITY_TEXTS))
    sequences = [e.ids for e in encoded]
    ids, mask = pad(sequences)
    logits, _ = engine.model.run(ids, mask, with_attention=False)
    together = softmax(logits)
    for row, sequence in enumerate(sequences):
        one_ids, one_mask = pad([sequence])
        alone = softmax(engine.model.run(one_ids, one_mask, with_attention=False)[0])[0]
        if not np.all(np.isfinite(alone)) or abs(float(alone.sum()) - 1) > 1e-3:
            raise VersionRefused(f"its outputs for a parity text are not probabilities: {alone.tolist()}")
        gap = float(np.abs(alone - together[row]).max())
        if gap > tolerance:
            raise VersionRefused(
                f"a text padded in a batch gets probabilities {gap:.4f} away from the same text alone "
                f"(at most {tolerance} allowed): the graph does not honour the padding mask"
            )
