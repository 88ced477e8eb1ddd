"""The monitor's metrics: names, per-batch observations, and the HTTP endpoints."""

from __future__ import annotations

import collections
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.alerts import Alert
from monitor.deadletter import DeadLetter
from monitor.deadletter import DeadLetterReason
from monitor.metrics import MetricsError, MetricsServer, MonitorMetrics, score_buckets
from monitor.pipeline import BatchResult

BANDS = {"warning": 2.0, "minor": 4.0, "major": 8.0, "critical": 16.0}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_batch_is_counted_and_observed_under_prometheus_names():
    metrics = MonitorMetrics(threshold=2.0, bands=BANDS, model_version="v7", build_version="1.2.3",
                             fields=["bytes", "proto"])
    result = BatchResult(
        alerts=[Alert("t/0/1", "warning", None, b"{}"), Alert("t/0/2", "critical", None, b"{}")],
        dead_letters=[DeadLetter(DeadLetterReason.INVALID_JSON, None, b"x", [])],
        scores=np.array([0.5, 2.5, 20.0]), event_lag=np.array([0.02, 0.2, np.nan]), unknown_fields=4,
        invalid_values=collections.Counter({"bytes": 2}),
    )
    metrics.observe_batch(result, size=4, seconds=0.003)
    metrics.set_consumer_lag({0: 5, 1: 0})
    metrics.set_consumer_lag({1: 7})  # partition 0 was revoked

    with MetricsServer(metrics.registry, port=0) as server:
        samples = scrape(server.url)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("anomon_events_total", result="scored") == 3
    assert value("anomon_events_total", result="dead_letter") == 1
    assert value("anomon_alerts_total", severity="warning") == 1
    assert value("anomon_alerts_total", severity="critical") == 1
    assert value("anomon_alerts_total", severity="major") == 0  # every label value exists from the start
    assert value("anomon_dead_letter_total", reason="invalid_json") == 1
    assert all(value("anomon_dead_letter_total", reason=r) is not None for r in DeadLetterReason)
    assert value("anomon_unknown_fields_total") == 4
    assert value("anomon_invalid_values_total", field="bytes") == 2
    assert value("anomon_invalid_values_total", field="proto") == 0  # every schema field from the start
    assert value("anomon_anomaly_score_count") == 3 and value("anomon_anomaly_score_sum") == 23.0
    assert value("anomon_anomaly_score_bucket", le="2.0") == 1  # buckets fitted to the threshold
    assert value("anomon_anomaly_score_bucket", le="16.0") == 2
    assert value("anomon_batch_size_count") == 1 and value("anomon_batch_size_sum") == 4
    assert value("anomon_processing_seconds_count") == 1
    assert value("anomon_event_lag_seconds_count") == 2  # no event time, no observation
    assert value("anomon_consumer_lag_messages", partition="1") == 7
    assert value("anomon_consumer_lag_messages", partition="0") is None
    assert value("anomon_threshold") == 2.0
    assert value("anomon_model_info", version="v7") == 1
    assert value("anomon_build_info", version="1.2.3") == 1


def test_score_buckets_bracket_the_threshold_and_the_severity_bands():
    buckets = score_buckets(2.0, BANDS)
    assert buckets == sorted(buckets)
    assert {2.0, 4.0, 8.0, 16.0} <= set(buckets)
    assert buckets[0] < 2.0 < buckets[-1]


def test_each_monitor_has_its_own_registry():
    first = MonitorMetrics(threshold=1.0, model_version="a", build_version="x")
    second = MonitorMetrics(threshold=1.0, model_version="b", build_version="x")  # no duplicate-name error
    first.events.labels("scored").inc()
    assert second.registry.get_sample_value("anomon_events_total", {"result": "scored"}) == 0


def test_health_and_readiness_endpoints():
    ready = {"value": False}
    metrics = MonitorMetrics(threshold=1.0, model_version="a", build_version="x")
    with MetricsServer(metrics.registry, port=0, ready=lambda: ready["value"]) as server:
        assert status(server.url + "/healthz") == 200
        assert status(server.url + "/readyz") == 503
        ready["value"] = True
        assert status(server.url + "/readyz") == 200
        assert status(server.url + "/metrics") == 200
        assert status(server.url + "/elsewhere") == 404


def test_a_taken_port_is_reported_in_one_line():
    metrics = MonitorMetrics(threshold=1.0, model_version="a", build_version="x")
    with MetricsServer(metrics.registry, port=0) as server:
        with pytest.raises(MetricsError, match=f"metrics: cannot listen on 127.0.0.1:{server.port}"):
            MetricsServer(metrics.registry, port=server.port).start()
