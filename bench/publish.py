"""Turns bench/results.json into bench/RESULTS.md and the plots in bench/figures/.

python -m bench.publish [bench/results.json]   # re-render without re-measuring
"""

from __future__ import annotations

import json
import statistics
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
    "naive": "naive server (ONNX Runtime per request, thread pool)",
}
MLSERVER_GRPC = ("mlserver_batching", "mlserver_no_batching")


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
    """The goals, each as a ratio measured in this run."""
    systems = report["systems"]
    if "ours_fp32" not in systems:
        return []
    ours = systems["ours_fp32"]
    lines = []

    def row(text: str, value: float, goal: str, met: bool) -> None:
        lines.append(f"| {text} | {ratio(value, goal, met)} |")

    def goodput(name: str, target: str = "100") -> float:
        rate: float = systems[name]["goodput"][target]["rate_per_s"]
        return rate

    peers = [name for name in MLSERVER_GRPC if name in systems]
    for target in ("100", "50"):
        if peers:
            best = max(goodput(name, target) for name in peers)
            value = goodput("ours_fp32", target) / best if best else float("inf")
            row(
                f"goodput at p99 <= {target} ms, gRPC: this server / MLServer's best",
                value,
                ">= 2",
                value >= 2,
            )
        if {"ours_fp32_http", "mlserver_batching_http"} <= set(systems):
            theirs = goodput("mlserver_batching_http", target)
            value = goodput("ours_fp32_http", target) / theirs if theirs else float("inf")
            row(f"goodput at p99 <= {target} ms, HTTP: this server / MLServer's", value, ">= 2", value >= 2)
        if "naive" in systems:
            theirs = goodput("naive", target)
            value = goodput("ours_fp32", target) / theirs if theirs else float("inf")
            row(
                f"goodput at p99 <= {target} ms: this server / the naive server",
                value,
                ">= 1.3",
                value >= 1.3,
            )
    one = ours["closed"]["1"]["p50_ms"]
    if "ours_fp32_http" in systems:
        value = systems["ours_fp32_http"]["closed"]["1"]["p50_ms"] / one
        row("1 caller: HTTP p50 / gRPC p50", value, "<= 1.3", value <= 1.3)
    if "naive" in systems:
        value = one / systems["naive"]["closed"]["1"]["p50_ms"]
        row("1 caller: gRPC p50 / the naive server's p50", value, "<= 1", value <= 1)
    at64 = ours["closed"]["64"]
    if "ort_sorted32" in report:
        value = at64["sentences_per_s"] / report["ort_sorted32"]["sentences_per_s"]
        row(
            "64 callers: throughput / ONNX Runtime alone on length-sorted batches of 32",
            value,
            ">= 0.9",
            value >= 0.9,
        )
    if peers:
        best = max(peers, key=lambda name: systems[name]["closed"]["64"]["sentences_per_s"])
        value = at64["sentences_per_s"] / systems[best]["closed"]["64"]["sentences_per_s"]
        row("64 callers: throughput / MLServer's best", value, ">= 2", value >= 2)
        value = at64["p99_ms"] / systems[best]["closed"]["64"]["p99_ms"]
        row("64 callers: p99 / that MLServer's p99", value, "<= 0.5", value <= 0.5)
    if "ours_fp32_http" in systems:
        value = systems["ours_fp32_http"]["closed"]["64"]["sentences_per_s"] / at64["sentences_per_s"]
        row("64 callers: HTTP throughput / gRPC throughput", value, ">= 0.8", value >= 0.8)
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
        "machine, every system started at once and called in turn by the same load generator over",
        "KServe v2 ModelInfer, the order rotated by one system at each load point, on gRPC or, where",
        "the system says HTTP, JSON over HTTP/1.1 (one text per request unless said). Shared machines",
        "are noisy: read the ratios.",
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
        f"{report['ort_batch1']['sentences_per_s']:.0f} sentences/s; on length-sorted batches of 32, "
        f"two threads side by side: {report.get('ort_sorted32', {}).get('sentences_per_s', 0):.0f} "
        "sentences/s; an empty grpc.aio server: "
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
        "## Goodput (the highest Poisson arrival rate whose p99 stays within a latency target)",
        "",
        "Bisected from the open-loop points; one text per request; no call may fail.",
        "",
        "| system | p99 <= 100 ms: requests/s | p99 there, ms | p99 <= 50 ms: requests/s | p99 there, ms |",
        "|---|---|---|---|---|",
    ]
    for name, figures in report["systems"].items():
        good = figures.get("goodput", {})
        if {"100", "50"} <= set(good):
            cells = " | ".join(
                f"{good[t]['rate_per_s']:.0f} | {ms(good[t]['p99_ms'])}" for t in ("100", "50")
            )
            lines.append(f"| {NAMES.get(name, name)} | {cells} |")
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
    (out / "RESULTS.md").write_text("\n".join(lines) + own_runs(out))


