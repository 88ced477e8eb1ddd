"""The monitor against the embedded broker, over TCP: alerts, dead letters, metrics, delivery guarantees.

Expected alerts are computed offline with `Bundle.score` on the same events. Crashes and
shutdowns use real subprocesses and real signals.
"""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from faults_support import committed
from monitor_support import (
    BAD_INPUT,
    PARTITIONS,
    REPO_ROOT,
    alert_id,
    alerts_of,
    config_dict,
    encode,
    expected_alerts,
    live_events,
    make_config,
    produce,
    read_topic,
    running,
    traffic_bundle,
    wait_for,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

from monitor.broker import EmbeddedBroker
from monitor.deadletter import HEADER_PREFIX
from monitor.metrics import MetricsServer
from monitor.service import Backoff, Monitor, kafka_transport
from monitor.transport import ensure_topics
from trainer.config import Config, config_from_dict

ALERT_FIELDS = {"alert_id", "event_time", "detected_at", "source", "score", "threshold", "record_score", "severity",
                "model_version", "contributions", "components", "event"}


# -- helpers ------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def http_status(url: str) -> int | None:
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_topics(config: Config) -> None:
    k = config.kafka
    ensure_topics(k.bootstrap_servers, {t: k.partitions for t in (k.input_topic, k.alert_topic, k.dead_letter_topic)})


def start_process(args: list[str], log: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, stderr=log.open("w"), **kwargs)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


# -- scoring ------------------------------------------------------------------


# 0 unsettled batches: every batch waits for its records to be acknowledged before the next poll.
@pytest.mark.parametrize("max_unsettled_batches", [64, 0])
def test_events_in_exactly_the_expected_alerts_out(kafka_broker, max_unsettled_batches, client_name):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers, client=client_name)
    events = live_events(600)
    expected, borderline = expected_alerts(bundle, events, config.kafka.input_topic)
    assert len(expected) >= 10

    with running(Monitor(config, bundle, max_unsettled_batches=max_unsettled_batches)) as monitor:
        produce(servers, config.kafka.input_topic, encode(events))
        assert wait_for(lambda: monitor.totals["events"] == 600, 30), monitor.totals
        alerts = alerts_of(read_topic(servers, config.kafka.alert_topic, len(expected)))
    # Stopped: the commits sent without waiting were confirmed.
    assert committed(servers, config.kafka.group_id) == {p: 600 // PARTITIONS for p in range(PARTITIONS)}

    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))  # each alert once
    assert set(ids) - borderline == expected - borderline
    assert monitor.totals["scored"] == 600 and monitor.totals["dead_letters"] == 0
    scores = bundle.score(events, strict=True).scores
    for alert in alerts:
        topic, partition, offset = alert["alert_id"].rsplit("/", 2)
        i = int(offset) * PARTITIONS + int(partition)
        assert set(alert) == ALERT_FIELDS
        assert alert["event"] == events[i]
        assert alert["score"] == pytest.approx(scores[i], rel=1e-4)
        assert alert["source"] == {"topic": topic, "partition": int(partition), "offset": int(offset)}
        assert len(alert["contributions"]) == 5 and {c["field"] for c in alert["contributions"]} <= {
            f.name for f in bundle.config.fields}
        assert alert["model_version"] == bundle.version


def test_bad_input_goes_to_the_dead_letter_topic_with_its_reason(kafka_broker, client_name):
    servers = kafka_broker.bootstrap_servers
    config = make_config(servers, client=client_name)
    good = encode(live_events(2))
    values = [good[0], *(value for value, _ in BAD_INPUT), good[1]]
    keys = [f"key-{i}".encode() for i in range(len(values))]

    with running(Monitor(config, traffic_bundle())) as monitor:
        produce(servers, config.kafka.input_topic, values, keys=keys)
        assert wait_for(lambda: monitor.totals["events"] == len(values), 30), monitor.totals
        letters = read_topic(servers, config.kafka.dead_letter_topic, len(BAD_INPUT))

    assert monitor.totals["scored"] == 2  # processing went on after every bad event
    assert len(letters) == len(BAD_INPUT)
    for letter in letters:
        headers = dict(letter.headers)
        partition, offset = int(headers[HEADER_PREFIX + "partition"]), int(headers[HEADER_PREFIX + "offset"])
        i = offset * PARTITIONS + partition
        original, reason = BAD_INPUT[i - 1]
        assert headers[HEADER_PREFIX + "reason"].decode() == reason
        assert headers[HEADER_PREFIX + "topic"].decode() == config.kafka.input_topic
        assert headers[HEADER_PREFIX + "message"]
        assert letter.key == keys[i]
        if reason == "oversized":
            assert original.startswith(letter.value)
        else:
            assert letter.value == (original or b"")


