"""The monitor's batch step, free of Kafka: messages in, alerts and dead letters out.

`BatchScorer.process` decodes a polled batch, encodes and scores every decodable event in one
forward pass, and returns what to publish (`BatchResult`).  Every event that decodes to a JSON
object is scored, however odd its values: odd is what the monitor exists to catch.  A value
that cannot be read as its field's type (``"lots"`` for a number) is scored as missing, counted
in `BatchResult.invalid_values` and listed in the event's alert with ``"invalid": true``
(``invalid_values="dead_letter"`` refuses the event as ``wrong_type`` instead).  Bad input
never raises: an event that cannot be scored becomes a `DeadLetter` with a `DeadLetterReason`:

- ``invalid_utf8``, ``invalid_json`` (also an empty value), ``not_an_object``;
- ``missing_required`` (a `required` field absent or unreadable), ``non_finite`` (a NaN or
  Infinity literal, or a decimal literal beyond float range such as ``1e400``);
- ``oversized`` (larger than ``max_message_bytes``, or a field nesting deeper or an array longer
  than the `ShapeLimits`, both measured on the bytes before decoding);
- ``processing_error``: scoring raised (a bug): the batch is retried one event at a time so
  that only the events that fail are set aside, and one log line per batch (with one
  traceback) says how many failed: a systematic bug is not a traceback per event.

The bundle sits in the `bundle` attribute and is read once per batch, so it can be swapped
between batches (e.g. for a newly trained version).

>>> from monitor.transport import Record
>>> from trainer.config import config_from_dict
>>> from trainer.fit import fit
>>> config = config_from_dict({"fields": {"x": "numeric", "c": "categorical"},
...                            "model": {"epochs": 2}, "threshold": {"method": "max"}}, environ={})
>>> bundle = fit([{"x": i % 7, "c": "ab"[i % 2]} for i in range(200)], config, verbose=False)
>>> scorer = BatchScorer(bundle)
>>> batch = [Record("events", 0, 0, None, b'{"x": 3, "c": "a"}'),
...          Record("events", 0, 1, None, b'{"x": 1e9, "c": "zz"}'),
...          Record("events", 0, 2, None, b'{"x": "lots", "c": "a"}'),
...          Record("events", 0, 3, None, b'[1, 2]')]
>>> result = scorer.process(batch)
>>> len(result.scores), [a.alert_id for a in result.alerts], [str(d.reason) for d in result.dead_letters]
(3, ['events/0/1', 'events/0/2'], ['not_an_object'])
>>> dict(result.invalid_values)
{'x': 1}
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from monitor.alerts import Alert, AlertBuilder
from monitor.deadletter import DeadLetter, DeadLetterReason, dead_letter
from monitor.limits import ShapeLimits
from monitor.transport import Message
from trainer.bundle import Bundle
from trainer.encoding import valid_mask

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What one batch produced: records to publish, and what the batch observers need.

    `scores` and the rows of `encoded` are the scored events, in the same order; `bundle` is the
    model that scored them (a swap between batches shows as a new bundle in the next result).
    """

    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of the scored events
    event_lag: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds; empty without event times
    unknown_fields: int = 0  # fields outside the schema, over all scored events
    invalid_values: Counter[str] = field(default_factory=Counter)  # unreadable values scored as missing, by field
    bundle: Bundle | None = None
    encoded: np.ndarray | None = None  # (scored, encoder width) model inputs of the scored events
    size: int = 0  # messages in the batch, scored or not
    seconds: float = 0.0  # processing time, set by the monitor
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition, set by the monitor

    @property
    def scored(self) -> int:
        return len(self.scores)

    @classmethod
    def concat(cls, results: list[BatchResult]) -> BatchResult:
        encoded = [r.encoded for r in results if r.encoded is not None]
        return cls(
            alerts=[a for r in results for a in r.alerts],
            dead_letters=[d for r in results for d in r.dead_letters],
            scores=np.concatenate([r.scores for r in results]),
            event_lag=np.concatenate([r.event_lag for r in results]),
            unknown_fields=sum(r.unknown_fields for r in results),
            invalid_values=sum((r.invalid_values for r in results), Counter()),
            bundle=next((r.bundle for r in results if r.bundle is not None), None),
            encoded=np.concatenate(encoded) if encoded else None,
            size=sum(r.size for r in results),
        )


