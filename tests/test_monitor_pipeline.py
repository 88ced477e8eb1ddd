"""The monitor's batch step without Kafka: alerts, dead letters, metrics inputs."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
from monitor_support import BAD_INPUT, MAX_MESSAGE_BYTES, ODD_INPUT, encode, live_events, traffic_bundle

from monitor.deadletter import HEADER_PREFIX
from monitor.pipeline import BatchScorer
from monitor.service import MonitorError, check_fields
from monitor.transport import Message, Record
from trainer.config import config_from_dict
from trainer.fit import fit

TOPIC = "events"
ALERT_KEYS = {"alert_id", "event_time", "detected_at", "source", "score", "threshold", "record_score", "severity",
              "model_version", "contributions", "components", "event"}


def messages(values: list[bytes | None], key: bytes | None = b"k") -> list[Message]:
    return [Record(TOPIC, 0, i, key, v, [("trace", b"t1")], 1_700_000_000_000) for i, v in enumerate(values)]


@pytest.fixture(scope="module")
def scorer() -> BatchScorer:
    return BatchScorer(traffic_bundle(), key_field="user", max_message_bytes=MAX_MESSAGE_BYTES)


def test_alerts_exactly_for_records_at_or_above_the_threshold(scorer):
    bundle = traffic_bundle()
    events = live_events(400)
    expected = bundle.score(events, strict=True).scores
    result = scorer.process(messages(encode(events)))

    assert result.scored == 400 and not result.dead_letters
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5)
    above = np.flatnonzero(expected >= bundle.threshold.value)
    assert above.size > 0
    assert [a.alert_id for a in result.alerts] == [f"{TOPIC}/0/{i}" for i in above]


def test_alert_message_carries_the_documented_fields(scorer):
    bundle = traffic_bundle()
    events = [e for e in live_events(400) if e["label"] == "exfiltration"][:1]
    raw = json.dumps(events[0]).encode()
    [alert] = scorer.process(messages([raw])).alerts
    body = json.loads(alert.value)

    assert set(body) == ALERT_KEYS
    assert body["alert_id"] == f"{TOPIC}/0/0"
    assert body["source"] == {"topic": TOPIC, "partition": 0, "offset": 0}
    assert body["event"] == events[0]  # spliced in as received
    assert raw in alert.value
    assert alert.key == events[0]["user"].encode()
    assert body["threshold"] == bundle.threshold.value and body["score"] >= body["threshold"]
    assert 25 <= body["record_score"] <= 100
    assert body["severity"] == alert.severity in ("warning", "minor", "major", "critical")
    assert body["model_version"] == bundle.version
    assert datetime.fromisoformat(body["event_time"]) == datetime.fromisoformat(events[0]["event_time"])
    assert body["detected_at"].endswith("Z")
    contributions = body["contributions"]
    assert len(contributions) == 5
    assert all(set(c) == {"field", "share", "actual", "expected"} for c in contributions)
    assert [c["share"] for c in contributions] == sorted((c["share"] for c in contributions), reverse=True)
    assert contributions[0]["field"] == "bytes_out" and contributions[0]["actual"] == events[0]["bytes_out"]
    assert set(body["components"]) == {"reconstruction", "neighbours", "range"}
    assert sum(body["components"].values()) == pytest.approx(body["score"], rel=1e-5)



def test_bad_input_becomes_dead_letters_with_reason_and_context(scorer):
    good = json.dumps(live_events(1)[0]).encode()
    values = [good, *(v for v, _ in BAD_INPUT), good]
    result = scorer.process(messages(values))

    assert result.scored == 2  # the batch goes on around the bad events
    letters = sorted(result.dead_letters, key=lambda d: int(dict(d.headers)[HEADER_PREFIX + "offset"]))
    assert [d.reason for d in letters] == [reason for _, reason in BAD_INPUT]
    for offset, letter in enumerate(letters, start=1):
        headers = dict(letter.headers)
        assert headers["trace"] == b"t1"  # the original headers are kept
        assert headers[HEADER_PREFIX + "reason"] == letter.reason.encode()
        assert headers[HEADER_PREFIX + "message"]
        assert headers[HEADER_PREFIX + "topic"] == TOPIC.encode()
        assert headers[HEADER_PREFIX + "partition"] == b"0"
        assert headers[HEADER_PREFIX + "offset"] == str(offset).encode()
        assert letter.key == b"k"
        original = values[offset] or b""
        if letter.reason == "oversized":
            assert original.startswith(letter.value) and len(letter.value) < MAX_MESSAGE_BYTES
            assert headers[HEADER_PREFIX + "original.size"] == str(len(original)).encode()
        else:
            assert letter.value == original


def test_unknown_fields_are_ignored_and_counted(scorer):
    event = live_events(1)[0]
    plain = scorer.process(messages([json.dumps(event).encode()]))
    extra = scorer.process(messages([json.dumps({**event, "colour": "red", "size": 3}).encode()]))
    assert extra.unknown_fields == 2 and plain.unknown_fields == 0
    np.testing.assert_allclose(extra.scores, plain.scores)


def test_event_lag_is_now_minus_event_time():
    event = live_events(1)[0]
    event_time = datetime.fromisoformat(event["event_time"]).timestamp()
    scorer = BatchScorer(traffic_bundle(), clock=lambda: event_time + 2.5)
    assert scorer.process(messages([json.dumps(event).encode()])).event_lag.tolist() == [2.5]


def test_alert_key_falls_back_to_the_message_key():
    event = live_events(1)[0]
    event.update(latency_ms=90_000.0, status=504)  # surely an alert
    for key_field, expected in (("user", event["user"].encode()), (None, b"k")):
        [alert] = BatchScorer(traffic_bundle(), key_field=key_field).process(messages([json.dumps(event).encode()])).alerts
        assert alert.key == expected


def test_an_event_without_its_own_time_is_dated_by_its_kafka_record():
    event = live_events(1)[0]
    event.update(latency_ms=90_000.0, status=504)
    del event["event_time"]
    [alert] = BatchScorer(traffic_bundle()).process(messages([json.dumps(event).encode()])).alerts
    assert json.loads(alert.value)["event_time"] == "2023-11-14T22:13:20.000Z"  # the messages' timestamp


def test_an_alert_too_large_for_the_topic_leaves_the_event_out():
    event = live_events(1)[0]
    event.update(latency_ms=90_000.0, status=504, note="x" * 5000)
    value = json.dumps(event).encode()
    [alert] = BatchScorer(traffic_bundle(), max_message_bytes=len(value) + 1500).process(messages([value])).alerts
    assert json.loads(alert.value)["event"] is None


def test_an_error_while_scoring_sets_aside_only_the_events_that_cause_it(monkeypatch):
    scorer = BatchScorer(traffic_bundle())
    events = live_events(5)
    score = scorer.bundle.score

    def fragile(records, **kwargs):
        if any(r.get("poison") for r in records):
            raise RuntimeError("boom")
        return score(records, **kwargs)

    monkeypatch.setattr(scorer.bundle, "score", fragile)
    events[2]["poison"] = True
    result = scorer.process(messages(encode(events)))
    assert result.scored == 4
    assert [(d.reason, dict(d.headers)[HEADER_PREFIX + "offset"]) for d in result.dead_letters] == [
        ("processing_error", b"2")]


def test_odd_values_are_scored_and_unreadable_ones_listed_as_invalid(scorer):
    result = scorer.process(messages([v for v, _ in ODD_INPUT]))
    assert result.scored == len(ODD_INPUT) and not result.dead_letters
    assert result.invalid_values == {name: 1 for _, names in ODD_INPUT for name in names}
    alerts = {a.alert_id: json.loads(a.value) for a in result.alerts}
    for offset, (_, names) in enumerate(ODD_INPUT):
        alert = alerts.get(f"{TOPIC}/0/{offset}")
        if names:  # listed whether or not it is among the top fields, with the raw value
            assert alert is not None
            invalid = [c for c in alert["contributions"] if c.get("invalid")]
            assert [c["field"] for c in invalid] == names
    # Beyond float range: far outside training, so first.  Negative: a sign never seen counts one
    # training range, as much as the missing timestamp of these otherwise empty events.
    assert alerts[f"{TOPIC}/0/1"]["contributions"][0]["field"] == "bytes_out"
    assert "bytes_out" in [c["field"] for c in alerts[f"{TOPIC}/0/2"]["contributions"][:2]]


def test_unreadable_values_can_be_dead_lettered_instead():
    strict = BatchScorer(traffic_bundle(), key_field="user", invalid_values="dead_letter")
    result = strict.process(messages([v for v, _ in ODD_INPUT]))
    unreadable = [offset for offset, (_, names) in enumerate(ODD_INPUT) if names]
    assert [int(dict(d.headers)[HEADER_PREFIX + "offset"]) for d in result.dead_letters] == unreadable
    assert {d.reason for d in result.dead_letters} == {"wrong_type"}
    assert result.scored == len(ODD_INPUT) - len(unreadable) and not result.invalid_values


def test_a_value_beyond_the_trained_range_scores_finitely_and_alerts():
    rng = np.random.default_rng(0)
    config = config_from_dict({"fields": {"x": "numeric"}, "model": {"epochs": 1}}, environ={})
    bundle = fit([{"x": float(v)} for v in rng.normal(size=200)], config, verbose=False)  # signed: no log
    result = BatchScorer(bundle).process(messages([b'{"x": 0.5}', b'{"x": 1e300}', b'{"x": -1e300}']))
    assert result.scored == 3 and np.isfinite(result.scores).all()
    assert [a.alert_id for a in result.alerts] == [f"{TOPIC}/0/1", f"{TOPIC}/0/2"]


def test_a_new_bundle_takes_effect_at_the_next_batch():
    bundle = traffic_bundle()
    scorer = BatchScorer(bundle)
    event = encode(live_events(1))
    stricter = bundle.with_threshold(type(bundle.threshold)(
        method="max", value=1e-6, target_rate=0.5, bands={"warning": 1e-6, "minor": 1.0, "major": 2.0, "critical": 3.0}),
        manifest={**bundle.manifest, "version": "v-next"})
    scorer.bundle = stricter
    [alert] = scorer.process(messages(event)).alerts
    assert json.loads(alert.value)["model_version"] == "v-next"


def test_the_monitor_refuses_a_bundle_trained_for_other_fields():
    bundle = traffic_bundle()
    fields = {f.name: f.type for f in bundle.config.fields}
    check_fields(config_from_dict({"fields": fields}, environ={}), bundle)
    with pytest.raises(MonitorError, match="field 'bytes_out' is categorical in the config but numeric"):
        check_fields(config_from_dict({"fields": {**fields, "bytes_out": "categorical"}}, environ={}), bundle)
    with pytest.raises(MonitorError, match="field 'referrer' is categorical in the config but absent"):
        check_fields(config_from_dict({"fields": {**fields, "referrer": "categorical"}}, environ={}), bundle)
