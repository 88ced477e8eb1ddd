"""Model lifecycle against the embedded broker: swapping versions mid-stream, watching CURRENT, refusals, rollback.

A bundle with a threshold of 1e-12 alerts on every event, so the alert topic says, per offset, which model
version scored each event: that is how "scored exactly once across the switch" is counted.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from monitor_support import (
    PARTITIONS,
    alert_id,
    alerts_of,
    config_dict,
    encode,
    live_events,
    produce,
    read_topic,
    running,
    traffic_bundle,
    wait_for,
)

from monitor.cli import main
from monitor.lifecycle import LifecycleError, ModelWatcher, current_version, list_versions, prune_versions, rollback
from monitor.service import Monitor
from trainer.bundle import Bundle, BundleError, set_current
from trainer.config import config_from_dict


def alerting_copy(bundle: Bundle, version: str) -> Bundle:
    """The same model under another version, alerting on every event (threshold 1e-12)."""
    threshold = dataclasses.replace(bundle.threshold, value=1e-12,
                                    bands={b: max(v, 1e-9) for b, v in bundle.threshold.bands.items()})
    return bundle.with_threshold(threshold, manifest={**bundle.manifest, "version": version})


def saved_copy(bundle: Bundle, model_dir: Path, threshold: float | None = None) -> Bundle:
    """Save a copy of `bundle` as a new version of `model_dir` (CURRENT moves); the original is untouched."""
    t = bundle.threshold if threshold is None else dataclasses.replace(
        bundle.threshold, value=threshold, bands={b: max(v, 1e-9) for b, v in bundle.threshold.bands.items()})
    copy = bundle.with_threshold(t, manifest={})
    copy.save(model_dir)
    time.sleep(0.002)  # version names carry the time to the microsecond: keep them in order
    return copy


def versions_by_offset(servers: str, topic: str, count: int) -> dict[str, list[str]]:
    records = read_topic(servers, topic, count)
    by_id: dict[str, list[str]] = defaultdict(list)
    for alert in alerts_of(records):
        by_id[alert["alert_id"]].append(alert["model_version"])
    return by_id


class PausesAfter:
    """A batch observer that holds the scoring thread once `events` are settled, until released."""

    def __init__(self, events: int) -> None:
        self.events, self.seen = events, 0
        self.reached, self.release = threading.Event(), threading.Event()

    def on_batch(self, result) -> None:
        self.seen += result.size
        if self.seen >= self.events and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(30)


def test_a_swap_mid_stream_scores_every_event_exactly_once(kafka_broker):
    servers = kafka_broker.bootstrap_servers
    raw = config_dict(servers)
    config = config_from_dict({**raw, "monitor": {**raw["monitor"], "max_batch_records": 100}}, environ={})
    old, new = alerting_copy(traffic_bundle(), "v-old"), alerting_copy(traffic_bundle(), "v-new")
    events = encode(live_events(3000, anomaly_rate=0.0))
    pause = PausesAfter(1000)
    monitor = Monitor(config, old, observers=[pause], max_unsettled_batches=1)  # scoring stays near settling
    with running(monitor):
        produce(servers, config.kafka.input_topic, events)
        assert pause.reached.wait(30)
        monitor.swap_model(new)  # from another thread, mid-stream: batches are polled, not yet scored
        pause.release.set()
        assert wait_for(lambda: monitor.totals["events"] == len(events), 30), monitor.totals
        assert monitor.bundle is new
    by_id = versions_by_offset(servers, config.kafka.alert_topic, len(events))
    assert set(by_id) == {alert_id(config.kafka.input_topic, i) for i in range(len(events))}
    assert all(len(v) == 1 for v in by_id.values()), "an event was scored twice"
    # Per partition, the old version up to some offset and the new one from there on (a partition
    # may be read whole before or after the switch).
    seen = Counter()
    for partition in range(PARTITIONS):
        sequence = [by_id[alert_id(config.kafka.input_topic, i)][0] for i in range(partition, len(events), PARTITIONS)]
        assert sequence == sorted(sequence, key=["v-old", "v-new"].index)
        seen.update(sequence)
    assert seen["v-old"] >= 1000 and seen["v-new"] >= 1
    control = [json.loads(r.value) for r in read_topic(servers, config.kafka.control_topic, 1)]
    assert [(c["type"], c["previous_version"], c["model_version"]) for c in control] == [
        ("model_loaded", "v-old", "v-new")]
    r = monitor.metrics.registry
    assert r.get_sample_value("anomon_model_info", {"version": "v-new"}) == 1
    assert r.get_sample_value("anomon_model_info", {"version": "v-old"}) is None
    assert Counter(monitor.totals)["model_swaps"] == 1


def test_a_running_monitor_follows_current_refuses_a_corrupt_version_and_rolls_back(kafka_broker, tmp_path):
    servers = kafka_broker.bootstrap_servers
    config = config_from_dict(config_dict(servers), environ={})
    model_dir = tmp_path / "models"
    first = saved_copy(traffic_bundle(), model_dir, threshold=1e-12)  # alerts on every event: its version shows
    monitor = Monitor(config, Bundle.load(model_dir))
    watcher = ModelWatcher(model_dir, monitor, interval_s=0.05)
    registry = monitor.metrics.registry
    events = encode(live_events(900, anomaly_rate=0.0))
    topic = config.kafka.input_topic

    def scored(n: int) -> None:
        assert wait_for(lambda: monitor.totals["events"] == n, 30), monitor.totals

    watcher.start()
    try:
        with running(monitor):
            produce(servers, topic, events[:300])
            scored(300)
            second = saved_copy(traffic_bundle(), model_dir, threshold=1e-12)
            assert wait_for(lambda: monitor.totals["model_swaps"] == 1, 10)
            produce(servers, topic, events[300:600])
            scored(600)

            third = saved_copy(traffic_bundle(), tmp_path / "scratch")
            weights = tmp_path / "scratch" / "versions" / third.version / "weights.pt"
            weights.write_bytes(weights.read_bytes() + b"tampered")
            shutil.copytree(weights.parent, model_dir / "versions" / third.version)
            set_current(model_dir, third.version)
            assert wait_for(lambda: registry.get_sample_value("anomon_model_reloads_total",
                                                              {"result": "refused"}) == 1, 10)
            produce(servers, topic, events[600:800])
            scored(800)  # still scoring, with the version before
            assert monitor.bundle.version == second.version

            assert main(["rollback", "--model-dir", str(model_dir), "--to", first.version]) == 0
            assert wait_for(lambda: monitor.bundle.version == first.version, 10)
            produce(servers, topic, events[800:])
            scored(900)
    finally:
        watcher.stop()
    by_id = versions_by_offset(servers, config.kafka.alert_topic, 900)
    assert all(len(v) == 1 for v in by_id.values()) and len(by_id) == 900
    assert {by_id[alert_id(topic, i)][0] for i in range(300)} == {first.version}
    assert {by_id[alert_id(topic, i)][0] for i in range(300, 800)} == {second.version}
    assert {by_id[alert_id(topic, i)][0] for i in range(800, 900)} == {first.version}
    assert registry.get_sample_value("anomon_model_reloads_total", {"result": "loaded"}) == 2
    control = [json.loads(r.value) for r in read_topic(servers, config.kafka.control_topic, 3)]
    refused = [c for c in control if c["type"] == "model_refused"]
    assert len(refused) == 1 and refused[0]["model_version"] == third.version
    assert refused[0]["active_version"] == second.version and "sha256" in refused[0]["error"]
    assert [c["model_version"] for c in control if c["type"] == "model_loaded"] == [second.version, first.version]


def test_rollback_defaults_to_the_version_before_current_and_checks_it(tmp_path):
    first = saved_copy(traffic_bundle(), tmp_path)
    second = saved_copy(traffic_bundle(), tmp_path)
    assert rollback(tmp_path) == first.version == current_version(tmp_path)
    with pytest.raises(LifecycleError, match="no version older"):
        rollback(tmp_path)
    with pytest.raises(LifecycleError, match="has no version nope"):
        rollback(tmp_path, to="nope")
    (tmp_path / "versions" / second.version / "encoder.json").write_text("{}")
    with pytest.raises(BundleError, match="sha256"):
        rollback(tmp_path, to=second.version)
    assert current_version(tmp_path) == first.version  # unchanged by the refused rollback


def test_pruning_keeps_the_newest_versions_and_current(tmp_path):
    versions = [saved_copy(traffic_bundle(), tmp_path).version for _ in range(4)]
    rollback(tmp_path, to=versions[0])
    assert prune_versions(tmp_path, keep=2) == [versions[1]]
    assert list_versions(tmp_path) == [versions[0], *versions[2:]]