class _NonFinite(ValueError):
    """A NaN/Infinity literal: valid to Python's json module, not JSON, and not a usable value."""


def _reject_constant(name: str) -> Any:
    raise _NonFinite(f"non-finite value {name}")


class BatchScorer:
    """Decode, validate and score batches of messages with `bundle`.

    Parameters
    ----------
    bundle
        The model; read once per batch, so assigning a new one takes effect at the next batch.
    key_field
        Event field that keys the alerts (config ``key``); None keeps the event's Kafka key.
    max_message_bytes
        Larger events are dead-lettered as ``oversized``; also the size limit of what is published.
    top_contributions
        Fields listed per alert (unreadable values are listed besides).
    invalid_values
        ``"score"``: an unreadable value is scored as missing; ``"dead_letter"``: its event is
        dead-lettered as ``wrong_type``.
    limits
        Nesting depth and array length allowed, checked before decoding (default `ShapeLimits()`).
    clock
        Wall clock in epoch seconds (for ``detected_at`` and the event lag).
    """

    def __init__(self, bundle: Bundle, *, key_field: str | None = None, max_message_bytes: int = 1_000_000,
                 top_contributions: int = 5, invalid_values: str = "score", limits: ShapeLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.bundle = bundle
        self.limits = limits or ShapeLimits()
        self.max_message_bytes = max_message_bytes
        self.invalid_values = invalid_values
        self.clock = clock
        self._alerts = AlertBuilder(key_field=key_field, top_contributions=top_contributions,
                                    max_message_bytes=max_message_bytes)
        # One decoder for all batches: json.loads(..., parse_constant=) would build one per call.
        self._json = json.JSONDecoder(parse_constant=_reject_constant)

    def process(self, messages: list[Message]) -> BatchResult:
        """Alerts, dead letters and scores of `messages`; never raises for bad input."""
        bundle = self.bundle  # one model for the whole batch, even event by event
        try:
            return self._process(bundle, messages)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the monitor
            return self._one_by_one(bundle, messages, exc)

    def _one_by_one(self, bundle: Bundle, messages: list[Message], exc: Exception) -> BatchResult:
        """After a failed batch: each event alone, those that fail again dead-lettered; one log line."""
        results, failed = [], 0
        for message in messages:
            try:
                results.append(self._process(bundle, [message]))
            except Exception as again:  # noqa: BLE001
                failed += 1
                results.append(BatchResult(dead_letters=[self._dead_letter(
                    message, DeadLetterReason.PROCESSING_ERROR, repr(again))], bundle=bundle, size=1))
        first = messages[0]
        log.error("scoring failed for a batch of %d events from %s/%s/%s (%r); retried one by one, %d of them "
                  "failed again and went to the dead-letter topic as processing_error", len(messages), first.topic,
                  first.partition, first.offset, exc, failed, exc_info=exc)
        return BatchResult.concat(results)

    def _process(self, bundle: Bundle, messages: list[Message]) -> BatchResult:
        fields = bundle.config.fields
        result = BatchResult(bundle=bundle, size=len(messages))
        kept, records = self._decode(messages, result)
        if not records:
            return result

        known = {f.name for f in fields}
        if not all(map(known.issuperset, records)):  # the usual case, checked in C: no unknown field
            result.unknown_fields = sum(len(r.keys() - known) for r in records)
        batch = bundle.score(records, strict=True)
        invalid = list(batch.invalid)
        self._check_ignored_required(bundle, records, invalid)
        if self.invalid_values == "dead_letter":
            for row, values in batch.unreadable.items():
                invalid[row] = invalid[row] or (DeadLetterReason.WRONG_TYPE, values[0][1])
        for i, problem in enumerate(invalid):
            if problem is not None:
                result.dead_letters.append(self._dead_letter(kept[i], *problem))
        valid = valid_mask(invalid)
        result.invalid_values.update(name for row, values in batch.unreadable.items() if valid[row]
                                     for name, _ in values)

        now = self.clock()
        event_times = batch.event_times
        if event_times is not None:
            result.event_lag = np.maximum(now - event_times[valid], 0.0)  # clock skew is not negative lag
        else:
            event_times = np.full(len(records), np.nan)
        result.scores = batch.scores[valid]
        result.encoded = batch.inputs[valid]

        rows = np.flatnonzero(valid & (batch.scores >= bundle.threshold.value))
        alerts = self._alerts.build(bundle, kept, records, batch, rows, event_times, now) if rows.size else []
        for row, alert in zip(rows, alerts):
            if alert is None:
                result.dead_letters.append(self._dead_letter(
                    kept[row], DeadLetterReason.OVERSIZED,
                    f"an alert for this event would exceed {self.max_message_bytes} bytes"))
            else:
                result.alerts.append(alert)
        return result

    def _decode(self, messages: list[Message], result: BatchResult) -> tuple[list[Message], list[dict[str, Any]]]:
        """The messages that decode to JSON objects, and those objects; the rest are dead-lettered."""
        kept, records = [], []
        limit = self.max_message_bytes
        limits = self.limits
        # `ShapeLimits.problem`'s own first test, inlined: two counts in C for the usual event.
        brackets, array_bytes = limits.max_nesting_depth + 1, 2 * limits.max_array_length + 3
        for message in messages:
            value = message.value
            if value and (len(value) >= array_bytes or value.count(b"[") + value.count(b"{") > brackets) and (
                    len(value) <= limit and (problem := limits.problem(value))):
                result.dead_letters.append(self._dead_letter(message, DeadLetterReason.OVERSIZED, problem))
                continue
            # orjson first, 3x faster than json; it refuses what json reads loosely (NaN, integers
            # beyond 64 bits, lone surrogates), which `_parse` then reads or says why not.
            try:
                record = orjson.loads(value) if value and len(value) <= limit else None
            except orjson.JSONDecodeError:
                record = None
            if record.__class__ is not dict:
                record = self._parse(value)
            if record.__class__ is dict:
                kept.append(message)
                records.append(record)
            else:
                result.dead_letters.append(self._dead_letter(message, *record))
        return kept, records

    def _parse(self, value: bytes | None) -> dict[str, Any] | tuple[DeadLetterReason, str]:
        """The JSON object in `value`, or why there is none: (reason, detail)."""
        if not value:
            return DeadLetterReason.INVALID_JSON, "empty value"
        if len(value) > self.max_message_bytes:
            return DeadLetterReason.OVERSIZED, f"{len(value)} bytes, more than max_message_bytes {self.max_message_bytes}"
        try:
            record = self._json.decode(value.decode())
        except UnicodeDecodeError as exc:
            return DeadLetterReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}"
        except _NonFinite as exc:
            return DeadLetterReason.NON_FINITE, str(exc)
        except json.JSONDecodeError as exc:
            return DeadLetterReason.INVALID_JSON, f"{exc.msg} at position {exc.pos}"
        except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits, deep nesting
            return DeadLetterReason.INVALID_JSON, str(exc) or type(exc).__name__
        if record.__class__ is not dict:
            return DeadLetterReason.NOT_AN_OBJECT, f"a JSON {type(record).__name__}, not an object"
        return record

    def _dead_letter(self, message: Message, reason: str, detail: str) -> DeadLetter:
        return dead_letter(message, DeadLetterReason(reason), detail, self.max_message_bytes)

    @staticmethod
    def _check_ignored_required(bundle: Bundle, records: list[dict[str, Any]],
                                invalid: list[tuple[str, str] | None]) -> None:
        """`required` on an `ignore` field (a key, say): the encoder skips those fields, so check here."""
        for spec in bundle.config.fields:
            if spec.required and spec.type == "ignore":
                for i, record in enumerate(records):
                    if invalid[i] is None and record.get(spec.name) is None:
                        invalid[i] = (DeadLetterReason.MISSING_REQUIRED, f"field '{spec.name}' is required")
