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
from monitor.metrics import SCORE_RATIO_BUCKETS, MetricsError, MetricsServer, MonitorMetrics
from monitor.pipeline import BatchResult


class FakeBundle:
    def __init__(self, threshold: float) -> None:
        self.threshold = type("T", (), {"value": threshold})()


def metrics_for(threshold: float = 1.0, version: str = "a", **kwargs) -> MonitorMetrics:
    metrics = MonitorMetrics(build_version="x", **kwargs)
    metrics.set_model(threshold=threshold, version=version, created_at=1_700_000_000.0)
    return metrics


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
    metrics = MonitorMetrics(build_version="1.2.3", fields=["bytes", "proto"])
    metrics.set_model(threshold=2.0, version="v7", created_at=1_700_000_000.0)
    result = BatchResult(
        alerts=[Alert("t/0/1", "warning", None, b"{}"), Alert("t/0/2", "critical", None, b"{}")],
        dead_letters=[DeadLetter(DeadLetterReason.INVALID_JSON, None, b"x", [])],
        scores=np.array([0.5, 2.5, 20.0]), event_lag=np.array([0.02, 0.2, np.nan]), unknown_fields=4,
        invalid_values=collections.Counter({"bytes": 2}),
        bundle=FakeBundle(2.0), size=4, seconds=0.003,
    )
    metrics.on_batch(result)
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
    assert value("anomon_score_ratio_count") == 3 and value("anomon_score_ratio_sum") == 11.5  # score / 2.0
    assert value("anomon_score_ratio_bucket", le="1.0") == 1  # 1.0: the alert threshold
    assert value("anomon_score_ratio_bucket", le="10.0") == 3
    assert value("anomon_batch_size_count") == 1 and value("anomon_batch_size_sum") == 4
    assert value("anomon_processing_seconds_count") == 1
    assert value("anomon_event_lag_seconds_count") == 2  # no event time, no observation
    assert value("anomon_consumer_lag_messages", partition="1") == 7
    assert value("anomon_consumer_lag_messages", partition="0") is None
    assert value("anomon_threshold") == 2.0
    assert value("anomon_model_info", version="v7") == 1
    assert value("anomon_model_created_timestamp_seconds") == 1_700_000_000.0
    assert value("anomon_model_reloads_total", result="loaded") == 0  # children exist from the start
    assert value("anomon_model_reloads_total", result="refused") == 0
    assert value("anomon_build_info", version="1.2.3") == 1


def test_a_new_model_replaces_the_model_series_and_keeps_the_score_buckets():
    metrics = metrics_for(threshold=2.0, version="v1")
    metrics.on_batch(BatchResult(scores=np.array([1.0, 3.0]), bundle=FakeBundle(2.0), size=2))
    metrics.set_model(threshold=5.0, version="v2", created_at=1_800_000_000.0)
    metrics.on_batch(BatchResult(scores=np.array([1.0, 6.0]), bundle=FakeBundle(5.0), size=2))
    r = metrics.registry
    assert r.get_sample_value("anomon_model_info", {"version": "v1"}) is None
    assert r.get_sample_value("anomon_model_info", {"version": "v2"}) == 1
    assert r.get_sample_value("anomon_threshold") == 5.0
    assert r.get_sample_value("anomon_model_created_timestamp_seconds") == 1_800_000_000.0
    bounds = [s.labels["le"] for f in r.collect() if f.name == "anomon_score_ratio" for s in f.samples
              if s.name.endswith("_bucket")]
    assert bounds == [*map(str, SCORE_RATIO_BUCKETS), "+Inf"]  # the same layout for every model
    assert r.get_sample_value("anomon_score_ratio_bucket", {"le": "1.0"}) == 2  # 1/2 and 1/5, not 3/2 nor 6/5


def test_drift_streams_exist_at_zero():
    metrics = metrics_for()
    metrics.add_drift_streams([("adwin", "_score"), ("kswin", "bytes")])
    assert metrics.registry.get_sample_value("anomon_drift_detected_total", {"detector": "kswin", "field": "bytes"}) == 0


def test_each_monitor_has_its_own_registry():
    first = metrics_for(version="a")
    second = metrics_for(version="b")  # no duplicate-name error
    first.events.labels("scored").inc()
    assert second.registry.get_sample_value("anomon_events_total", {"result": "scored"}) == 0


def test_health_and_readiness_endpoints():
    ready = {"value": False}
    metrics = metrics_for()
    with MetricsServer(metrics.registry, port=0, ready=lambda: ready["value"]) as server:
        assert status(server.url + "/healthz") == 200
        assert status(server.url + "/readyz") == 503
        ready["value"] = True
        assert status(server.url + "/readyz") == 200
        assert status(server.url + "/metrics") == 200
        assert status(server.url + "/elsewhere") == 404


def test_a_taken_port_is_reported_in_one_line():
    metrics = metrics_for()
    with MetricsServer(metrics.registry, port=0) as server:
        with pytest.raises(MetricsError, match=f"metrics: cannot listen on 127.0.0.1:{server.port}"):
            MetricsServer(metrics.registry, port=server.port).start()
