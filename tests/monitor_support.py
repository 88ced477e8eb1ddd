"""Helpers shared by the monitor tests: a tiny traffic bundle, configs, producing and reading topics.

The embedded broker's end offsets are unreliable, so topics are read until the expected number
of records arrived and then a little longer (to catch duplicates). Events are produced to explicit
partitions (event i → partition i % P, offset i // P on a fresh topic), so tests know each
event's alert id in advance.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from monitor.service import Monitor
from monitor.traffic import TRAFFIC_FIELDS, TRAFFIC_KEY, TrafficGenerator
from trainer.bundle import Bundle
from trainer.config import Config, config_from_dict
from trainer.fit import fit

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 2
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
# The traffic schema, with a required categorical and a required key to exercise both checks.
FIELDS = {**TRAFFIC_FIELDS, "country": {"type": "categorical", "required": True},
          "user": {"type": "ignore", "required": True}}
SCHEMA = {"fields": FIELDS, "key": TRAFFIC_KEY, "model": {"epochs": 8, "layers": [16, 4, 16]},
          "threshold": {"target_rate": 0.01}}
MAX_MESSAGE_BYTES = 20_000

# (value, reason): every way an event can be unusable.  Odd values are not among them: see ODD_INPUT.
BAD_INPUT = [
    (b"\xff\xfe\x00 not UTF-8", "invalid_utf8"),
    (b'{"country": "US", ', "invalid_json"),
    (b"", "invalid_json"),
    (None, "invalid_json"),  # a tombstone
    (b'{"a": ' + b"1" * 5000 + b"}", "invalid_json"),  # more digits than Python parses
    (b"[1, 2, 3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b'{"user": "u1", "endpoint": "/login"}', "missing_required"),  # no country
    (b'{"country": "US", "bytes_out": 12}', "missing_required"),  # no user (an ignored, required key)
    (b'{"user": "u1", "country": ["US"]}', "missing_required"),  # required, and not a category value
    (b'{"user": "u1", "country": "US", "latency_ms": NaN}', "non_finite"),
    (b'{"user": "u1", "country": "US", "latency_ms": -Infinity}', "non_finite"),
    (b'{"user": "u1", "country": "US", "latency_ms": 1e999}', "non_finite"),
    (b'{"user": "u1", "country": "US", "pad": "' + b"x" * MAX_MESSAGE_BYTES + b'"}', "oversized"),
]


# (value, unreadable fields): events that are scored however odd their values; unreadable values
# are scored as missing (dead-lettered as wrong_type only with monitor.invalid_values: dead_letter).
ODD_INPUT = [
    (b'{"user": "u1", "country": "US", "bytes_out": "lots"}', ["bytes_out"]),
    (b'{"user": "u1", "country": "US", "bytes_out": 1' + b"0" * 400 + b"}", []),  # beyond float: the largest
    (b'{"user": "u1", "country": "US", "bytes_out": -1}', []),  # a sign never seen in training
    (b'{"user": "u1", "country": "US", "is_mobile": "sometimes"}', ["is_mobile"]),
    (b'{"user": "u1", "country": "US", "event_time": "yesterday"}', ["event_time"]),
    (b'{"user": "u1", "country": "US", "endpoint": {"path": "/"}}', ["endpoint"]),
]


@functools.lru_cache(maxsize=None)
def traffic_bundle() -> Bundle:
    """A small bundle trained once per test session (about a second), saved in a temporary directory."""
    history = TrafficGenerator(seed=1, start=datetime(2024, 1, 1, tzinfo=timezone.utc),
                               events_per_hour=3000 / 168).generate(3000)
    bundle = fit(history, config_from_dict(SCHEMA, environ={}), verbose=False)
    directory = Path(tempfile.mkdtemp(prefix="anomon-test-bundle-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    bundle.save(directory)
    return bundle


def live_events(n: int, seed: int = 5, anomaly_rate: float = 0.05) -> list[dict[str, Any]]:
    """Traffic starting now (so event lag is small), with injected anomalies."""
    return TrafficGenerator(seed=seed, anomaly_rate=anomaly_rate, start=datetime.now(timezone.utc),
                            events_per_hour=360_000).generate(n)


def config_dict(servers: str, **kafka: Any) -> dict[str, Any]:
    """The YAML mapping of a test config: unique topics and group, fast group joins, metrics on any port."""
    run = uuid.uuid4().hex[:10]
    return {
        **SCHEMA,
        "kafka": {"bootstrap_servers": servers, "input_topic": f"events-{run}", "alert_topic": f"alerts-{run}",
                  "dead_letter_topic": f"dlq-{run}", "control_topic": f"control-{run}", "group_id": f"monitor-{run}",
                  "partitions": PARTITIONS,
                  **FAST_GROUP, **kafka},
        "monitor": {"max_message_bytes": MAX_MESSAGE_BYTES},
        "metrics": {"port": 0},
    }


def make_config(servers: str, **kafka: Any) -> Config:
    return config_from_dict(config_dict(servers, **kafka), environ={})


def write_config(directory: Path, raw: dict[str, Any]) -> Path:
    path = directory / "anomon.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def produce(servers: str, topic: str, values: list[bytes | None], partitions: int = PARTITIONS,
            keys: list[bytes | None] | None = None) -> None:
    """Value i goes to partition i % partitions, in order, keyed by `keys[i]` (default: i)."""
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", max_request_size=4 * MAX_MESSAGE_BYTES)
    try:
        for i, value in enumerate(values):
            key = keys[i] if keys else str(i).encode()
            producer.send(topic, value=value, key=key, partition=i % partitions)
        producer.flush(timeout=20)
    finally:
        producer.close()


def encode(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def alert_id(topic: str, i: int, partitions: int = PARTITIONS) -> str:
    return f"{topic}/{i % partitions}/{i // partitions}"


def expected_alerts(bundle: Bundle, events: list[dict[str, Any]], topic: str,
                    partitions: int = PARTITIONS) -> tuple[set[str], set[str]]:
    """Alert ids the monitor must publish, computed offline; and ids too close to the threshold to call.

    Batches of another size may round differently in float32: a score within 1e-5 of the
    threshold could fall either way.
    """
    scores = bundle.score(events, strict=True).scores
    threshold = bundle.threshold.value
    expected = {alert_id(topic, i, partitions) for i in np.flatnonzero(scores >= threshold)}
    borderline = {alert_id(topic, i, partitions)
                  for i in np.flatnonzero(np.abs(scores - threshold) <= 1e-5 * threshold)}
    return expected, borderline


def read_topic(servers: str, topic: str, count: int, *, partitions: int = PARTITIONS, timeout_s: float = 30,
               idle_s: float = 1.0) -> list[ConsumerRecord]:
    """Every record of `topic`: read until `count` arrived, then `idle_s` more to catch extras."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        idle_until = time.monotonic() + idle_s
        while time.monotonic() < idle_until:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def alerts_of(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


def wait_for(condition: Callable[[], Any], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


@contextlib.contextmanager
def running(monitor: Monitor, partitions: int | None = PARTITIONS) -> Iterator[Monitor]:
    """Run `monitor` in a thread; wait until it owns `partitions` partitions (None: do not wait)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            monitor.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-monitor", daemon=True)
    thread.start()
    try:
        if partitions is not None:
            assert wait_for(lambda: len(monitor.assignment) == partitions or errors, 20), "no partition assigned"
        yield monitor
    finally:
        monitor.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the monitor did not stop"
        assert not errors, errors
