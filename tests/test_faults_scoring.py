"""A bug in scoring, and events over the size limits: dead-lettered, logged once per batch, and the
monitor keeps going.  The bug is injected by a bundle whose ``score`` raises for chosen events."""

from __future__ import annotations

import json
import logging

import pytest
from faults_support import committed, wait_until
from monitor_support import PARTITIONS, encode, live_events, make_config, produce, read_topic, running, traffic_bundle

from monitor.deadletter import HEADER_PREFIX, DeadLetterReason
from monitor.limits import ShapeLimits
from monitor.pipeline import BatchScorer
from monitor.service import Monitor
from monitor.transport import Record


class BuggyBundle:
    """The real bundle, whose ``score`` raises when a batch holds an event that `bug` picks."""

    def __init__(self, bundle, bug) -> None:
        self.bundle, self.bug = bundle, bug

    def __getattr__(self, name):
        return getattr(self.bundle, name)

    def score(self, records, *args, **kwargs):
        if any(map(self.bug, records)):
            raise ZeroDivisionError("a bug in scoring")
        return self.bundle.score(records, *args, **kwargs)


def records(values: list[bytes]) -> list[Record]:
    return [Record("events", 0, i, str(i).encode(), v) for i, v in enumerate(values)]


def scoring_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "monitor.pipeline" and r.levelno >= logging.ERROR]


def test_a_systematic_bug_is_one_log_line_per_batch_and_every_event_a_processing_error(caplog):
    scorer = BatchScorer(BuggyBundle(traffic_bundle(), lambda record: True))
    result = scorer.process(records(encode(live_events(300))))
    assert result.scored == 0 and not result.alerts
    assert [d.reason for d in result.dead_letters] == [DeadLetterReason.PROCESSING_ERROR] * 300
    assert {dict(d.headers)[HEADER_PREFIX + "message"] for d in result.dead_letters} == {
        b"ZeroDivisionError('a bug in scoring')"}
    (line,) = scoring_errors(caplog)  # one line, one traceback, for 300 failures
    assert "a batch of 300 events from events/0/0" in line.getMessage()
    assert "300 of them failed again" in line.getMessage() and line.exc_info is not None


def test_a_bug_on_one_event_sets_aside_that_event_only(caplog):
    events = live_events(300)
    events[17]["boom"] = True  # outside the schema: ignored by the model, picked by the bug
    scorer = BatchScorer(BuggyBundle(traffic_bundle(), lambda record: "boom" in record))
    result = scorer.process(records(encode(events)))
    assert result.scored == 299
    assert [(d.reason, dict(d.headers)[HEADER_PREFIX + "offset"]) for d in result.dead_letters] == [
        (DeadLetterReason.PROCESSING_ERROR, b"17")]
    (line,) = scoring_errors(caplog)
    assert "1 of them failed again" in line.getMessage()


def test_the_monitor_keeps_going_through_a_scoring_bug(kafka_broker):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers)
    k = config.kafka
    events = live_events(400)
    for i in (5, 150, 151, 399):
        events[i]["boom"] = True
    monitor = Monitor(config, bundle)
    monitor.scorer.bundle = BuggyBundle(bundle, lambda record: "boom" in record)
    with running(monitor):
        produce(servers, k.input_topic, encode(events))
        assert wait_until(lambda: monitor.totals["events"] == 400, 30), monitor.totals
        letters = read_topic(servers, k.dead_letter_topic, 4)
        assert wait_until(lambda: committed(servers, k.group_id) == {p: 200 for p in range(PARTITIONS)}, 20)
    assert monitor.totals["scored"] == 396
    got = sorted(int(dict(r.headers)[HEADER_PREFIX + "offset"]) * PARTITIONS
                 + int(dict(r.headers)[HEADER_PREFIX + "partition"]) for r in letters)
    assert got == [5, 150, 151, 399]
    assert {dict(r.headers)[HEADER_PREFIX + "reason"] for r in letters} == {b"processing_error"}
    assert [json.loads(r.value) for r in letters][0]["boom"] is True  # the original bytes


# -- size limits before decoding --------------------------------------------------


@pytest.mark.parametrize("value, problem", [
    (b'{"a": ' + b"[" * 17 + b"]" * 17 + b"}", "a field nests 17 levels deep, more than monitor.max_nesting_depth 16"),
    (b'{"a": ' + b'{"b": ' * 17 + b"1" + b"}" * 18, "a field nests 17 levels deep"),
    (b'{"a": [' + b",".join([b"1"] * 10_001) + b"]}", "an array of 10001 elements, more than monitor.max_array_length"),
    (b'{"a": [[' + b",".join([b"0"] * 10_001) + b"]]}", "an array of 10001 elements"),
])
def test_deep_or_long_values_are_oversized_before_decoding(value, problem, monkeypatch):
    decoded = []
    monkeypatch.setattr("monitor.pipeline.orjson.loads", lambda v: decoded.append(v))
    result = BatchScorer(traffic_bundle()).process(records([value]))
    (letter,) = result.dead_letters
    assert letter.reason == DeadLetterReason.OVERSIZED
    assert problem in dict(letter.headers)[HEADER_PREFIX + "message"].decode()
    assert not decoded  # refused from the bytes alone


@pytest.mark.parametrize("value", [
    b'{"a": ' + b"[" * 16 + b"]" * 16 + b"}",  # at the limit
    b'{"a": [' + b",".join([b"1"] * 10_000) + b"]}",
    b'{"s": "' + b"[" * 100 + b"," * 30_000 + b'\\\\", "t": "\\"[[[[[[[[[[[[[[[[[[[[["}',  # inside strings
    b'{"a": [1, 2], "b": [' + b"[1, 2], " * 9_999 + b"[3]]}",  # 10,000 short arrays in one
])
def test_values_within_the_limits_pass(value):
    assert ShapeLimits().problem(value) is None
