"""Drift detection in a running monitor, against the embedded broker, on synthetic seasonal traffic.

Live traffic comes from the same site as the training history (`SITE_SEED`), several simulated
days of it.  The input topic has one partition, so the monitor sees the events in order (with
several, the order in which partitions are fetched varies from run to run): a shift injected
from event `SHIFT` on is at offset `SHIFT`, and a drift event's offsets say how many events it took.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from monitor_support import config_dict, encode, produce, read_topic, running, traffic_bundle, wait_for

from monitor.drift import DriftConfigError, DriftObserver
from monitor.metrics import MonitorMetrics
from monitor.service import Monitor
from monitor.traffic import TrafficGenerator
from trainer.config import ConfigError, config_from_dict

SITE_SEED = 1  # the seed of traffic_bundle's history: the same users
LIVE_START = datetime(2024, 2, 1, tzinfo=timezone.utc)
SHIFT = 30_000
MAX_DELAY = 15_000  # events from the shift to its drift event (measured: 5,000-12,000; see the README)


def traffic(n: int, anomaly_rate: float = 0.0, events_per_hour: float = 600) -> list[dict[str, Any]]:
    return TrafficGenerator(seed=SITE_SEED, anomaly_rate=anomaly_rate, start=LIVE_START,
                            events_per_hour=events_per_hour).generate(n)


def drift_run(servers: str, events: list[dict[str, Any]], **drift: Any) -> tuple[Monitor, list[dict[str, Any]]]:
    """Score `events` in a monitor; its drift events as read back from the control topic."""
    raw = config_dict(servers, partitions=1)
    config = config_from_dict({**raw, "drift": drift}, environ={})
    monitor = Monitor(config, traffic_bundle())
    with running(monitor, partitions=1):
        produce(servers, config.kafka.input_topic, encode(events), partitions=1)
        assert wait_for(lambda: monitor.totals["events"] == len(events), 300), monitor.totals
    control = [json.loads(r.value) for r in read_topic(servers, config.kafka.control_topic,
                                                         len(monitor.drift.detections), partitions=1)]
    return monitor, [c for c in control if c["type"] == "drift"]


def delay(event: dict[str, Any]) -> int:
    """Events scored after the shift when the drift event was raised."""
    return sum(event["offsets"].values()) - SHIFT


def test_stationary_seasonal_traffic_raises_no_drift_event(kafka_broker):
    events = traffic(200_000)  # about 14 simulated days, each from 0.2x to 1.8x the mean volume
    days = (datetime.fromisoformat(events[-1]["event_time"]) - LIVE_START) / timedelta(days=1)
    assert days > 10
    monitor, drift_events = drift_run(kafka_broker.bootstrap_servers, events)
    assert drift_events == [] and list(monitor.drift.detections) == []
    r = monitor.metrics.registry
    streams = {(d, f) for d, f, _ in monitor.drift.streams}
    assert ("adwin", "_score") in streams and ("adwin", "latency_ms") in streams and ("adwin", "country") in streams
    assert all(r.get_sample_value("anomon_drift_detected_total", {"detector": d, "field": f}) == 0 for d, f in streams)


def shifted_latency(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """From SHIFT on, latency_ms up by 2 standard deviations of its encoded (log-scaled) value."""
    bundle = traffic_bundle()
    encoder = bundle.encoder.encoder_for("latency_ms")
    column = next(b.start for b in bundle.encoder.blocks if b.field == "latency_ms")
    std = bundle.encoder.transform(events[:SHIFT]).X[:, column].std()
    factor = math.exp(2 * std * encoder.scale_)
    return events[:SHIFT] + [{**e, "latency_ms": round(e["latency_ms"] * factor, 1)} for e in events[SHIFT:]]


def new_dominant_country(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """From SHIFT on, 60% of the events come from a country never seen in training."""
    rng = random.Random(0)
    return events[:SHIFT] + [{**e, "country": "ZZ"} if rng.random() < 0.6 else e for e in events[SHIFT:]]


def attack_wave(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """From SHIFT on, a fifth of the events are anomalies: the anomaly-score level rises."""
    return events[:SHIFT] + traffic(len(events), anomaly_rate=0.2)[SHIFT:]


@pytest.mark.parametrize(("shift", "field", "statistic", "direction"), [
    (shifted_latency, "latency_ms", "mean_z", "increase"),
    (new_dominant_country, "country", "unseen_rate", "increase"),
    (attack_wave, "_score", "log_score_z", "increase"),
])
def test_an_injected_shift_is_named_by_one_drift_event_within_a_bounded_delay(kafka_broker, shift, field,
                                                                               statistic, direction):
    events = shift(traffic(60_000))
    monitor, drift_events = drift_run(kafka_broker.bootstrap_servers, events)
    named = [e for e in drift_events if e["field"] == field and e["statistic"] == statistic]
    assert len(named) == 1, drift_events  # debounced: one event for one shift
    event = named[0]
    assert event["direction"] == direction and event["detector"] == "adwin"
    assert 0 < delay(event) <= MAX_DELAY, delay(event)
    assert event["model_version"] == traffic_bundle().version
    assert event["after"]["mean"] > event["before"]["mean"]
    assert all(delay(e) > 0 for e in drift_events), "a drift event before the shift"
    assert set(event) >= {"detector", "field", "direction", "before", "after", "model_version", "detected_at"}
    r = monitor.metrics.registry
    assert r.get_sample_value("anomon_drift_detected_total", {"detector": "adwin", "field": field}) >= 1
    assert r.get_sample_value("anomon_drift_last_timestamp_seconds", {"field": field}) > 0
    print(f"\n{shift.__name__}: {field} {statistic} after {delay(event):,} events "
          f"({event['before']['mean']} -> {event['after']['mean']}); all: "
          + ", ".join(f"{e['field']}/{e['statistic']}@{delay(e)}" for e in drift_events))


def test_detectors_and_fields_are_configurable(kafka_broker):
    raw = config_dict(kafka_broker.bootstrap_servers)
    config = config_from_dict({**raw, "drift": {"detector": "page_hinkley", "window": 100, "fields": {
        "latency_ms": {"detector": "kswin", "params": {"alpha": 0.001}}, "country": {"enabled": False}},
        "score": {"detector": "adwin", "params": {"delta": 0.0001}}}}, environ={})
    metrics = MonitorMetrics(build_version="x")
    observer = DriftObserver(config, traffic_bundle(), emit=lambda event: None, metrics=metrics)
    streams = {(f, s): d for d, f, s in observer.streams}
    assert streams[("latency_ms", "mean_z")] == "kswin" and streams[("_score", "log_score_z")] == "adwin"
    assert streams[("bytes_out", "mean_z")] == "page_hinkley" and not any(f == "country" for f, _ in streams)
    assert metrics.registry.get_sample_value("anomon_drift_detected_total",
                                             {"detector": "kswin", "field": "latency_ms"}) == 0
    with pytest.raises(ConfigError, match="drift.fields.nope"):
        config_from_dict({**raw, "drift": {"fields": {"nope": {"enabled": False}}}}, environ={})
    with pytest.raises(DriftConfigError, match="kswin"):
        bad = config_from_dict({**raw, "drift": {"detector": "kswin", "params": {"widow": 3}}}, environ={})
        DriftObserver(bad, traffic_bundle(), emit=lambda event: None, metrics=MonitorMetrics(build_version="x"))


def test_the_drift_command_reports_each_field_against_the_training_reference(tmp_path, capsys):
    from monitor.cli import main
    from test_lifecycle import saved_copy

    saved_copy(traffic_bundle(), tmp_path / "models")
    same, shifted = tmp_path / "same.jsonl", tmp_path / "shifted.jsonl"
    events = traffic(SHIFT + 10_000)
    same.write_text("".join(json.dumps(e) + "\n" for e in events[:5000]))  # 8 hours: one part of the day
    shifted.write_text("".join(json.dumps(e) + "\n" for e in new_dominant_country(shifted_latency(events))[SHIFT:]))
    assert main(["drift", "--model", str(tmp_path / "models"), "--data", str(same)]) == 0
    table = capsys.readouterr().out
    assert "0 of 8 fields drifted" in table, table  # the hours of the day it covers are compared with the same hours
    assert main(["drift", "--model", str(tmp_path / "models"), "--data", str(shifted), "--report",
                 str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out
    assert "2 of 8 fields drifted: country, latency_ms" in table, table
    report = json.loads((tmp_path / "report" / "drift.json").read_text())
    assert report["fields"]["latency_ms"]["psi"] >= 0.2 and report["fields"]["country"]["jensen_shannon"] >= 0.1
    assert report["fields"]["bytes_out"]["drift"] is False
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["drift_country.png", "drift_latency_ms.png"]
