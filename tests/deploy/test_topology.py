"""The compose topology run for real: calls through haproxy, Prometheus scraping, replicas dying."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import threading
import urllib.request

from sentiment_client import RetryPolicy, SentimentClient, SentimentError
from tests.deploy.conftest import DEPLOY, HTTP_PORT, METRICS_PORT, Topology, metrics, value, wait_for

PREDICT = "sentiment.v1.SentimentService/Predict"
TEXTS = ["a warm, funny and clever film", "dull, slow and far too long", "the cast is fine, the plot less so"]


def predict_counts(topology: Topology, protocol: str = "grpc") -> dict[str, float]:
    return {
        host: value(
            metrics(topology.replica_metrics_url(host)),
            "sentiment_requests_total",
            method=PREDICT,
            protocol=protocol,
        )
        for host in topology.replica_hosts
    }


class Load:
    """Callers sending single-text calls through the balancer until stopped (or a bound is hit)."""

    def __init__(self, target: str, callers: int = 6, max_calls_each: int = 5000) -> None:
        # the SDK's retries, as a deployed caller would use them, on top of the balancer's
        self.client = SentimentClient(target, timeout_s=20, retry=RetryPolicy(max_attempts=8))
        self.sent = 0
        self.answered = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i, max_calls_each), daemon=True) for i in range(callers)
        ]

    def _run(self, caller: int, max_calls: int) -> None:
        for n in range(max_calls):
            if self._stop.is_set():
                return
            text = f"{TEXTS[(caller + n) % len(TEXTS)]} ({caller}.{n})"
            with self._lock:
                self.sent += 1
            try:
                prediction = self.client.predict(text)
                assert prediction.text == text and prediction.label in ("negative", "positive")
                with self._lock:
                    self.answered += 1
            except SentimentError as err:
                with self._lock:
                    self.failures.append(f"{type(err).__name__}: {err}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self.client.close()


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, `python -m service.ops.probe`, with these arguments."""
    command = [sys.executable, "-m", "service.ops.probe", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, env=env)


def restart(topology: Topology, host: str) -> None:
    topology.start_replica(host)
    topology.wait_healthy(2)


def test_one_channel_reaches_every_replica(topology: Topology) -> None:
    before = predict_counts(topology)
    with SentimentClient(topology.target, timeout_s=10) as client:
        results = [client.predict(TEXTS[i % 3]) for i in range(40)]
    assert all(r.label in ("negative", "positive") for r in results)
    after = predict_counts(topology)
    grown = {host: after[host] - before[host] for host in after}
    print(f"one channel, 40 calls through haproxy: {grown}")
    assert sum(grown.values()) == 40
    # balanced per call, not per connection: one channel's calls spread over both replicas
    assert all(count >= 10 for count in grown.values()), grown


