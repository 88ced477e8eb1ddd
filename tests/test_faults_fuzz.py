"""Fuzzed input through the real monitor and broker: hypothesis generates batches of messages (more
than 10,000 in all) of every kind of bad input, interleaved with valid events, and each batch is
checked as it comes out: nothing crashes, every undecodable message is in the dead-letter topic
with its reason header and original bytes, every decodable one is scored, and at the end the
metrics count exactly what was sent.

Each generated message carries the outcome it must have (a dead-letter reason, or ``scored``),
decided by how it was made, never by running the monitor's own code.  Deterministic
(``derandomize``), so a failure reproduces.
"""

from __future__ import annotations

import json
import string
from collections import Counter

from faults_support import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from monitor_support import MAX_MESSAGE_BYTES, config_dict, live_events, running, traffic_bundle

from monitor.deadletter import HEADER_PREFIX
from monitor.service import Monitor
from monitor.transport import ensure_topics
from trainer.config import config_from_dict

MAX_ARRAY_LENGTH = 500  # within max_message_bytes (20,000), so that the array limit is what refuses
MAX_NESTING_DEPTH = 16
EXAMPLES, BATCH = 110, (92, 120)  # at least 10,120 messages
SCORED = "scored"
POOL = live_events(200, seed=21, anomaly_rate=0.1)
OPTIONAL = ["method", "endpoint", "status", "bytes_out", "latency_ms", "failed_logins", "is_mobile", "event_time"]
NOT_A_NUMBER = st.text(alphabet="xyzq !?#", min_size=0, max_size=12)  # never read as a number or a time

event = st.sampled_from(POOL).map(dict)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(-1e6, 1e6),
                      st.text(string.ascii_letters, max_size=10))
shallow_json = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=5), inner,
                                              max_size=4), max_leaves=8)


def dumps(record: dict) -> bytes:
    return json.dumps(record, allow_nan=False).encode()


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@st.composite
def message(draw) -> tuple[bytes | None, str]:
    """(value, expected outcome) of one message, of one kind."""
    kind = draw(st.sampled_from([
        "valid", "valid", "valid", "extra", "wrong_type", "missing", "unreadable_required", "invalid_utf8",
        "truncated", "empty", "tombstone", "not_object", "non_finite", "beyond_float", "big_integer",
        "deep", "deep_ok", "long_array", "array_ok", "huge_string", "string_ok",
    ]))
    record = draw(event)
    if kind == "valid":
        return dumps(record), SCORED
    if kind == "extra":  # fields the schema does not define: ignored, counted
        record.update(draw(st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(
            lambda k: k not in record), shallow_json, min_size=1, max_size=3)))
        return dumps(record), SCORED
    if kind == "wrong_type":  # an unreadable value in a field that is not required: scored as missing
        record[draw(st.sampled_from(OPTIONAL))] = draw(st.one_of(NOT_A_NUMBER, st.lists(json_leaf, max_size=3),
                                                                 st.dictionaries(st.just("x"), json_leaf)))
        return dumps(record), SCORED
    if kind == "missing":
        del record[draw(st.sampled_from(["country", "user"]))]
        return dumps(record), "missing_required"
    if kind == "unreadable_required":
        record["country"] = draw(st.one_of(st.lists(json_leaf, min_size=1, max_size=3),
                                           st.dictionaries(st.just("x"), json_leaf, min_size=1)))
        return dumps(record), "missing_required"
    if kind == "invalid_utf8":
        raw = dumps(record)
        cut = raw.index(b'"country": "') + len(b'"country": "')
        return raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80"])) + raw[cut:], \
            "invalid_utf8"
    if kind == "truncated":
        raw = dumps(record)
        return raw[:draw(st.integers(1, len(raw) - 1))], "invalid_json"
    if kind == "empty":
        return b"", "invalid_json"
    if kind == "tombstone":
        return None, "invalid_json"
    if kind == "not_object":
        value = draw(st.one_of(json_leaf, st.lists(shallow_json, max_size=4)))
        return json.dumps(value).encode(), "not_an_object"
    if kind == "non_finite":
        field = draw(st.sampled_from(["latency_ms", "bytes_out", "failed_logins"]))
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return dumps({**record, field: 0}).replace(f'"{field}": 0'.encode(), f'"{field}": {literal}'.encode()), \
            "non_finite"
    if kind == "beyond_float":
        field = draw(st.sampled_from(["latency_ms", "bytes_out"]))
        exponent = draw(st.integers(309, 5000))
        return dumps({**record, field: 0}).replace(f'"{field}": 0'.encode(), f'"{field}": 1e{exponent}'.encode()), \
            "non_finite"
    if kind == "big_integer":  # beyond 64 bits and float range, within Python's 4300 digits: unreadable
        digits = draw(st.integers(320, 4000))
        return dumps({**record, "bytes_out": 0}).replace(b'"bytes_out": 0', b'"bytes_out": 1' + b"0" * digits), SCORED
    if kind in ("deep", "deep_ok"):
        depth = draw(st.integers(MAX_NESTING_DEPTH + 1, 3000) if kind == "deep" else st.integers(1, MAX_NESTING_DEPTH))
        raw = dumps({**record, "extra": 0}).replace(b'"extra": 0', b'"extra": ' + nested(depth).encode())
        return raw, "oversized" if kind == "deep" else SCORED
    if kind in ("long_array", "array_ok"):
        n = draw(st.integers(MAX_ARRAY_LENGTH + 1, 4000) if kind == "long_array" else st.integers(0, MAX_ARRAY_LENGTH))
        return dumps({**record, "extra": [7] * n}), "oversized" if kind == "long_array" else SCORED
    size = draw(st.integers(MAX_MESSAGE_BYTES + 1, 3 * MAX_MESSAGE_BYTES) if kind == "huge_string"
                else st.integers(0, MAX_MESSAGE_BYTES - 400))
    raw = dumps({**record, "pad": ""})
    raw = raw.replace(b'"pad": ""', b'"pad": "' + b"x" * max(0, size - len(raw)) + b'"')
    return raw, "oversized" if len(raw) > MAX_MESSAGE_BYTES else SCORED