def test_metrics_endpoint_counts_everything(kafka_broker):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers)
    events = live_events(300)
    for event in events[:10]:
        event["referrer"] = "search"  # unknown to the schema: ignored, counted
    values = encode(events) + [value for value, _ in BAD_INPUT]
    batch = bundle.score(events, strict=True)
    severities = Counter(s for s in bundle.threshold.severity(batch.scores) if s is not None)

    monitor = Monitor(config, bundle, lag_interval_s=0.2)
    with MetricsServer(monitor.metrics.registry, port=0, ready=lambda: monitor.ready) as server:
        with running(monitor):
            produce(servers, config.kafka.input_topic, values)
            assert wait_for(lambda: monitor.totals["events"] == len(values), 30), monitor.totals
            time.sleep(0.5)  # a lag measurement after the last batch
            assert http_status(server.url + "/healthz") == 200
            assert http_status(server.url + "/readyz") == 200
            samples = scrape(server.url)
        assert http_status(server.url + "/readyz") == 503  # stopped
        assert http_status(server.url + "/healthz") == 200

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("anomon_events_total", result="scored") == 300
    assert value("anomon_events_total", result="dead_letter") == len(BAD_INPUT)
    for severity in ("warning", "minor", "major", "critical"):
        assert value("anomon_alerts_total", severity=severity) == severities[severity]
    for reason, n in Counter(reason for _, reason in BAD_INPUT).items():
        assert value("anomon_dead_letter_total", reason=reason) == n
    assert value("anomon_unknown_fields_total") == 10
    assert value("anomon_score_ratio_count") == 300
    assert value("anomon_score_ratio_sum") == pytest.approx(batch.scores.sum() / bundle.threshold.value, rel=1e-4)
    assert value("anomon_score_ratio_bucket", le="1.0") == np.sum(batch.scores <= bundle.threshold.value)
    assert value("anomon_batch_size_sum") == len(values)
    assert value("anomon_batch_size_count") == value("anomon_processing_seconds_count") >= 1
    assert value("anomon_event_lag_seconds_count") == 300
    assert value("anomon_event_lag_seconds_sum") / 300 < 60  # events stamped a moment ago
    assert {value("anomon_consumer_lag_messages", partition=str(p)) is not None for p in range(PARTITIONS)} == {True}
    assert value("anomon_threshold") == bundle.threshold.value
    assert value("anomon_model_info", version=bundle.version) == 1
    assert [k for k in samples if k[0] == "anomon_build_info"]


def test_two_monitors_in_a_group_split_partitions_and_score_each_event_once(kafka_broker, client_name):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers, partitions=4, client=client_name)
    events = live_events(400)
    expected, borderline = expected_alerts(bundle, events, config.kafka.input_topic, partitions=4)
    everything = {(config.kafka.input_topic, p) for p in range(4)}

    with running(Monitor(config, bundle), partitions=None) as first, running(Monitor(config, bundle),
                                                                               partitions=None) as second:
        # Produce only once the split is stable, so that no batch is read before a rebalance.
        assert wait_for(lambda: first.assignment and second.assignment and not first.assignment & second.assignment
                        and first.assignment | second.assignment == everything, 30)
        produce(servers, config.kafka.input_topic, encode(events), partitions=4)
        assert wait_for(lambda: first.totals["events"] + second.totals["events"] >= 400, 30)
        alerts = alerts_of(read_topic(servers, config.kafka.alert_topic, len(expected), partitions=4))

    assert len(first.assignment) == len(second.assignment) == 2
    assert first.totals["events"] > 0 and second.totals["events"] > 0
    assert first.totals["events"] + second.totals["events"] == 400  # exactly once between them
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))
    assert set(ids) - borderline == expected - borderline


