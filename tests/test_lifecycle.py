"""Model lifecycle against the embedded broker: swapping versions mid-stream, watching CURRENT, refusals, rollback.

A bundle with a threshold of 1e-12 alerts on every event, so the alert topic says, per offset, which model
version scored each event: that is how "scored exactly once across the switch" is counted.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter, defaultdict

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

from monitor.service import Monitor
from trainer.bundle import Bundle
from trainer.config import config_from_dict


def alerting_copy(bundle: Bundle, version: str) -> Bundle:
    """The same model under another version, alerting on every event (threshold 1e-12)."""
    threshold = dataclasses.replace(bundle.threshold, value=1e-12,
                                    bands={b: max(v, 1e-9) for b, v in bundle.threshold.bands.items()})
    return Bundle(bundle.config, bundle.encoder, bundle.model, threshold, training=bundle.training,
                  manifest={**bundle.manifest, "version": version})


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
