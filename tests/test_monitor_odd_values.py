"""Odd values through the real monitor and embedded broker: scored and alerted, never dead-lettered.

An event with a negative byte count, a 3 in a field that was only ever 0 or 1, or ``"lots"`` in a
numeric field is what an anomaly monitor exists to catch; an attacker must not be able to blind it
by sending such values.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import pytest
from monitor_support import (
    FIELDS,
    SCHEMA,
    config_dict,
    live_events,
    produce,
    read_topic,
    running,
    wait_for,
)

from monitor.deadletter import HEADER_PREFIX
from monitor.service import Monitor
from monitor.traffic import TrafficGenerator
from trainer.config import config_from_dict
from trainer.fit import fit

ODD_FIELDS = {**FIELDS, "wrong_fragment": "numeric"}  # 0 or 1 in normal traffic, like NSL-KDD's column


def with_fragments(events: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [dict(e, wrong_fragment=int(rng.random() < 0.1)) for e in events]


@pytest.fixture(scope="module")
def bundle():
    history = TrafficGenerator(seed=1, start=datetime(2024, 1, 1, tzinfo=timezone.utc),
                               events_per_hour=3000 / 168).generate(3000)
    return fit(with_fragments(history, 1), config_from_dict({**SCHEMA, "fields": ODD_FIELDS}, environ={}),
               verbose=False)


def odd_events() -> list[tuple[str, dict]]:
    """(what is odd, event): a normal-looking event each, with one odd value."""
    normal = [e for e in with_fragments(live_events(200, anomaly_rate=0.0), 2) if e["bytes_out"] > 0]
    return [
        ("negative bytes", dict(normal[0], bytes_out=-normal[0]["bytes_out"])),
        ("wrong_fragment 3", dict(normal[1], wrong_fragment=3)),
        ("lots", dict(normal[2], latency_ms="lots")),
    ]


def run_monitor(kafka_broker, bundle, events: list[dict], **monitor: str):
    raw = config_dict(kafka_broker.bootstrap_servers)
    raw["fields"] = ODD_FIELDS
    raw["monitor"].update(monitor)
    config = config_from_dict(raw, environ={})
    with running(Monitor(config, bundle)) as running_monitor:
        produce(kafka_broker.bootstrap_servers, config.kafka.input_topic, [json.dumps(e).encode() for e in events],
                partitions=1)
        assert wait_for(lambda: running_monitor.totals["events"] == len(events), 30), running_monitor.totals
    alerts = [json.loads(r.value) for r in read_topic(kafka_broker.bootstrap_servers, config.kafka.alert_topic, 0,
                                                       idle_s=2.0)]
    letters = read_topic(kafka_broker.bootstrap_servers, config.kafka.dead_letter_topic, 0, idle_s=0.5)
    return {int(a["alert_id"].rsplit("/", 1)[1]): a for a in alerts}, letters


def test_out_of_range_and_unreadable_values_produce_alerts_naming_the_field(kafka_broker, bundle):
    cases = odd_events()
    alerts, letters = run_monitor(kafka_broker, bundle, [event for _, event in cases])
    assert letters == []
    assert sorted(alerts) == [0, 1, 2]  # every odd event alerted
    assert alerts[0]["contributions"][0]["field"] == "bytes_out"  # first: it is what made the event odd
    assert alerts[0]["contributions"][0]["actual"] == cases[0][1]["bytes_out"]
    assert alerts[1]["contributions"][0] == {**alerts[1]["contributions"][0], "field": "wrong_fragment", "actual": 3}
    [unreadable] = [c for c in alerts[2]["contributions"] if c["field"] == "latency_ms"]
    assert unreadable["invalid"] is True and unreadable["actual"] == "lots"


def test_unreadable_values_are_dead_lettered_when_so_configured(kafka_broker, bundle):
    cases = odd_events()
    alerts, letters = run_monitor(kafka_broker, bundle, [event for _, event in cases], invalid_values="dead_letter")
    assert sorted(alerts) == [0, 1]  # the out-of-range numbers are readable: still scored
    [letter] = letters
    headers = dict(letter.headers)
    assert headers[HEADER_PREFIX + "reason"] == b"wrong_type" and headers[HEADER_PREFIX + "offset"] == b"2"
    assert b"latency_ms" in headers[HEADER_PREFIX + "message"]
