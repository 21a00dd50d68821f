"""Vetting a version before it serves, off the callers' path: the engine's own checks (its graph is
what its config claims, and padding changes nothing) at a tolerance for its variant, run at a lower
CPU priority while serving; and memory given back after a version goes."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from service.core.engine import Engine

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
LOAD_NICENESS = 10  # a version checked and warmed up while serving runs this much nicer (in_background)


def parity(engine: Engine, tolerance: float = PARITY_TOLERANCE["fp32"]) -> None:
    """VersionRefused unless the engine's graph is what its config claims and gives the parity texts
    the same probabilities (within `tolerance`) alone and padded in one batch."""
    engine.vet(PARITY_TEXTS, tolerance)


def give_back_memory() -> None:
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
