"""How much memory this process may use: its cgroup's limit, else what the machine has available,
and how many server processes of a given model fit in it."""

from __future__ import annotations

from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/memory.max")  # "max" or bytes
CGROUP_V1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")  # a huge number when unlimited
MEMINFO = Path("/proc/meminfo")

# one server process before its model: Python, gRPC, ONNX Runtime, the tokenizer, the batcher
PROCESS_BYTES = 160 * 2**20
# each ONNX Runtime session holds its own copy of the weights, plus room for a batch's activations
SESSION_OVERHEAD = 1.5
# what the group may take of the limit: the rest is for the page cache, the parent and spikes
USABLE_SHARE = 0.9


def _available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_limit_bytes(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1, meminfo: Path = MEMINFO) -> int | None:
    """The cgroup's memory limit, or the machine's available memory when the cgroup sets none (or
    sets more); None when neither can be read."""
    available = _available(meminfo)
    limit: int | None = None
    for path in (v2, v1):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text != "max":
            try:
                limit = int(text)
            except ValueError:
                continue
        break
    if limit is None or (available is not None and available < limit):
        return available
    return limit


def process_bytes(model_file_bytes: int, sessions: int) -> int:
    """An upper estimate of one server process's memory with `sessions` sessions of the model."""
    return PROCESS_BYTES + int(sessions * model_file_bytes * SESSION_OVERHEAD)


def processes_that_fit(limit_bytes: int, per_process_bytes: int) -> int:
    """How many processes of `per_process_bytes` the usable share of `limit_bytes` holds."""
    return int(limit_bytes * USABLE_SHARE) // per_process_bytes