BULK_TITLE = "## Bulk scoring"
PRIORITY_TITLE = "## Priorities: interactive callers beside a bulk flood"
LONG_TITLE = "## Long texts: cut or read whole"
EXPLAIN_TITLE = "## Explanations: what one costs, and what a flood of them costs others"
PRESETS_TITLE = "## Presets: the default model beside `large`"
OWN_TITLES = (BULK_TITLE, PRIORITY_TITLE, LONG_TITLE, EXPLAIN_TITLE, PRESETS_TITLE)


def own_report(out: Path, name: str) -> dict[str, Any] | None:
    """bench/NAME.json, the figures of a bench run on its own, when there is one."""
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def own_runs(out: Path) -> str:
    """RESULTS.md's last sections, each from a bench of its own run: bulk scoring, priorities, long
    texts, explanations, presets."""
    return (
        bulk_section(out)
        + priority_section(out)
        + long_texts_section(out)
        + explain_section(out)
        + presets_section(out)
    )


def presets_section(out: Path) -> str:
    """From bench/presets.json (`python -m bench presets`), when there is one."""
    report = own_report(out, "presets")
    if report is None:
        return ""
    models = report["models"]
    lines = [
        "",
        PRESETS_TITLE,
        "",
        f"`python -m bench presets`, its own run ({report['date']}): each version on each graph named, "
        "one after the other, which goes first changing each round; "
        f"medians over {report['rounds']} rounds, the movie test snippets. ONNX Runtime alone runs "
        "in-process without RPC: one text per run on one thread, and batches of 32 sorted by length, "
        "two runs side by side. The server runs its defaults. Raw figures: bench/presets.json.",
        "",
        "| model | graph | ORT alone, 1 text per run | ORT alone, sorted batches of 32 | server, 1 caller: "
        "p50 / p99 | server, 64 callers: texts/s, p99 |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in models.items():
        f = model["figures"]
        graph = model["variant"] + (f" ({model['int8_plan']})" if model["variant"] == "int8" else "")
        lines.append(
            f"| {name} (`{model['preset']}`) | {graph}, {model['graph_bytes'] / 1e6:.0f} MB | "
            f"{f['ort_batch1']['sentences_per_s']:.0f} texts/s | {f['ort_sorted32']['sentences_per_s']:.0f} "
            f"texts/s | {ms(f['server_1_caller']['p50_ms'])} / {ms(f['server_1_caller']['p99_ms'])} ms | "
            f"{f['server_64_callers']['sentences_per_s']:.0f}, {ms(f['server_64_callers']['p99_ms'])} ms |"
        )
    lines.append("")
    for graph, ratios in report["large_over_default"].items():
        lines.append(
            f"- `large` against the default, {graph}: {ratios['ort_batch1_texts_per_s']:.2f}x the texts per "
            f"second one at a time, {ratios['ort_sorted32_texts_per_s']:.2f}x in sorted batches, "
            f"{ratios['server_1_caller_p50']:.2f}x the lone caller's median, "
            f"{ratios['server_64_callers_texts_per_s']:.2f}x the texts per second at 64 callers."
        )
    served = {m["preset"]: m["auto_serves"] for m in models.values()}
    lines.append(
        "- `--variant auto` serves these builds as: "
        + ", ".join(f"`{preset}` {variant}" for preset, variant in served.items())
        + "."
    )
    return "\n".join([*lines, ""])


def explain_section(out: Path) -> str:
    """From bench/explain.json (`python -m bench explain`), when there is one."""
    report = own_report(out, "explain")
    if report is None:
        return ""
    latency = report["latency"]
    lines = [
        "",
        EXPLAIN_TITLE,
        "",
        f"`python -m bench explain`, its own run ({report['date']}): one server, model preset "
        f"{report['model']}, its defaults, `--variant {report.get('variant', 'auto')}`. Texts of about 30 "
        "words, one caller, one call at a time, the server otherwise idle; medians over "
        f"{report['rounds']} rounds. Raw figures: bench/explain.json.",
        "",
        "| answer | words explained (mean) | model passes (mean) | p50 | p90 | worst |",
        "|---|---|---|---|---|---|",
    ]
    for name, title in (
        ("plain", "plain"),
        ("shapley", "explained: Shapley (default)"),
        ("occlusion", "explained: occlusion"),
    ):
        row = latency[name]
        lines.append(
            f"| {title} | {row.get('words_mean', '')} | {row.get('passes_mean', '')} | "
            f"{row['p50_ms']:.1f} ms | {row['p90_ms']:.1f} ms | {row['max_ms']:.1f} ms |"
        )
    flood = report["flood_callers"]
    lines += [
        "",
        f"Other callers beside a flood: an interactive probe (one short text per request, Poisson at "
        f"{report['probe_rate_per_s']:g}/s for {report['duration_s']:g} s) alone; beside {flood} callers "
        "asking, closed loop, for the Shapley explanation of one snippet at a time; and beside "
        f"{flood} callers sending plain requests of the same work ({report['plain_flood_texts_per_request']} "
        "snippets each: an explanation reads twice as many variants as the text has words, of half its "
        "length on average).",
        "",
        "| probe | p50 | p99 | p99 over alone | flood requests served per s | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, title in (
        ("alone", "alone"),
        ("explanations", "beside the explanations"),
        ("plain", "beside plain requests of the same work"),
    ):
        row = report[f"probe_{name}"]
        ratio = report["probe_p99_over_alone"].get(name)
        lines.append(
            f"| {title} | {row['probe_p50_ms']:.1f} ms | {row['probe_p99_ms']:.1f} ms | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | {row.get('flood_requests_per_s', '')} | "
            f"{row['probe_errors']:.0f} |"
        )
    return "\n".join([*lines, ""])


def long_texts_section(out: Path) -> str:
    """From bench/long_texts.json (`python -m bench.long_texts`), when there is one."""
    report = own_report(out, "long_texts")
    if report is None:
        return ""
    lines = [
        "",
        LONG_TITLE,
        "",
        f"`python -m bench.long_texts` ({report['date']}, model preset {report['model']}, fp32): accuracy "
        "in % on the texts of each test split longer than the window read, cut (the first tokens, the "
        "server's default) against read whole in overlapping windows (`--long-texts windows`, the "
        f"server's own code). No test split holds a text over the model's {report['max_length']} "
        "tokens, so narrower windows ask the same question of the texts people wrote. Raw figures: "
        "bench/long_texts.json.",
        "",
        "| window (tokens) | split | texts longer | windows per text | cut | whole |",
        "|---|---|---|---|---|---|",
    ]
    for width, by_split in report["by_window"].items():
        for name, row in by_split.items():
            if not row["texts"]:
                lines.append(f"| {width} | {name} (of {row['split']:,}) | 0 | | | |")
                continue
            lines.append(
                f"| {width} | {name} (of {row['split']:,}) | {row['texts']:,} | {row['windows_mean']:.1f} | "
                f"{100 * row['cut']:.1f} | {100 * row['whole']:.1f} |"
            )
    return "\n".join([*lines, ""])


def priority_section(out: Path) -> str:
    """From bench/priority.json (`python -m bench priority`), when there is one."""
    report = own_report(out, "priority")
    if report is None:
        return ""
    rows = [
        ("the probe alone", "alone"),
        ("beside the flood, probe HIGH, flood LOW", "with_priorities"),
        ("beside the flood, no priorities (both NORMAL)", "without_priorities"),
    ]
    lines = [
        "",
        PRIORITY_TITLE,
        "",
        f"`python -m bench priority`, its own run ({report['date']}): one server, model preset "
        f"{report['model']}, its defaults; capacity {report['capacity_texts_per_s']:.0f} texts/s (closed "
        f"loop, requests of {report['flood_texts_per_request']}). An interactive probe sends one text "
        f"per request, Poisson at {report['probe_rate_per_s']:g}/s for {report['duration_s']:g} s; the "
        f"flood sends requests of {report['flood_texts_per_request']} texts at twice the capacity, open "
        f"loop (what the server cannot take it refuses at once). Medians of {report['rounds']} rounds; "
        "raw figures: bench/priority.json.",
        "",
        "| run | probe p50 ms | probe p99 ms | probe refused | flood served texts/s | flood refused |",
        "|---|---|---|---|---|---|",
    ]
    for title, key in rows:
        row = report[key]
        served = f"{row['flood_served_texts_per_s']:.0f}" if "flood_served_texts_per_s" in row else ""
        refused = f"{row['flood_refused']:.0f}" if "flood_refused" in row else ""
        probe = f"{row['probe_p50_ms']:.1f} | {row['probe_p99_ms']:.1f} | {row['probe_errors']:.0f}"
        lines.append(f"| {title} | {probe} | {served} | {refused} |")
    means = {}
    for name in ("high", "low"):
        rounds = [w for w in report["queue_waits_with_priorities"] if w.get(f"{name}_count")]
        if rounds:
            means[name] = statistics.median(1000 * w[f"{name}_sum"] / w[f"{name}_count"] for w in rounds)
    waited = ", ".join(f"{name} {ms:.1f} ms" for name, ms in means.items())
    lines += [
        "",
        f"Probe p99 beside the flood over alone: {report['p99_with_priorities_over_alone']:.2f}x with "
        f"priorities, {report['p99_without_priorities_over_alone']:.2f}x without. Mean queue wait "
        f"beside the flood, with priorities (the server's histogram): {waited}.",
        "",
    ]
    return "\n".join(lines)


def bulk_section(out: Path) -> str:
    """RESULTS.md's last section, from bench/bulk.json (`python -m bench bulk`) and
    bench/bulk_million.json (`python -m bench.bulk_million`), each when there is one."""
    lines = [*ways_lines(out), *million_lines(out)]
    return "\n".join(["", BULK_TITLE, "", *lines]) if lines else ""


def ways_lines(out: Path) -> list[str]:
    report = own_report(out, "bulk")
    if report is None:
        return []
    rows = [
        ("ONNX Runtime alone, length-sorted batches of 32 (ceiling)", "ceiling"),
        ("bulk command, Parquet in and out", "bulk_command"),
        ("Ray Data, 2 actors, Parquet in and out", "ray"),
        ("this server, SDK PredictStream", "server_sdk_stream"),
    ]
    lines = [
        f"`python -m bench bulk`, its own run ({report['date']}): {report['texts']:,} texts (the movie "
        f"and tweet test splits cycled), model preset {report['model']}, the fp32 graph, "
        f"{report['threads']} threads, one way after the other. Busy cores: the machine's, from "
        "/proc/stat. Raw figures: bench/bulk.json.",
        "",
        "| way | texts/s | seconds | busy cores |",
        "|---|---|---|---|",
    ]
    for title, key in rows:
        row = report[key]
        figures = f"{row['texts_per_s']:.0f} | {row['seconds']:.1f} | {row['busy_cores']:.2f}"
        lines.append(f"| {title} | {figures} |")
    return [
        *lines,
        "",
        f"Bulk command / ceiling: {report['bulk_over_ceiling']:.2f}; bulk command / server: "
        f"{report['bulk_over_server']:.2f}x. Ray's local cluster took "
        f"{report['ray']['cluster_start_s']:.0f} s to start, not counted above.",
        "",
    ]


def million_lines(out: Path) -> list[str]:
    """bench/bulk_million.json (`python -m bench.bulk_million`), when there is one."""
    report = own_report(out, "bulk_million")
    if report is None:
        return []
    first, second = report["rss_mib_by_tenth_first_run"], report["rss_mib_by_tenth_resumed_run"]
    tenths = sorted({*first, *second}, key=lambda tenth: int(tenth[:-1]))
    return [
        f"`python -m bench.bulk_million` ({report['date']}, model preset {report['model']}, "
        f"{report['variant']}): {report['rows']:,} rows from one Parquet file, killed (SIGKILL) after "
        f"{report['killed_after_rows']:,} rows were recorded and run again: {report['rows_out']:,} rows "
        f"out, every id once and in order: {report['every_id_once_in_order']}; a sample of 2,000 "
        f"labels equal to the predictor's: {report['sample_labels_equal']}; "
        f"{report['seconds']:.0f} s in all. The command's resident memory (MiB, the highest seen while "
        "each tenth of the rows was scored):",
        "",
        "| run | " + " | ".join(tenths) + " |",
        "|---|" + "---|" * len(tenths),
        "| first, killed | " + " | ".join(f"{first[t]:.0f}" if t in first else "" for t in tenths) + " |",
        "| resumed | " + " | ".join(f"{second[t]:.0f}" if t in second else "" for t in tenths) + " |",
        "",
    ]


def rewrite_own_runs(out: Path) -> None:
    """Replaces RESULTS.md's last sections (own_runs) with their benches' figures, the rest left as
    it is."""
    results = out / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    for title in OWN_TITLES:
        text = text.split("\n" + title, 1)[0]
    results.write_text(text.rstrip("\n") + "\n" + own_runs(out))


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results.json"
    write(json.loads(path.read_text()), path.parent)


if __name__ == "__main__":
    main()
