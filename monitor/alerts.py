"""Alert messages: what the monitor publishes for an event scored at or above the threshold.

The value is one JSON object (documented with an example in the README)::

    alert_id        "<topic>/<partition>/<offset>" of the event: the same after a redelivery
    event_time      the event's time (its timestamp field, else the Kafka record time), ISO 8601 UTC
    detected_at     when the monitor scored it, ISO 8601 UTC
    source          {"topic", "partition", "offset"}
    score           anomaly score (reconstruction error)
    threshold       the model's alert threshold
    record_score    0-100 (25 at the threshold)
    severity        warning | minor | major | critical
    model_version   the bundle version that scored it
    contributions   top fields: [{"field", "share", "actual", "expected"}], shares of the score
    event           the original event, byte for byte (null if the alert would exceed the size limit)

The key is the event's key field (``key:`` in the config) when set, else the event's Kafka key.
The event is spliced in as received rather than re-encoded: cheaper, and exactly what was sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from monitor.deadletter import RECORD_OVERHEAD_BYTES
from monitor.transport import Message
from trainer.bundle import Bundle, ScoredBatch


@dataclass(frozen=True)
class Alert:
    """A record for the alert topic."""

    alert_id: str
    severity: str
    key: bytes | None
    value: bytes


def iso_time(seconds: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. ``2024-01-01T00:00:00.000Z``.

    >>> iso_time(0.25), iso_time(None)
    ('1970-01-01T00:00:00.250Z', None)
    """
    if seconds is None or not np.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


class AlertBuilder:
    """Builds the alert records of the anomalous rows of a scored batch.

    Parameters
    ----------
    key_field
        Event field whose value keys the alert; None keeps the event's Kafka key.
    top_contributions
        Fields listed per alert.
    max_message_bytes
        Size limit of an alert record; the event is left out (null) of alerts that would exceed it.
    """

    def __init__(self, *, key_field: str | None = None, top_contributions: int = 5,
                 max_message_bytes: int = 1_000_000) -> None:
        self.key_field = key_field
        self.top_contributions = top_contributions
        self.max_message_bytes = max_message_bytes

    def build(self, bundle: Bundle, messages: list[Message], records: list[dict[str, Any]], batch: ScoredBatch,
              rows: np.ndarray, event_times: np.ndarray, detected_at: float) -> list[Alert | None]:
        """One alert per row of `rows`; None where even an alert without its event is too large.

        `event_times` holds the events' own times in epoch seconds, NaN where unknown (the Kafka
        record time is used instead).
        """
        scores = batch.scores[rows]
        severities = bundle.threshold.severity(scores)
        record_scores = bundle.threshold.record_score(scores)
        explanations = bundle.explain(records, batch, rows, top=self.top_contributions)
        detected = iso_time(detected_at)
        threshold = float(bundle.threshold.value)
        alerts: list[Alert | None] = []
        for k, row in enumerate(rows):
            message = messages[row]
            alert_id = f"{message.topic}/{message.partition}/{message.offset}"
            body = {
                "alert_id": alert_id,
                "event_time": iso_time(event_times[row] if np.isfinite(event_times[row]) else _kafka_time(message)),
                "detected_at": detected,
                "source": {"topic": message.topic, "partition": message.partition, "offset": message.offset},
                "score": float(scores[k]),
                "threshold": threshold,
                "record_score": float(record_scores[k]),
                "severity": severities[k],
                "model_version": bundle.version,
                "contributions": explanations[k],
            }
            head = json.dumps(body, separators=(",", ":")).encode()
            key = self._key(records[row], message)
            size = len(head) + len(key or b"") + RECORD_OVERHEAD_BYTES
            if size + len(message.value) <= self.max_message_bytes:
                value = b"".join((head[:-1], b',"event":', message.value, b"}"))
            elif size <= self.max_message_bytes:
                value = head[:-1] + b',"event":null}'
            else:
                alerts.append(None)
                continue
            alerts.append(Alert(alert_id, severities[k], key, value))
        return alerts

    def _key(self, record: dict[str, Any], message: Message) -> bytes | None:
        value = None if self.key_field is None else record.get(self.key_field)
        return message.key if value is None else key_bytes(value)


def key_bytes(value: Any) -> bytes:
    """A key field's value as a Kafka key: strings as they are, anything else as JSON.

    >>> key_bytes("user7"), key_bytes(42)
    (b'user7', b'42')
    """
    return (value if isinstance(value, str) else json.dumps(value)).encode()


def _kafka_time(message: Message) -> float | None:
    timestamp = message.timestamp
    return None if timestamp is None or timestamp < 0 else timestamp / 1000