class AcknowledgesOnCue:
    """A real transport whose produced records count as unacknowledged until `acknowledged` is set.

    Until then the monitor keeps every batch unsettled; what it polls and commits is recorded.
    """

    def __init__(self, transport, acknowledged: threading.Event) -> None:
        self.transport, self.acknowledged = transport, acknowledged
        self.polled = 0
        self.commits: list[tuple[set, dict]] = []  # (assignment when committing, offsets committed)

    def __getattr__(self, name):
        return getattr(self.transport, name)

    def poll(self, max_records, timeout_ms):
        messages = self.transport.poll(max_records, timeout_ms)
        self.polled += len(messages)
        return messages

    def pending(self):
        return self.transport.pending() if self.acknowledged.is_set() else 1

    def commit(self, offsets, *, wait=True):
        self.commits.append((self.transport.assignment(), dict(offsets)))
        self.transport.commit(offsets, wait=wait)


def test_after_a_rebalance_a_monitor_commits_only_the_partitions_it_still_owns(kafka_broker, client_name):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers, partitions=4, client=client_name)
    k = config.kafka
    events = live_events(200)
    acknowledged = threading.Event()
    transports: list[AcknowledgesOnCue] = []

    def transport_factory() -> AcknowledgesOnCue:
        transports.append(AcknowledgesOnCue(kafka_transport(config), acknowledged))
        return transports[-1]

    with running(Monitor(config, bundle, transport_factory=transport_factory), partitions=4) as first:
        produce(servers, k.input_topic, encode(events), partitions=4)
        assert wait_for(lambda: transports[-1].polled == 200, 30)  # scored, none of it settled
        with running(Monitor(config, bundle), partitions=None) as second:
            # The second member takes two partitions and reads them again from the start.
            assert wait_for(lambda: len(first.assignment) == len(second.assignment) == 2
                            and second.totals["events"] == 100, 30)
            acknowledged.set()
            assert wait_for(lambda: transports[-1].commits, 10)
            kept = set(first.assignment)

    commits = transports[-1].commits
    assert all(set(offsets) <= assigned for assigned, offsets in commits)
    assert set().union(*(offsets for _, offsets in commits)) == kept
    assert committed(servers, k.group_id) == {p: 50 for p in range(4)}


# -- delivery guarantees ---------------------------------------------------------

# Runs the real monitor, but its first commit announces itself and hangs: the test kills it there,
# after the batch's alerts were flushed and before its offsets were committed.
HANGS_AT_COMMIT = """
import sys, time
from monitor.service import Monitor, kafka_transport
from trainer.bundle import Bundle
from trainer.config import load_config

class HangsAtCommit:
    def __init__(self, transport):
        self.transport = transport
    def __getattr__(self, name):
        return getattr(self.transport, name)
    def commit(self, offsets, wait=True):
        print("COMMITTING", flush=True)
        time.sleep(3600)

config = load_config(sys.argv[1])
Monitor(config, Bundle.load(sys.argv[2]), transport_factory=lambda: HangsAtCommit(kafka_transport(config))).run()
"""