def test_the_balancer_fronts_http_per_request_with_health_checks(topology: Topology) -> None:
    before = predict_counts(topology, "http")
    url = f"http://{topology.balancer_host}:{HTTP_PORT}"
    for i in range(20):
        request = urllib.request.Request(
            f"{url}/v1/predict",
            data=json.dumps({"texts": [TEXTS[i % 3]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert answer["predictions"][0]["label"] in ("negative", "positive")
    grown = {host: n - before[host] for host, n in predict_counts(topology, "http").items()}
    assert sum(grown.values()) == 20 and all(count >= 5 for count in grown.values()), grown
    active = value(
        metrics(topology.balancer_metrics_url), "haproxy_backend_active_servers", proxy="http_replicas"
    )
    assert active == 2  # both replicas pass GET /v2/health/ready
    assert urllib.request.urlopen(f"{url}/", timeout=10).read().lower().startswith(b"<!doctype html>")


def test_health_probe_of_the_image_says_serving(topology: Topology) -> None:
    result = probe("--target", f"{topology.replica_hosts[0]}:50051")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SERVING" in result.stdout
    # the default target is this container's own server, on SENTIMENT_PORT
    missing = probe("--timeout-s", "1", env={"SENTIMENT_PORT": "1", "PATH": "/usr/bin:/bin"})
    assert missing.returncode == 1 and "127.0.0.1:1" in missing.stdout and "UNAVAILABLE" in missing.stdout


def test_prometheus_scrapes_replicas_and_balancer(topology: Topology) -> None:
    def targets_up() -> dict[str, list[str]]:
        up: dict[str, list[str]] = {}
        for series in topology.query("up == 1"):
            labels = series["metric"]
            assert isinstance(labels, dict)
            up.setdefault(labels["job"], []).append(labels["instance"])
        return up if len(up.get("sentiment", [])) == 2 and up.get("haproxy") else {}

    up = wait_for("Prometheus to find both replicas by DNS and haproxy", targets_up, 120)
    assert sorted(up["sentiment"]) == sorted(f"{h}:{METRICS_PORT}" for h in topology.replica_hosts)  # type: ignore[index]

    def answer(promql: str) -> float:
        result = topology.query(promql)
        if not result:
            return math.nan
        sample = result[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])

    # rate() needs two scrapes that saw the counters move: calls flow while we wait
    with Load(topology.target, callers=2) as load:
        rate = wait_for(
            "a request rate",
            lambda: (r := answer("sum(sentiment:requests:rate1m)")) > 0 and r,
            120,
        )
        p99 = wait_for(
            "a p99 latency",
            lambda: (p := answer("sentiment:request_duration_seconds:p99_5m")) > 0 and p,
            120,
        )
        per_replica = wait_for(
            "a rate per replica",
            lambda: len(r := topology.query("sentiment:requests_by_replica:rate1m")) == 2 and r,
            120,
        )
    assert load.failures == []
    print(f"PromQL: request rate {rate:.3f}/s, p99 {p99 * 1000:.1f} ms, per replica {per_replica}")
    assert math.isfinite(float(p99))  # type: ignore[arg-type]
    assert {s["metric"]["replica"] for s in per_replica} == set(topology.replica_hosts)  # type: ignore[attr-defined,index]
    # the alerting rules are loaded and evaluated
    rules = topology.query('ALERTS{alertname=~"Sentiment.*"}')
    assert all(s["metric"]["alertname"] != "SentimentNoHealthyReplica" for s in rules)  # type: ignore[index]


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def declared(url: str) -> set[str]:
    """The sample names of every metric family a service declares, samples or not yet (a labelled
    metric has none until its first label values: shadow metrics until a shadow is loaded)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        family.name + suffix
        for family in text_string_to_metric_families(body)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def test_dashboard_and_rules_name_only_metrics_the_services_export(topology: Topology) -> None:
    urls = (topology.replica_metrics_url(topology.replica_hosts[0]), topology.balancer_metrics_url)
    exported = {name for url in urls for name, _ in metrics(url)} | {"up"}
    exported |= declared(urls[0])
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sentiment.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions.append((DEPLOY / "prometheus" / "rules.yml").read_text())
    recorded = set(re.findall(r"record: (\S+)", expressions[-1]))
    named = {
        name
        for expr in expressions
        for name in re.findall(r"\b((?:sentiment|haproxy)_[a-z_]+|up)\b(?=\s*[{\[)]|\s*$|\s*/)", expr)
    }
    assert len(named) > 15
    assert named - recorded <= exported, sorted(named - recorded - exported)


def test_sigkill_of_a_replica_under_load_loses_no_call(topology: Topology) -> None:
    victim = topology.replica_hosts[1]
    before = metrics(topology.balancer_metrics_url)
    with Load(topology.target) as load:
        wait_for("calls flowing", lambda: load.answered > 200, 120)
        topology.replicas[victim].signal(signal.SIGKILL)
        killed_at = load.sent
        wait_for("calls after the kill", lambda: load.answered > killed_at + 500, 120)
    assert topology.replicas[victim].wait(10) == -signal.SIGKILL
    after = metrics(topology.balancer_metrics_url)
    retried = {
        what: value(after, f"haproxy_backend_{what}_warnings_total", proxy="replicas")
        - value(before, f"haproxy_backend_{what}_warnings_total", proxy="replicas")
        for what in ("retry", "redispatch")
    }
    print(
        f"SIGKILL: {load.sent} calls sent, {load.answered} answered, {len(load.failures)} failed; "
        f"haproxy {retried}"
    )
    assert load.failures == []
    assert load.answered == load.sent
    topology.wait_healthy(1, 60)  # its health checks fail: no more calls are sent its way
    restart(topology, victim)


def test_sigterm_of_a_replica_under_load_drains_and_loses_no_call(topology: Topology) -> None:
    victim = topology.replica_hosts[0]
    replica = topology.replicas[victim]
    with Load(topology.target) as load:
        wait_for("calls flowing", lambda: load.answered > 200, 120)
        replica.signal(signal.SIGTERM)
        term_at = load.sent

        def not_serving() -> str:
            result = probe("--target", f"{victim}:50051")
            return result.stdout if result.returncode == 1 else ""

        # the drain delay (SENTIMENT_DRAIN_DELAY_S, as compose sets it): the image's health probe
        # says NOT_SERVING, haproxy takes the replica out, and it still answers what reaches it
        assert "NOT_SERVING" in str(wait_for("NOT_SERVING while draining", not_serving, 20))
        topology.wait_healthy(1, 20)
        assert replica.alive()
        wait_for("calls after the drain began", lambda: load.answered > term_at + 500, 120)
    assert replica.wait(30) == 0, replica.log()
    answered = json.loads(replica.log().split("calls answered: ")[1].splitlines()[0])
    print(
        f"SIGTERM: {load.sent} calls sent, {load.answered} answered, {len(load.failures)} failed; "
        f"the replica answered {answered[PREDICT]}"
    )
    assert load.failures == []
    assert load.answered == load.sent
    # haproxy takes the replica out during its drain delay, so calls reach it to be refused rarely
    # (none in the runs so far); any that do are UNAVAILABLE, retried by the client, never lost
    assert set(answered[PREDICT]) <= {"OK", "UNAVAILABLE"}, answered
    restart(topology, victim)
