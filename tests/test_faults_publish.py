"""Poison pills on the way out: records the broker refuses for good are retried a bounded number of
times, then set aside (a smaller dead letter, a counter, a log line), and their partition flows on.

The embedded broker does not enforce ``max.message.bytes``, so the refusals are injected at the
transport seam: `RefusesRecords` wraps the real kafka-python transport (real broker, real TCP) and
fails the delivery of the records a test picks, as a broker would for a record too large for its
topic.
"""

from __future__ import annotations

import json
import logging

from faults_support import wait_until
from monitor_support import (
    BAD_INPUT,
    alert_id,
    encode,
    expected_alerts,
    live_events,
    make_config,
    produce,
    read_topic,
    running,
    traffic_bundle,
)

from monitor.deadletter import HEADER_PREFIX
from monitor.service import Monitor, kafka_transport
from monitor.transport import DeliveryRefused, Refused

REFUSAL = "MessageSizeTooLargeError: [Error 10] the message is larger than the topic's max.message.bytes"


class RefusesRecords:
    """The real transport, except that the records `refuse(topic, value, headers)` picks are refused for good.

    They are never sent: the next ``pending`` or ``flush`` reports them with `DeliveryRefused`,
    as the real transport does for a refusal by the broker or the client.
    """

    def __init__(self, transport, refuse) -> None:
        self.transport, self.refuse = transport, refuse
        self.refused: list[Refused] = []  # every refusal, for the test
        self._unreported: list[Refused] = []

    def __getattr__(self, name):
        return getattr(self.transport, name)

    def produce(self, topic, value, key=None, headers=None):
        if self.refuse(topic, value, dict(headers or ())):
            record = Refused(topic, value, key, tuple(headers or ()), REFUSAL)
            self.refused.append(record)
            self._unreported.append(record)
            return
        self.transport.produce(topic, value, key=key, headers=headers)

    def pending(self):
        pending = self.transport.pending()
        self._report()
        return pending

    def flush(self, timeout_s=None):
        self.transport.flush(timeout_s)
        self._report()

    def _report(self):
        if self._unreported:
            refused, self._unreported = self._unreported, []
            raise DeliveryRefused(refused)


def test_records_refused_for_good_are_set_aside_and_their_partition_flows_on(kafka_broker, caplog):
    servers, bundle = kafka_broker.bootstrap_servers, traffic_bundle()
    config = make_config(servers)
    k = config.kafka
    events = live_events(300, seed=8, anomaly_rate=0.1)
    expected, borderline = expected_alerts(bundle, events, k.input_topic)
    expected -= {alert_id(k.input_topic, 2), alert_id(k.input_topic, 4)}  # bad input there, below
    # Poison pills, all early in partition 0 so that much of the partition comes after them:
    poisoned_alert = min((a for a in expected - borderline if a.split("/")[1] == "0"),
                         key=lambda a: int(a.rsplit("/", 1)[1]))
    values = encode(events)
    values[2] = BAD_INPUT[1][0]  # a dead letter refused: replaced by the smaller one
    values[4] = BAD_INPUT[2][0]  # a dead letter refused, and its smaller one too: dropped
    offset = {2: b"1", 4: b"2"}  # partition 0, offsets 1 and 2

    def refuse(topic, value, headers):
        if topic == k.alert_topic:
            return json.loads(value)["alert_id"] == poisoned_alert
        reason, at = headers.get(HEADER_PREFIX + "reason"), headers.get(HEADER_PREFIX + "offset")
        return at == offset[2] and reason != b"publish_refused" or at == offset[4]

    transports: list[RefusesRecords] = []

    def transport_factory():
        transports.append(RefusesRecords(kafka_transport(config), refuse))
        return transports[-1]

    caplog.set_level(logging.WARNING, logger="monitor")
    with running(Monitor(config, bundle, transport_factory=transport_factory)) as monitor:
        produce(servers, k.input_topic, values)
        assert wait_until(lambda: monitor.totals["events"] == 300, 30), monitor.totals
        alerts = [json.loads(r.value)["alert_id"] for r in read_topic(servers, k.alert_topic, len(expected) - 1)]
        letters = read_topic(servers, k.dead_letter_topic, 2)
        metric = monitor.metrics.registry.get_sample_value
        failures = {kind: metric("anomon_publish_failures_total", {"kind": kind})
                    for kind in ("alert", "dead_letter", "control")}
        replaced = metric("anomon_dead_letter_total", {"reason": "publish_refused"})

    assert len(transports) == 1 and monitor.totals["disconnects"] == 0  # no reconnection, no re-reading
    # Three attempts each, then set aside; the smaller letter of the third refused once and dropped.
    refused = [(r.topic, dict(r.headers).get(HEADER_PREFIX + "offset")) for r in transports[0].refused]
    assert refused.count((k.alert_topic, None)) == 3
    assert refused.count((k.dead_letter_topic, offset[2])) == 3
    assert refused.count((k.dead_letter_topic, offset[4])) == 4
    assert failures == {"alert": 1, "dead_letter": 3, "control": 0}
    assert replaced == 3  # the smaller letters sent (the last one refused in turn, counted as a failure above)

    # The partition flowed on: every other alert is out, each once.
    assert len(alerts) == len(set(alerts)) and set(alerts) - borderline == expected - borderline - {poisoned_alert}

    # What stands in for the refused alert and dead letter: value-less letters that say why and where from.
    assert len(letters) == 2
    by_offset = {dict(r.headers)[HEADER_PREFIX + "offset"]: r for r in letters}
    alert_partition, alert_offset = poisoned_alert.rsplit("/", 2)[1:]
    for at, original_topic in ((alert_offset.encode(), k.alert_topic), (offset[2], k.dead_letter_topic)):
        letter = by_offset[at]
        headers = dict(letter.headers)
        assert letter.value == b""
        assert headers[HEADER_PREFIX + "reason"] == b"publish_refused"
        assert headers[HEADER_PREFIX + "original.topic"] == original_topic.encode()
        assert b"MessageSizeTooLargeError" in headers[HEADER_PREFIX + "message"]
        assert headers[HEADER_PREFIX + "topic"] == k.input_topic.encode()
    assert dict(by_offset[alert_offset.encode()].headers)[HEADER_PREFIX + "partition"] == alert_partition.encode()
    set_aside = [r.getMessage() for r in caplog.records if r.getMessage().startswith("set aside:")]
    assert len(set_aside) == 3 and [line for line in set_aside if poisoned_alert in line]
    assert [r for r in caplog.records if r.getMessage().startswith("dropped:")]