def test_10_000_fuzzed_messages_crash_nothing_and_are_counted_exactly(kafka_broker):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    raw = config_dict(servers, partitions=1)
    raw["monitor"].update(max_array_length=MAX_ARRAY_LENGTH, max_nesting_depth=MAX_NESTING_DEPTH)
    config = config_from_dict(raw, environ={})
    k = config.kafka
    ensure_topics(servers, {k.input_topic: 1, k.alert_topic: 1, k.dead_letter_topic: 1})
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=2, max_request_size=4 * MAX_MESSAGE_BYTES)
    letters = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=20,
                            max_partition_fetch_bytes=4 * MAX_MESSAGE_BYTES)
    letters.assign([TopicPartition(k.dead_letter_topic, 0)])
    letters.seek_to_beginning()
    sent: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(message(), min_size=BATCH[0], max_size=BATCH[1]))
    def batch_comes_out_as_expected(batch: list[tuple[bytes | None, str]]) -> None:
        first = sum(sent.values())
        for i, (value, _) in enumerate(batch):
            producer.send(k.input_topic, value=value, key=str(first + i).encode(), partition=0)
        producer.flush(30)
        for _, outcome in batch:
            sent[outcome] += 1
        total = sum(sent.values())
        assert wait_until(lambda: monitor.totals["events"] == total, 30, interval_s=0.01), (
            monitor.totals, total)
        expected = {str(first + i).encode(): (value or b"", outcome) for i, (value, outcome) in enumerate(batch)
                    if outcome != SCORED}
        got = []
        assert wait_until(lambda: got.extend(r for rs in letters.poll(timeout_ms=20).values() for r in rs)
                          or len(got) >= len(expected), 30, interval_s=0), (len(got), len(expected))
        assert monitor.totals["scored"] == sent[SCORED]
        assert {r.key: dict(r.headers)[HEADER_PREFIX + "reason"].decode() for r in got} == {
            key: outcome for key, (_, outcome) in expected.items()}
        for r in got:
            value, outcome = expected[r.key]
            assert r.value == value or outcome == "oversized" and value.startswith(r.value)

    monitor = Monitor(config, bundle)
    try:
        with running(monitor, partitions=1):
            batch_comes_out_as_expected()
            counters = {(name, tuple(labels.items())): monitor.metrics.registry.get_sample_value(name, labels)
                        for name, labels in [("anomon_events_total", {"result": "scored"}),
                                             ("anomon_events_total", {"result": "dead_letter"})]}
            reasons = {reason: monitor.metrics.registry.get_sample_value("anomon_dead_letter_total",
                                                                         {"reason": reason})
                       for reason in sent if reason != SCORED}
    finally:
        producer.close()
        letters.close()
    total = sum(sent.values())
    assert total >= 10_000, sent
    assert counters[("anomon_events_total", (("result", "scored"),))] == sent[SCORED]
    assert counters[("anomon_events_total", (("result", "dead_letter"),))] == total - sent[SCORED]
    assert reasons == {reason: n for reason, n in sent.items() if reason != SCORED}
    print(f"\nfuzz: {total} messages, {dict(sorted(sent.items()))}")
