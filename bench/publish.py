"""Turns bench/results.json into bench/RESULTS.md and the plots in bench/figures/.

python -m bench.publish [bench/results.json]   # re-render without re-measuring
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NAMES = {
    "ours_fp32": "this server (fp32)",
    "ours_int8": "this server (int8)",
    "mlserver_batching": "MLServer 1.7.1, adaptive batching 32 / 5 ms",
    "mlserver_no_batching": "MLServer 1.7.1, batching off",
    "ours_fp32_http": "this server (fp32), HTTP",
    "mlserver_batching_http": "MLServer 1.7.1, adaptive batching, HTTP",
}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def ratio(value: float, goal: str, met: bool) -> str:
    return f"{value:.2f} (goal {goal}: {'met' if met else 'not met'})"


def plots(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, figures in report["systems"].items():
        callers = sorted(figures["closed"], key=int)
        axis.plot(
            [int(c) for c in callers],
            [figures["closed"][c]["sentences_per_s"] for c in callers],
            marker="o",
            label=NAMES.get(name, name),
        )
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrent callers (closed loop, one text per request)")
    axis.set_ylabel("sentences / s")
    axis.set_title("Throughput against concurrency")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "throughput.png", dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=False)
    for index, key in enumerate(("p50_ms", "p99_ms")):
        axis = axes[index]
        for name, figures in report["systems"].items():
            loads = sorted(figures["open"], key=float)
            axis.plot(
                [figures["open"][x]["offered_per_s"] for x in loads],
                [figures["open"][x][key] for x in loads],
                marker="o",
                label=NAMES.get(name, name),
            )
        axis.set_xlabel("offered sentences / s (Poisson; 25 to 90% of capacity)")
        axis.set_ylabel(f"{key[:3]} latency, ms")
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_title(f"{key[:3]} latency against offered load")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)
    plt.close(figure)


def targets(report: dict[str, Any]) -> list[str]:
    systems = report["systems"]
    if "ours_fp32" not in systems:
        return []
    ours = systems["ours_fp32"]
    lines = []
    peers = [systems[n] for n in ("mlserver_batching", "mlserver_no_batching") if n in systems]
    if peers:
        best = max(peers, key=lambda p: p["closed"]["64"]["sentences_per_s"])
        throughput = ours["closed"]["64"]["sentences_per_s"] / best["closed"]["64"]["sentences_per_s"]
        p99 = ours["closed"]["64"]["p99_ms"] / best["closed"]["64"]["p99_ms"]
        lines.append(
            f"| 64 callers: throughput / MLServer's best | {ratio(throughput, '>= 2', throughput >= 2)} |"
        )
        lines.append(f"| 64 callers: p99 / that MLServer's p99 | {ratio(p99, '<= 0.5', p99 <= 0.5)} |")
    floor = report["ort_batch1"]["p50_ms_per_run"] + report["empty_server"]["1"]["p50_ms"]
    one = ours["closed"]["1"]["p50_ms"] / floor
    lines.append(
        f"| 1 caller: p50 / (ONNX Runtime batch-1 p50 + empty server p50 = {floor:.1f} ms) "
        f"| {ratio(one, '<= 1.1', one <= 1.1)} |"
    )
    open75 = ours["open"]["0.75"]["p99_ms"] / ours["closed"]["1"]["p50_ms"]
    lines.append(f"| open load at 75% of capacity: p99 / 1-caller p50 | {ratio(open75, '< 4', open75 < 4)} |")
    return lines + http_targets(systems)


def http_targets(systems: dict[str, Any]) -> list[str]:
    """HTTP against this server's gRPC and MLServer's HTTP; goodput on both protocols."""
    lines = []

    def at64(name: str, key: str) -> float:
        value: float = systems[name]["closed"]["64"][key]
        return value

    if {"ours_fp32", "ours_fp32_http"} <= set(systems):
        share = at64("ours_fp32_http", "sentences_per_s") / at64("ours_fp32", "sentences_per_s")
        lines.append(
            f"| 64 callers: HTTP throughput / gRPC throughput | {ratio(share, '>= 0.8', share >= 0.8)} |"
        )
    if {"ours_fp32_http", "mlserver_batching_http"} <= set(systems):
        times = at64("ours_fp32_http", "sentences_per_s") / at64("mlserver_batching_http", "sentences_per_s")
        lines.append(
            f"| 64 callers, HTTP: throughput / MLServer's HTTP | {ratio(times, '>= 2', times >= 2)} |"
        )
        p99 = at64("ours_fp32_http", "p99_ms") / at64("mlserver_batching_http", "p99_ms")
        lines.append(f"| 64 callers, HTTP: p99 / MLServer's HTTP p99 | {ratio(p99, '<= 0.5', p99 <= 0.5)} |")
    for ours, theirs, protocol in (
        ("ours_fp32", "mlserver_batching", "gRPC"),
        ("ours_fp32_http", "mlserver_batching_http", "HTTP"),
    ):
        if {ours, theirs} <= set(systems) and "goodput" in systems[ours] and "goodput" in systems[theirs]:
            mine, peer = systems[ours]["goodput"]["rate_per_s"], systems[theirs]["goodput"]["rate_per_s"]
            times = mine / peer if peer else float("inf")
            lines.append(
                f"| goodput at p99 <= 100 ms, {protocol}: this server / MLServer "
                f"| {ratio(times, '>= 2', times >= 2)} |"
            )
    return lines


def write(report: dict[str, Any], out: Path) -> None:
    report = json.loads(json.dumps(report))  # keys as strings, as in results.json
    (out / "figures").mkdir(parents=True, exist_ok=True)
    plots(report, out / "figures")
    machine = report["machine"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench report`; re-render with `python -m bench.publish`. One run, one",
        "machine, every system called one after the other by the same load generator over KServe v2",
        "ModelInfer, on gRPC or, where the system says HTTP, JSON over HTTP/1.1 (one text per request",
        "unless said). Shared machines are noisy: read the ratios.",
        "",
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, onnxruntime {machine['onnxruntime']}, grpcio {machine['grpcio']}, "
        f"MLServer {machine['mlserver']}; {machine['date']}.",
        f"- Model: {machine['model']} (preset {machine['model_preset']}, {machine['model_base']}, "
        f"max_length {machine['max_length']}), the same model.onnx and tokenizer.json for every system.",
        f"- {report['duration_s']:.0f} s per load point. Long mix: "
        f"{report.get('long_fraction', 0.25):.0%} of texts are "
        "reviews of 100 to 400 tokens (truncated to max_length by every system alike).",
        "- Ceilings: ONNX Runtime alone, batch 1, every core: p50 "
        f"{report['ort_batch1']['p50_ms_per_run']:.1f} ms per run, "
        f"{report['ort_batch1']['sentences_per_s']:.0f} sentences/s; an empty grpc.aio server: "
        f"1 caller p50 {report['empty_server']['1']['p50_ms']:.2f} ms, 64 callers "
        f"{report['empty_server']['64']['sentences_per_s']:.0f} requests/s.",
        "",
        "## Targets",
        "",
        "| target | measured |",
        "|---|---|",
        *targets(report),
        "",
        "## Closed loop (callers send again as soon as they are answered)",
        "",
        "| system | callers | sentences/s | p50 ms | p99 ms | batch size | padding | client CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in report["systems"].items():
        rows = [(c, figures["closed"][c]) for c in sorted(figures["closed"], key=int)]
        rows.append(("64, long mix", figures["long_mix_64"]))
        for callers, row in rows:
            lines.append(
                f"| {NAMES.get(name, name)} | {callers} | {row['sentences_per_s']:.0f} | {ms(row['p50_ms'])} "
                f"| {ms(row['p99_ms'])} | {ms(row.get('mean_batch_size'))} "
                f"| {percent(row.get('mean_padding'))} "
                f"| {row['client_cpu_cores']:.2f} |"
            )
    lines += [
        "",
        "## Open loop (Poisson arrivals at a share of each system's own capacity)",
        "",
        "Latency counts from each call's planned arrival. Capacity is the system's best closed-loop rate.",
        "",
        "| system | load | offered/s | served/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in report["systems"].items():
        for load in sorted(figures["open"], key=float):
            row = figures["open"][load]
            lines.append(
                f"| {NAMES.get(name, name)} | {float(load):.0%} | {row['offered_per_s']:.0f} "
                f"| {row['sentences_per_s']:.0f} | {ms(row['p50_ms'])} | {ms(row['p90_ms'])} "
                f"| {ms(row['p99_ms'])} | {sum(row['errors'].values())} |"
            )
    lines += [
        "",
        "## Goodput (the highest Poisson arrival rate whose p99 stays within 100 ms)",
        "",
        "Bisected between the open-loop points; one text per request; no call may fail.",
        "",
        "| system | requests/s | p99 ms there |",
        "|---|---|---|",
    ]
    for name, figures in report["systems"].items():
        if "goodput" in figures:
            good = figures["goodput"]
            lines.append(f"| {NAMES.get(name, name)} | {good['rate_per_s']:.0f} | {ms(good['p99_ms'])} |")
    errors = {
        name: {k: v for k, v in f["closed"]["64"]["errors"].items()} for name, f in report["systems"].items()
    }
    lines += [
        "",
        "![throughput against concurrency](figures/throughput.png)",
        "",
        "![latency against offered load](figures/latency.png)",
        "",
        f"Errors at 64 callers: {json.dumps(errors)}.",
        "",
    ]
    (out / "RESULTS.md").write_text("\n".join(lines))


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results.json"
    write(json.loads(path.read_text()), path.parent)


if __name__ == "__main__":
    main()
