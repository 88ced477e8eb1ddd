"""Every PromQL expression of the rules and the dashboard, run by a real Prometheus against a real monitor.

A monitor scores traffic (with anomalies and bad input) from the embedded broker and serves its
metrics on loopback; Prometheus (Debian's, installed by `make test`) scrapes it every second on
loopback with the real rules.yml, using deploy/prometheus/prometheus.yml with the DNS discovery of
the compose network replaced by the monitor's address.  Then, through Prometheus' HTTP API:

* every recording rule's expression, and the series it records, returns data;
* every vector selector of every expression (rules and dashboard) matches a series: no misspelt
  metric or label value;
* every dashboard query returns data (Grafana's ``$__rate_interval`` read as 1m);
* an alerting rule (or dashboard annotation) is a condition that is false in a healthy stack, so
  its *signals* must return data instead: each side of its comparisons that involves a series,
  and what ``absent()`` looks at;
* every rule evaluates with health ``ok``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import pytest
import yaml
from deploy_support import DASHBOARD, PROMETHEUS, tool
from monitor_support import BAD_INPUT, encode, live_events, make_config, produce, running, traffic_bundle

from monitor.broker import _die_with_parent
from monitor.metrics import MetricsServer
from monitor.service import Monitor

GRAFANA_MACROS = {"$__rate_interval": "1m"}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
DEADLINE_S = 90


# -- PromQL: selectors and signals ------------------------------------------------------------------

def children(node: promql_parser.Expr) -> list[promql_parser.Expr]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, (promql_parser.AggregateExpr, promql_parser.ParenExpr, promql_parser.UnaryExpr,
                         promql_parser.SubqueryExpr)):
        return [node.expr]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    return []


def selectors(node: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    return [s for child in children(node) for s in selectors(child)]


def signals(node: promql_parser.Expr) -> list[str]:
    """The parts of a condition that must return data for it to mean anything (see the module doc)."""
    if isinstance(node, promql_parser.ParenExpr):
        return signals(node.expr)
    if isinstance(node, promql_parser.BinaryExpr) and str(node.op) in COMPARISONS | {"and", "or", "unless"}:
        return [s for side in (node.lhs, node.rhs) if selectors(side) for s in signals(side)]
    if isinstance(node, promql_parser.Call) and node.func.name == "absent":
        return signals(node.args[0])
    return [node.prettify()]


def grafana_to_promql(expr: str) -> str:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def expressions() -> list[tuple[str, str, bool]]:
    """(where, PromQL, is a condition) for every expression of rules.yml and the dashboard."""
    found = []
    for group in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                found += [(f"record {rule['record']}", rule["expr"], False), (f"series {rule['record']}",
                                                                               rule["record"], False)]
            else:
                found.append((f"alert {rule['alert']}", rule["expr"], True))
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", grafana_to_promql(target["expr"]), False))
    for annotation in board["annotations"]["list"]:
        found.append((f"annotation {annotation['name']!r}", grafana_to_promql(annotation["expr"]), True))
    return found


def test_signals_of_a_condition_are_the_sides_that_involve_series():
    parse = promql_parser.parse
    assert signals(parse('up{job="anomon"} == 0')) == ['up{job="anomon"}']
    assert signals(parse('absent(up{job="anomon"} == 1)')) == ['up{job="anomon"}']
    assert signals(parse("time() - x > 30 * 86400")) == ["time() - x"]
    assert signals(parse("a > 1000 and deriv(b[10m]) > 0")) == ["a", "deriv(b[10m])"]
    assert [s.name for s in selectors(parse("sum(rate(a[5m])) / sum(rate(b[5m]))"))] == ["a", "b"]


# -- A monitor and a Prometheus -----------------------------------------------------------------------

@pytest.fixture
def monitor_metrics(kafka_broker) -> Iterator[str]:
    """A monitor scoring a steady stream (anomalies and bad input included); yields its metrics address."""
    servers = kafka_broker.bootstrap_servers
    config = make_config(servers)
    monitor = Monitor(config, traffic_bundle(), lag_interval_s=1.0)
    stop = threading.Event()

    def feed() -> None:
        bad = [value for value, _ in BAD_INPUT]
        while not stop.is_set():
            produce(servers, config.kafka.input_topic, encode(live_events(40, anomaly_rate=0.1)) + bad[:4])
            bad = bad[4:] + bad[:4]
            stop.wait(0.5)

    with MetricsServer(monitor.metrics.registry, host="127.0.0.1", port=0, ready=lambda: monitor.ready) as server, \
            running(monitor):
        feeder = threading.Thread(target=feed, name="test-feed", daemon=True)
        feeder.start()
        try:
            yield f"127.0.0.1:{server.port}"
        finally:
            stop.set()
            feeder.join(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape_config(target: str, directory: Path) -> Path:
    """deploy/prometheus/prometheus.yml, scraping `target` every second instead of the compose replicas."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    del config["alerting"]  # no Alertmanager here
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "anomon"]
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus_api(monitor_metrics, tmp_path) -> Iterator[str]:
    config = scrape_config(monitor_metrics, tmp_path)
    for _ in range(5):  # the free port may be taken before Prometheus binds it
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent())
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        if proc.poll() is None:
            break
        log.close()
    try:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def api(url: str, path: str, **params: str) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def has_data(url: str, expr: str) -> bool:
    return bool(api(url, "query", query=expr)["result"])


def exported(metrics_address: str) -> set[str]:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {line.split("{")[0].split(" ")[0] for line in lines if line and not line.startswith("#")}


def checks() -> list[tuple[str, str]]:
    """(what, PromQL that must return data) for every expression."""
    todo = []
    for where, expr, condition in expressions():
        node = promql_parser.parse(expr)
        todo += [(f"{where}: selector", s.prettify()) for s in selectors(node)]
        todo += [(f"{where}: signal", s) for s in signals(node)] if condition else [(where, expr)]
    return todo


def test_every_expression_of_the_rules_and_the_dashboard_returns_data(monitor_metrics, prometheus_api):
    assert wait_until_up(prometheus_api)
    todo = checks()
    assert len(todo) > 80
    recorded = {s.name for _, expr, _ in expressions() for s in selectors(promql_parser.parse(expr))
                if ":" in s.name}
    names = {s.name for _, expr, _ in expressions() for s in selectors(promql_parser.parse(expr))} - recorded
    assert names - {"up"} <= exported(monitor_metrics), "not exported by the monitor"

    deadline = time.monotonic() + DEADLINE_S  # rates need two scrapes, recorded series an evaluation
    pending = list(todo)
    while pending and time.monotonic() < deadline:
        pending = [(what, expr) for what, expr in pending if not has_data(prometheus_api, expr)]
        if pending:
            time.sleep(1)
    assert not pending, "no data for:\n" + "\n".join(f"  {what}: {expr}" for what, expr in pending)

    rules = [rule for group in api(prometheus_api, "rules")["groups"] for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"])
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules
                                                           if r["health"] != "ok"]


def wait_until_up(url: str, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = api(url, "query", query='up{job="anomon"} == 1')["result"]
        if result:
            return True
        time.sleep(0.5)
    return False
