"""Slow batches and rebalances: a batch that outlives ``max_poll_interval_ms`` (the member is dropped
from the group mid-batch), and a member joining while a batch is being scored.  Neither loses a
commit, and every record scored twice is announced: what the monitors count as re-read or handed
over adds up exactly to what they scored beyond the events sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest
from faults_support import committed, wait_until
from monitor_support import alerts_of, encode, expected_alerts, live_events, make_config, produce, read_topic, \
    running, traffic_bundle

from monitor.service import Monitor, kafka_transport
from monitor.transport import ensure_topics


def slow_first_batch(monitor: Monitor, seconds: float) -> tuple[threading.Event, list]:
    """Make the monitor's first batch take `seconds` to score; returns (started, the batch's messages)."""
    process, started, first = monitor.scorer.process, threading.Event(), []

    def slow(messages):
        if not first:
            first.extend(messages)
            started.set()
            time.sleep(seconds)
        return process(messages)

    monitor.scorer.process = slow
    return started, first


def alert_ids(messages, topic: str, partitions: set[int] | None = None) -> set[str]:
    return {f"{topic}/{m.partition}/{m.offset}" for m in messages if partitions is None or m.partition in partitions}


@pytest.mark.slow
def test_a_batch_longer_than_max_poll_interval_loses_no_commit_and_announces_its_repeats(kafka_broker, caplog):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers)
    k = config.kafka
    events = live_events(200, anomaly_rate=0.1)
    expected, borderline = expected_alerts(bundle, events, k.input_topic)
    monitor = Monitor(config, bundle, transport_factory=lambda: kafka_transport(config, max_poll_interval_ms=7000))
    started, first = slow_first_batch(monitor, 10)  # 3 s past max_poll_interval_ms: dropped from the group
    caplog.set_level(logging.WARNING)
    ensure_topics(servers, {k.input_topic: 2})
    produce(servers, k.input_topic, encode(events))
    with running(monitor):
        assert started.wait(30)
        assert wait_until(lambda: committed(servers, k.group_id) == {0: 100, 1: 100}, 60)
        assert wait_until(lambda: monitor.totals["events"] == 200 + monitor.totals["reread"], 10), monitor.totals
        alerts = alerts_of(read_topic(servers, k.alert_topic, len(expected)))

    assert any("max_poll_interval_ms" in r.getMessage() for r in caplog.records)  # kafka-python's notice...
    reread = monitor.totals["reread"]
    assert 0 < reread <= len(first)  # ...and ours: the dropped member's batch came again
    assert [r for r in caplog.records if r.getMessage().startswith(f"reading {reread} records again")]
    counts = Counter(a["alert_id"] for a in alerts)
    assert set(counts) - borderline == expected - borderline  # nothing lost
    assert {i for i, n in counts.items() if n > 1} <= alert_ids(first, k.input_topic)  # repeats: that batch only
    print(f"\nslow batch: {len(first)} events in it, {reread} scored again, "
          f"{sum(n - 1 for n in counts.values())} duplicate alerts")


@pytest.mark.slow
def test_a_member_joining_mid_batch_loses_no_commit_and_the_handover_is_announced(kafka_broker, caplog):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers, partitions=4)
    k = config.kafka
    events = live_events(400, anomaly_rate=0.1)
    expected, borderline = expected_alerts(bundle, events, k.input_topic, partitions=4)
    first = Monitor(config, bundle)
    started, batch = slow_first_batch(first, 6)
    caplog.set_level(logging.WARNING, logger="monitor")
    ensure_topics(servers, {k.input_topic: 4})
    produce(servers, k.input_topic, encode(events), partitions=4)
    with running(first, partitions=4):
        assert started.wait(30)
        with running(Monitor(config, bundle), partitions=None) as second:  # joins while the batch is scored
            # Every commit lands, also those the rebalance refused (sent again on the partitions kept).
            assert wait_until(lambda: committed(servers, k.group_id) == {p: 100 for p in range(4)}, 60)
            assert wait_until(lambda: first.totals["events"] + second.totals["events"] >= 400, 10)
            alerts = alerts_of(read_topic(servers, k.alert_topic, len(expected), partitions=4))
            moved = {p for _, p in second.assignment}
            totals = first.totals["events"], second.totals["events"]

    assert len(moved) == 2
    counts = Counter(a["alert_id"] for a in alerts)
    assert set(counts) - borderline == expected - borderline  # nothing lost
    repeated = {i for i, n in counts.items() if n > 1}
    assert repeated <= alert_ids(batch, k.input_topic, moved)  # repeats: that batch, on the partitions handed over
    # ...and announced: records handed over before their commit, or a commit the rebalance refused.
    notices = [r.getMessage() for r in caplog.records if r.name.startswith("monitor.")
               and ("records of theirs were committed" in r.getMessage() or "commit of" in r.getMessage())]
    assert notices or sum(totals) == 400
    print(f"\nmember joining mid-batch: {len(batch)} events in the batch, {sum(totals) - 400} scored again by the new "
          f"owner, {sum(n - 1 for n in counts.values())} duplicate alerts; notices: {notices}")
