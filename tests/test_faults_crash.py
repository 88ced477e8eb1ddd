"""Crash, repeatedly: the real monitor killed with ``kill -9`` at seeded random moments while 50,000
events stream in, restarted each time; then an audit against the offline batch scores.

The audit proves at-least-once delivery from the outside: every input offset was scored (the
journal, see `faults_support`), every event at or above the threshold has its alert (alert ids
against `Bundle.score` on the same events), every offset is committed, and whatever came out twice
was scored again by the run after a crash (never twice by one run), under the same ``alert_id``
with the same content.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import pytest
from kafka import KafkaProducer
from faults_support import Journal, MonitorProcess, committed, delete_topics, wait_until
from monitor_support import (
    alert_id,
    config_dict,
    encode,
    expected_alerts,
    live_events,
    read_topic,
    traffic_bundle,
    write_config,
)

from trainer.config import config_from_dict

EVENTS = 30_000
PARTITIONS = 4
KILLS = 6
SEED = 20261202
RATE = 800  # events per second: the stream lasts about 40 s, through the kills
STREAM_S = EVENTS / RATE


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kill_9_at_random_moments_loses_nothing_and_duplicates_only_after_crashes(kafka_broker, tmp_path):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    raw = config_dict(servers, partitions=PARTITIONS)
    config, config_path = config_from_dict(raw, environ={}), write_config(tmp_path, raw)
    k = config.kafka
    events = live_events(EVENTS, seed=11, anomaly_rate=0.02)
    expected, borderline = expected_alerts(bundle, events, k.input_topic, partitions=PARTITIONS)
    values = encode(events)
    # Each kill: not before its moment into the stream, and, while the stream flows, a moment
    # after the run has scored its first batch (so that it lands mid-work, not mid-start-up); once
    # the stream is over, at its moment whatever the run is doing.  Seeded: the same schedule on
    # any machine, however fast it restarts a monitor.
    rng = random.Random(SEED)
    schedule = [(moment, rng.uniform(0.05, 1.5)) for moment in sorted(rng.uniform(2.0, STREAM_S)
                                                                      for _ in range(KILLS))]

    def stream() -> None:
        producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
        try:
            for start in range(0, EVENTS, RATE // 10):
                # Offsets known in advance: event i is partition i % 4, offset i // 4.
                for i in range(start, min(start + RATE // 10, EVENTS)):
                    producer.send(k.input_topic, values[i], key=str(i).encode(), partition=i % PARTITIONS)
                producer.flush(timeout=30)
                time.sleep(0.1)
        finally:
            producer.close()

    monitor = MonitorProcess(config_path, bundle.path, tmp_path)
    sender = threading.Thread(target=stream, daemon=True)
    try:
        monitor.start()
        started = time.monotonic()
        sender.start()
        for run, (moment, delay) in enumerate(schedule, start=1):
            time.sleep(max(0.0, started + moment - time.monotonic()))
            assert wait_until(lambda: monitor.scored_lines(run) > 0 or not sender.is_alive(), 90), (
                monitor.log.read_text()[-3000:])
            time.sleep(delay)
            monitor.kill()
            monitor.start()
        sender.join(timeout=180)
        assert not sender.is_alive()
        everything = {p: len(range(p, EVENTS, PARTITIONS)) for p in range(PARTITIONS)}
        assert wait_until(lambda: committed(servers, k.group_id) == everything, 180, interval_s=1), (
            committed(servers, k.group_id), monitor.log.read_text()[-3000:])
        assert wait_until(monitor.connected, 60)  # the last run may have had nothing left to do
        assert monitor.terminate() == 0
        alerts = [json.loads(r.value) for r in read_topic(servers, k.alert_topic, len(expected), partitions=PARTITIONS,
                                                          timeout_s=60, idle_s=2)]
        letters = read_topic(servers, k.dead_letter_topic, 0, partitions=PARTITIONS, idle_s=0.5)
    finally:
        if monitor.process is not None:
            monitor.kill()
        delete_topics(servers, [k.input_topic, k.alert_topic, k.dead_letter_topic])

    # Every offset scored at least once; nothing scored twice by one run; repeats only by the run after a kill.
    journal = Journal.read(monitor.journal)
    assert set(journal.scored) == {(i % PARTITIONS, i // PARTITIONS) for i in range(EVENTS)}
    assert all(len(runs) == len(set(runs)) for runs in journal.scored.values())
    final_run = KILLS + 1
    first_runs = Counter(runs[0] for runs in journal.scored.values() if len(runs) > 1)
    assert final_run not in first_runs  # the clean stop committed all it scored: the crashes are the only cause
    rescored = {alert_id(k.input_topic, offset * PARTITIONS + partition, PARTITIONS)
                for (partition, offset), runs in journal.scored.items() if len(runs) > 1}

    # Every alert expected from the offline scores, no other; duplicates only of re-scored events, identical.
    counts = Counter(a["alert_id"] for a in alerts)
    assert set(counts) - borderline == expected - borderline
    duplicated = {i for i, n in counts.items() if n > 1}
    assert duplicated <= rescored
    by_id: dict[str, dict] = {}
    for alert in alerts:
        same = {key: value for key, value in alert.items() if key != "detected_at"}
        assert by_id.setdefault(alert["alert_id"], same) == same
    assert not letters
    print(f"\ncrash test: {KILLS} kills (seed {SEED}; not before {', '.join(f'{m:.1f}' for m, _ in schedule)} s "
          f"into the stream, then {', '.join(f'{d:.2f}' for _, d in schedule)} s after the run's first batch), "
          f"{EVENTS} events, {len(rescored)} scored again after a crash "
          f"(per run: {dict(sorted(journal.repeats().items()))}), {len(alerts)} alerts of which "
          f"{sum(n - 1 for n in counts.values())} duplicates ({len(duplicated)} alert ids), "
          f"{len(expected)} expected")
