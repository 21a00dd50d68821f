"""Deployment files checked by the tools that run them: Compose, promtool, haproxy, Kubernetes schemas."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, compose_binary, tool

SERVER_IMAGE = "sentiment-service:0.1.0"
GRACE_PERIOD_S = 20  # what the compose file, the image and the manifests give SENTIMENT_GRACE_PERIOD_S
KUBERNETES_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def compose_config(*files: Path) -> dict[str, Any]:
    flags = [arg for f in files for arg in ("-f", str(f))]
    quiet = run(compose_binary(), *flags, "config", "-q")
    assert quiet.returncode == 0, quiet.stderr
    rendered = run(compose_binary(), *flags, "config", "--format", "json")
    assert rendered.returncode == 0, rendered.stderr
    config: dict[str, Any] = json.loads(rendered.stdout)
    return config


def test_compose_file_is_valid_and_keeps_its_promises() -> None:
    config = compose_config(ROOT / "docker-compose.yml")
    services = config["services"]
    assert config["name"] == "sentiment"
    assert set(services) == {"model-export", "server", "balancer", "prometheus", "grafana"}
    server = services["server"]
    assert server["depends_on"]["model-export"]["condition"] == "service_completed_successfully"
    assert server["deploy"]["replicas"] >= 2 and "limits" in server["deploy"]["resources"]
    assert "ports" not in server, "replicas are reached through the balancer only"
    assert any(v["target"] == "/models" and v["read_only"] for v in server["volumes"])
    assert server["healthcheck"]["test"][-3:] == ["-m", "service.ops.probe", "--quiet"]
    assert server["environment"]["SENTIMENT_GRACE_PERIOD_S"] == str(GRACE_PERIOD_S)
    # the drain delay outlasts haproxy's detection: two failed checks, one a second
    assert float(server["environment"]["SENTIMENT_DRAIN_DELAY_S"]) > 2
    # compose writes durations in Go's notation: "25s"
    assert int(server["stop_grace_period"].rstrip("s")) > GRACE_PERIOD_S
    assert server["build"]["target"] == "server" and server["image"] == SERVER_IMAGE
    assert services["model-export"]["build"]["target"] == "export"
    assert "--if-missing" in services["model-export"]["command"]
    published = {
        name: [(p["host_ip"], p["published"]) for p in service.get("ports", [])]
        for name, service in services.items()
    }
    assert published == {
        "model-export": [],
        "server": [],
        "balancer": [("127.0.0.1", "50051"), ("127.0.0.1", "8080"), ("127.0.0.1", "8404")],
        "prometheus": [("127.0.0.1", "9090")],
        "grafana": [("127.0.0.1", "3000")],
    }
    # the services mount the very files the tests run
    mounts = {v["source"] for s in services.values() for v in s.get("volumes", []) if v["type"] == "bind"}
    assert mounts == {
        str(DEPLOY / "haproxy" / "haproxy.cfg"),
        str(DEPLOY / "prometheus"),
        str(DEPLOY / "grafana" / "provisioning"),
        str(DEPLOY / "grafana" / "dashboards"),
    }


def test_compose_gpu_override_is_valid() -> None:
    config = compose_config(ROOT / "docker-compose.yml", DEPLOY / "compose.gpu.yml")
    server = config["services"]["server"]
    assert server["environment"]["SENTIMENT_PROVIDER"] == "cuda"
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_compose_checker_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = (ROOT / "docker-compose.yml").read_text()
    broken.write_text(
        text.replace("    stop_grace_period: 25s", "    stop_grace_period: 25s\n    replicaz: 2")
    )
    result = run(compose_binary(), "-f", str(broken), "config", "-q", cwd=tmp_path)
    assert result.returncode != 0
    assert "replicaz" in result.stderr


def test_prometheus_config_rules_and_rule_tests() -> None:
    promtool = tool("promtool")
    checked = run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = run(promtool, "check", "rules", str(DEPLOY / "prometheus" / "rules.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    tested = run(promtool, "test", "rules", str(DEPLOY / "prometheus" / "rules_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # every alert has a test of its own
    alerts = re.findall(r"- alert: (\w+)", (DEPLOY / "prometheus" / "rules.yml").read_text())
    tests = (DEPLOY / "prometheus" / "rules_test.yml").read_text()
    assert len(alerts) == 10
    assert all(f"alertname: {a}\n        exp_alerts" in tests for a in alerts)


def test_haproxy_accepts_its_config() -> None:
    result = run(tool("haproxy"), "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_parses_and_every_query_is_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sentiment.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(targets) >= 20
    assert all(t["datasource"]["uid"] == "prometheus" for t in targets)
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == "prometheus"
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in ("Throughput", "Latency percentiles", "Queue wait", "Batch size", "Padding ratio"):
        assert wanted in titles
    # promtool parses each expression as a recording rule; Grafana's $__rate_interval becomes 1m
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": t["expr"].replace("$__rate_interval", "1m")}
                    for i, t in enumerate(targets)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check does catch a broken expression
    rules["groups"][0]["rules"].append({"record": "dashboard:broken", "expr": "sum(rate(x[1m])"})
    path.write_text(yaml.safe_dump(rules))
    assert run(tool("promtool"), "check", "rules", str(path)).returncode != 0


def _manifests(directory: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") != "Kustomization"
    ]


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    # the three newest Kubernetes minor versions whose schemas the validator ships (offline)
    assert kubernetes_validate.latest_version() == KUBERNETES_VERSIONS[-1]
    manifests = _manifests(DEPLOY / "k8s")
    kinds = {m["kind"] for m in manifests}
    assert kinds == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "Job",
        "ConfigMap",
    }
    for version in KUBERNETES_VERSIONS:
        for manifest in manifests:
            kubernetes_validate.validate(manifest, version, strict=True)
    version = KUBERNETES_VERSIONS[-1]
    # the validator does reject a wrong manifest
    broken = json.loads(json.dumps(next(m for m in manifests if m["kind"] == "Deployment")))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_autoscaler_scales_on_the_queue_wait_the_adapter_serves(tmp_path: Path) -> None:
    manifests = _manifests(DEPLOY / "k8s")
    (hpa,) = [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]
    (adapter,) = [m for m in manifests if m["kind"] == "ConfigMap"]
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(by_type) == {"Pods", "Resource"}  # the queue, and CPU as the fallback
    pods = by_type["Pods"]["pods"]
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == pods["metric"]["name"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    # the target comes from the measurement: below the mean queue wait where p99 first left the SLO
    target_s = float(pods["target"]["averageValue"].removesuffix("m")) / 1000
    measured = json.loads((ROOT / "bench" / "queue_signal.json").read_text())
    assert target_s < measured["first_beyond"]["queue_wait_mean_s"]
    assert measured["slo_p99_ms"] == 500
    # the adapter's query, its templates filled in as the adapter fills them, is valid PromQL
    query = (
        rule["metricsQuery"]
        .replace("<<.GroupBy>>", "pod")
        .replace("<<.LabelMatchers>>", 'namespace="default",pod=~"sentiment-server-.*"')
    )
    path = tmp_path / "adapter_rules.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "adapter", "rules": [{"record": "q", "expr": query}]}]})
    )
    result = run(tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_deployment_probes_and_drain() -> None:
    deployment = next(m for m in _manifests(DEPLOY / "k8s") if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == SERVER_IMAGE
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == 50051, probe
    env = {e["name"]: e["value"] for e in server["env"]}
    assert int(env["SENTIMENT_GRACE_PERIOD_S"]) == GRACE_PERIOD_S
    pre_stop = " ".join(server["lifecycle"]["preStop"]["exec"]["command"])
    pre_stop_s = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", pre_stop).group(1))  # type: ignore[union-attr]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + GRACE_PERIOD_S
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert any(v["name"] == "models" and v["readOnly"] for v in server["volumeMounts"])


def test_kserve_inference_service_serves_the_same_image_over_open_inference_grpc() -> None:
    (service,) = list(yaml.safe_load_all((DEPLOY / "kserve" / "inferenceservice.yaml").read_text()))
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["image"] == SERVER_IMAGE
    assert container["ports"] == [{"name": "h2c", "containerPort": 50051, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SENTIMENT_MODEL_DIR"].startswith("/mnt/models")  # where KServe puts STORAGE_URI
    assert env["STORAGE_URI"] and env["SENTIMENT_MODEL_NAME"] == service["metadata"]["name"]


def _stages(dockerfile: str) -> dict[str, str]:
    """Dockerfile text of each named stage."""
    parts = re.split(r"^FROM \S+ AS (\S+)\s*$", dockerfile, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_dockerfile_server_image_is_slim_non_root_and_health_checked() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert {"base", "server-build", "export-build", "export", "server"} <= set(stages)
    server, build = stages["server"], stages["server-build"]
    assert "--from=server-build" in server and "torch" not in build + server and "[train]" not in build
    assert (
        "torch==2.13.0" in stages["export-build"] and "download.pytorch.org/whl/cpu" in stages["export-build"]
    )
    assert re.search(r"^USER sentiment$", server, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", server, re.MULTILINE)
    assert re.search(r'^\s+CMD \["python", "-m", "service.ops.probe", "--quiet"\]', server, re.MULTILINE)
    assert f"SENTIMENT_GRACE_PERIOD_S={GRACE_PERIOD_S}" in server
    assert 'VOLUME ["/models"]' in server
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "models", ".cache", ".git"} <= set(ignored)


@pytest.mark.long  # pip resolves the whole dependency set: tens of seconds, more on a busy machine
def test_server_wheel_set_holds_no_training_dependencies(tmp_path: Path) -> None:
    """What the server image installs (pip install ./clients/python .), resolved without installing."""
    report = tmp_path / "report.json"
    result = run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
        "./clients/python",
        ".",
    )
    assert result.returncode == 0, result.stderr
    names = {
        item["metadata"]["name"].lower().replace("_", "-")
        for item in json.loads(report.read_text())["install"]
    }
    assert {"grpcio", "onnxruntime", "tokenizers", "prometheus-client", "sentiment-client"} <= names
    assert not names & {"torch", "onnx", "matplotlib", "safetensors", "typer", "rich"}, sorted(names)
