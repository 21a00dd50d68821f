"""Where a call's time goes: a py-spy profile of the server under load (64 callers by default).

    python -m bench.profile --model-dir models/sentiment [--duration 20] [--callers 64]

Starts the server (defaults, fp32 unless --server-flags say otherwise), drives single-text callers
over KServe v2 gRPC (bench.loadgen) and, while they run, samples the server with py-spy twice:
once as collapsed stacks (summarised here: each thread's busy share, the functions that hold the
event loop, what the worker threads do) and once as a flame graph,
bench/figures/profile_<callers>.svg. Also reads each thread's CPU time from /proc, as milliseconds
of CPU per request. Writes bench/profile_<callers>.json (docs/batching.md quotes it). Asserts
nothing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import ROOT, python, sentences_file, server_args, start, stop

FIGURES = ROOT / "bench" / "figures"
PY_SPY = str(Path(sys.executable).with_name("py-spy"))  # the dev extra's binary, beside this Python
THREAD = re.compile(r"thread \((\d+)\): (.*)")  # py-spy's first frame: the thread, id and name
LINE = re.compile(r":\d+\)")  # a frame's line number, dropped so a function is one entry


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def summarise(raw: Path, rate: int, seconds: float) -> dict[str, Any]:
    """Busy share per thread, and the heaviest functions (inclusive) of the event loop's thread and
    of the worker threads, as shares of the samples one thread could give."""
    threads: collections.Counter[str] = collections.Counter()
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    names: dict[int, str] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        head = THREAD.fullmatch(frames[0])
        tid, thread = (int(head.group(1)), head.group(2)) if head else (0, frames[0])
        names[tid] = thread
        thread = "onnxruntime workers" if thread.startswith("onnxruntime") else thread
        threads[thread] += int(count)
        for frame in dict.fromkeys(LINE.sub(")", f) for f in frames[1:]):
            inclusive[thread][frame] += int(count)
    possible = rate * seconds
    return {
        "thread_names": names,
        "busy_share_by_thread": {name: n / possible for name, n in threads.most_common()},
        "heaviest": {
            name: {frame: n / possible for frame, n in inclusive[name].most_common(25)}
            for name in ("MainThread", "onnxruntime workers")
            if name in inclusive
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of load; py-spy samples most of it"
    )
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--server-flags", default="")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    args = parser.parse_args()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    texts = sentences_file(out, args.cache_dir, 1000)
    server, port = start(python(*server_args(args.model_dir, *args.server_flags.split())))
    sample_s = max(2.0, (args.duration - 6) / 2)
    try:
        load = subprocess.Popen(
            python(
                *("bench.loadgen", "--target", f"127.0.0.1:{port}", "--sentences", str(texts)),
                *("--protocol", "v2", "--concurrency", str(args.callers)),
                *(("--channels", "4", "--processes", "2") if args.callers >= 16 else ()),
                *("--duration", str(args.duration)),
            ),
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        time.sleep(4)  # the load generator's parts connect and warm up
        before = thread_cpu(server.pid)
        with tempfile.TemporaryDirectory() as scratch:
            raw = Path(scratch) / "stacks.txt"
            spy = [PY_SPY, "record", "-p", str(server.pid), "-r", str(args.rate)]
            spy += ["-d", str(int(sample_s)), "--threads", "--nonblocking"]
            subprocess.run([*spy, "-f", "raw", "-o", str(raw)], check=True, capture_output=True)
            after = thread_cpu(server.pid)
            figure = FIGURES / f"profile_{args.callers}.svg"
            subprocess.run([*spy, "-f", "flamegraph", "-o", str(figure)], check=True, capture_output=True)
            summary = summarise(raw, args.rate, int(sample_s))
        result, _ = load.communicate()
        figures = json.loads(result.strip().splitlines()[-1])
    finally:
        stop(server)
    requests_in_window = figures["sentences_per_s"] * int(sample_s)
    cpu = sorted(((after[t] - before.get(t, 0.0), t) for t in after), reverse=True)
    names = summary.pop("thread_names")
    summary["cpu_ms_per_request_by_thread"] = {
        names.get(tid, f"thread {tid}"): 1000 * seconds / requests_in_window
        for seconds, tid in cpu
        if seconds > 0.01
    }
    summary["load"] = figures
    print(
        f"{args.callers} callers: {figures['sentences_per_s']:.0f} requests/s, p50 {figures['p50_ms']:.1f} ms"
    )
    print("busy share of each thread's time (sampled):")
    for name, share in summary["busy_share_by_thread"].items():
        print(f"  {name:<28} {share:6.1%}")
    print("CPU per request, by thread (from /proc):")
    for name, ms in summary["cpu_ms_per_request_by_thread"].items():
        print(f"  {name:<28} {ms:6.2f} ms")
    for thread, frames in summary["heaviest"].items():
        print(f"heaviest functions of {thread} (share of that thread's time):")
        for frame, share in list(frames.items())[:15]:
            print(f"  {share:6.1%}  {frame}")
    path = ROOT / "bench" / f"profile_{args.callers}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {figure} and {path}")


if __name__ == "__main__":
    main()