def test_a_monitor_killed_before_committing_loses_nothing_and_repeats_the_same_alert_ids(kafka_broker, tmp_path,
                                                                                         client_name):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    raw = config_dict(servers, client=client_name)
    config, config_path = config_from_dict(raw, environ={}), write_config(tmp_path, raw)
    k = config.kafka
    events = live_events(300, anomaly_rate=0.1)
    expected, borderline = expected_alerts(bundle, events, k.input_topic)
    create_topics(config)
    produce(servers, k.input_topic, encode(events))

    crashing = start_process(["-c", HANGS_AT_COMMIT, str(config_path), str(bundle.path)], tmp_path / "crash.log",
                             stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([crashing.stdout], [], [], 60)
        assert ready and crashing.stdout.readline() == b"COMMITTING\n", (tmp_path / "crash.log").read_text()
        before_crash = {a["alert_id"] for a in alerts_of(read_topic(servers, k.alert_topic, 1, idle_s=0.5))}
        assert before_crash  # the batch's alerts are out before its offsets are committed...
        assert committed(servers, k.group_id) == {}  # ...and nothing is committed yet
        crashing.send_signal(signal.SIGKILL)
        crashing.wait(timeout=10)
    finally:
        stop_process(crashing)

    restarted = start_process(["-m", "monitor.cli", "monitor", "--config", str(config_path), "--model",
                               str(bundle.path)], tmp_path / "monitor.log")
    try:
        everything = {p: len(events) // PARTITIONS for p in range(PARTITIONS)}
        assert wait_for(lambda: committed(servers, k.group_id) == everything, 60, interval_s=0.5), (
            tmp_path / "monitor.log").read_text()
        alerts = alerts_of(read_topic(servers, k.alert_topic, len(expected) + len(before_crash)))
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=30) == 0
    finally:
        stop_process(restarted)

    counts = Counter(a["alert_id"] for a in alerts)
    assert set(counts) - borderline == expected - borderline  # nothing lost
    assert {i for i, n in counts.items() if n > 1} == before_crash  # re-delivered under the same ids
    assert max(counts.values()) == 2


def test_sigterm_finishes_the_batch_in_hand_commits_and_exits_0(kafka_broker, tmp_path):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    port = free_port()
    raw = {**config_dict(servers), "metrics": {"port": port}}
    config, config_path = config_from_dict(raw, environ={}), write_config(tmp_path, raw)
    k = config.kafka
    events = live_events(1200)
    expected, borderline = expected_alerts(bundle, events, k.input_topic)
    create_topics(config)

    def stream() -> None:  # 500 events/s for a little over two seconds
        for start in range(0, len(events), 100):
            produce(servers, k.input_topic, encode(events[start:start + 100]))
            time.sleep(0.2)

    monitor = start_process(["-m", "monitor.cli", "monitor", "--config", str(config_path), "--model",
                             str(bundle.path)], tmp_path / "monitor.log")
    sender = threading.Thread(target=stream)
    try:
        assert wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 30)
        sender.start()  # a stream of events: SIGTERM lands while it flows
        assert wait_for(lambda: scrape(f"http://127.0.0.1:{port}").get(
            ("anomon_events_total", (("result", "scored"),)), 0) > 0, 30)
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=30) == 0
    finally:
        stop_process(monitor)
        sender.join()

    log = (tmp_path / "monitor.log").read_text()
    processed = int(re.search(r"stopped: (\d+) events", log).group(1))
    offsets = committed(servers, k.group_id)
    assert 0 < sum(offsets.values()) == processed  # everything read was committed before exiting
    # Every event below a committed offset has its alert in the topic.
    done = {alert_id(k.input_topic, i) for i in range(len(events)) if i // PARTITIONS < offsets.get(i % PARTITIONS, 0)}
    want = (expected & done) - borderline
    alerts = {a["alert_id"] for a in alerts_of(read_topic(servers, k.alert_topic, len(want)))}
    assert want <= alerts


def test_monitor_recovers_by_itself_when_the_broker_comes_back(client_name):
    bundle = traffic_bundle()
    broker = EmbeddedBroker().start()
    servers, port = broker.bootstrap_servers, broker.port
    restarted = EmbeddedBroker(port=port)  # same address; in-memory storage, so an empty broker
    config = make_config(servers, client=client_name)
    k = config.kafka
    monitor = Monitor(config, bundle, lag_interval_s=0.3, backoff=Backoff(0.2, 1.0), flush_timeout_s=3,
                      transport_factory=lambda: kafka_transport(config, bootstrap_timeout_ms=1000,
                                                                close_timeout_s=1, lag_timeout_ms=500))
    events = live_events(100)
    try:
        with MetricsServer(monitor.metrics.registry, port=0, ready=lambda: monitor.ready) as server, running(monitor):
            produce(servers, k.input_topic, encode(events[:50]))
            assert wait_for(lambda: monitor.totals["events"] == 50, 30)
            assert http_status(server.url + "/readyz") == 200

            broker.stop()
            assert wait_for(lambda: http_status(server.url + "/readyz") == 503, 20)
            assert http_status(server.url + "/metrics") == 200  # metrics keep serving
            # The monitor drops its client (a real broker keeps topics and offsets over a restart;
            # this one forgets them, so the old client's positions would be wrong).
            assert wait_for(lambda: monitor.totals["disconnects"] == 1, 20)

            restarted.start()
            assert wait_for(lambda: monitor.ready and len(monitor.assignment) == PARTITIONS, 60)
            assert http_status(server.url + "/readyz") == 200
            produce(servers, k.input_topic, encode(events[50:]))  # topics were created again
            assert wait_for(lambda: monitor.totals["events"] == 100, 30), monitor.totals
            expected, borderline = expected_alerts(bundle, events[50:], k.input_topic)
            alerts = alerts_of(read_topic(servers, k.alert_topic, len(expected)))
    finally:
        broker.stop()
        restarted.stop()
    assert {a["alert_id"] for a in alerts} - borderline == expected - borderline
