"""Alert messages: what the monitor publishes for an event scored at or above the threshold.

The value is one JSON object (documented with an example in the README)::

    alert_id        "<topic>/<partition>/<offset>" of the event: the same after a redelivery
    event_time      the event's time (its timestamp field, else the Kafka record time), ISO 8601 UTC
    detected_at     when the monitor scored it, ISO 8601 UTC
    source          {"topic", "partition", "offset"}
    score           anomaly score: higher is more anomalous (trainer.bundle.ScoredBatch)
    threshold       the model's alert threshold
    record_score    0-100 (25 at the threshold)
    severity        warning | minor | major | critical
    model_version   the bundle version that scored it
    contributions   top fields: [{"field", "share", "actual", "expected"}], shares of the score
    components      the score by component: {"reconstruction", "neighbours", "range"}, summing to it
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
import orjson

from monitor.deadletter import RECORD_OVERHEAD_BYTES
from monitor.transport import Message
from trainer.bundle import COMPONENTS, Bundle, ScoredBatch


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


def iso_times(seconds: np.ndarray) -> list[str | None]:
    """`iso_time` of each element, in one numpy call (NaN gives None).

    >>> t = np.array([0.25, np.nan, 1764600127.092, 1764600127.0999996])
    >>> iso_times(t) == [iso_time(s) for s in t]
    True
    """
    finite = np.isfinite(seconds)
    # To the microsecond first, as datetime does, then truncated to the millisecond as isoformat does.
    micros = np.rint(np.where(finite, seconds, 0.0) * 1e6).astype("datetime64[us]")
    text = np.char.add(np.datetime_as_string(micros.astype("datetime64[ms]"), unit="ms"), "Z").tolist()
    return text if finite.all() else [t if ok else None for t, ok in zip(text, finite.tolist())]


def _dumps(value: Any) -> bytes:
    """Compact JSON: orjson, or the json module for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


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
        record time is used instead).  Everything per alert is computed for all rows at once (the
        explanations, the times) and the JSON is encoded with orjson: an alert storm costs little
        more per event than a quiet stream (`bench/score_path.py`).
        """
        scores = batch.scores[rows]
        severities = bundle.threshold.severity(scores).tolist()
        record_scores = bundle.threshold.record_score(scores).tolist()
        explanations = bundle.explain(records, batch, rows, top=self.top_contributions)
        times = event_times[rows]
        for k in np.flatnonzero(~np.isfinite(times)).tolist():
            times[k] = _kafka_time(messages[rows[k]])
        event_time = iso_times(times)
        detected = iso_time(detected_at)
        threshold = float(bundle.threshold.value)
        components = [dict(zip(COMPONENTS, parts)) for parts in np.round(batch.components[rows], 6).tolist()]
        version = bundle.version
        limit = self.max_message_bytes
        alerts: list[Alert | None] = []
        for k, (row, score) in enumerate(zip(rows.tolist(), scores.tolist())):
            message = messages[row]
            topic, partition, offset = message.topic, message.partition, message.offset
            alert_id = f"{topic}/{partition}/{offset}"
            head = _dumps({
                "alert_id": alert_id,
                "event_time": event_time[k],
                "detected_at": detected,
                "source": {"topic": topic, "partition": partition, "offset": offset},
                "score": score,
                "threshold": threshold,
                "record_score": record_scores[k],
                "severity": severities[k],
                "model_version": version,
                "contributions": explanations[k],
                "components": components[k],
            })
            key = self._key(records[row], message)
            size = len(head) + len(key or b"") + RECORD_OVERHEAD_BYTES
            event = message.value
            if size + len(event) <= limit:  # the event as received, spliced in rather than re-encoded
                value = b"".join((head[:-1], b',"event":', event, b"}"))
            elif size <= limit:
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
