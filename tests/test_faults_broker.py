"""Broker outage: the broker stops under the running monitor (the real ``anomon monitor`` process,
default reconnection settings), stays down 20 s, and a new one starts on the same port.

The embedded broker keeps nothing across a restart (memory storage): the test recreates the
topics and produces the tail again, as an operator would after losing a single-node cluster.
Throughout, ``/metrics`` answers and the process lives; ``/readyz`` turns 503 during the outage
and 200 after; no traceback is printed; every event produced after the restart is scored, its
alerts exactly the offline ones, its offsets committed.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from faults_support import committed, free_port, http_status, spawn, stop, wait_until
from monitor_support import config_dict, encode, expected_alerts, live_events, produce, read_topic, traffic_bundle, \
    write_config

from monitor.broker import EmbeddedBroker
from monitor.transport import ensure_topics
from trainer.config import config_from_dict

OUTAGE_S = 20
PARTITIONS = 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_monitor_rides_out_a_20_s_broker_outage_and_loses_nothing_after_it(tmp_path):
    bundle = traffic_bundle()
    broker = EmbeddedBroker().start()
    port = broker.port
    restarted = EmbeddedBroker(port=port)
    metrics_port = free_port()
    raw = {**config_dict(broker.bootstrap_servers, partitions=PARTITIONS), "metrics": {"port": metrics_port}}
    config, config_path = config_from_dict(raw, environ={}), write_config(tmp_path, raw)
    k, url = config.kafka, f"http://127.0.0.1:{metrics_port}"
    servers = broker.bootstrap_servers
    before, after = live_events(200, seed=3), live_events(400, seed=4)
    log = tmp_path / "monitor.log"
    monitor = spawn(["-m", "monitor.cli", "monitor", "--config", str(config_path), "--model", str(bundle.path)], log)
    try:
        assert wait_until(lambda: http_status(url + "/readyz") == 200, 60), log.read_text()[-3000:]
        produce(servers, k.input_topic, encode(before))
        assert wait_until(lambda: committed(servers, k.group_id) == {0: 100, 1: 100}, 60), log.read_text()[-3000:]

        broker.stop()
        started, ready, metrics = time.monotonic(), [], []
        while time.monotonic() - started < OUTAGE_S:
            ready.append(http_status(url + "/readyz"))
            metrics.append(http_status(url + "/metrics"))
            time.sleep(0.5)
        assert monitor.poll() is None
        assert set(metrics) == {200}  # metrics answer all along
        assert 503 in ready  # not ready once the loss is noticed

        restarted.start()
        # The monitor creates its topics when it reconnects; the operator may well be first.
        ensure_topics(servers, {t: PARTITIONS for t in (k.input_topic, k.alert_topic, k.dead_letter_topic)})
        produce(servers, k.input_topic, encode(after))
        assert wait_until(lambda: committed(servers, k.group_id) == {0: 200, 1: 200}, 120, interval_s=1), (
            log.read_text()[-3000:])
        recovered = http_status(url + "/readyz")
        expected, borderline = expected_alerts(bundle, after, k.input_topic)
        alerts = [json.loads(r.value) for r in read_topic(servers, k.alert_topic, len(expected))]
        assert stop(monitor, sig=15) == 0
    finally:
        stop(monitor)
        broker.stop()
        restarted.stop()

    assert recovered == 200
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)) and set(ids) - borderline == expected - borderline
    text = log.read_text()
    assert not escaped_tracebacks(text), escaped_tracebacks(text)
    assert "Kafka unavailable" in text or "cannot connect to Kafka" in text
    print(f"\noutage: /readyz {ready.count(503)}/{len(ready)} polls 503 during {OUTAGE_S} s, /metrics "
          f"{metrics.count(200)}/{len(metrics)} answered; {len(ids)} alerts after the restart, {len(expected)} expected")



def escaped_tracebacks(log: str) -> list[str]:
    """The tracebacks in a monitor's log that are not a Kafka client's own log record.

    kafka-python logs some connection errors with their traceback (a reset connection during
    the outage, say); an exception escaping anomon's code would be printed by Python itself, or
    logged by one of anomon's loggers.
    """
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ )", log)
    return [r[:300] for r in records if "Traceback" in r and not re.match(r"\S+ \S+ \w+ kafka\.", r)]
