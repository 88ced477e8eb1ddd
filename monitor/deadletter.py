"""Dead-letter records: events the monitor could not score, kept with the reason why.

A dead-letter record carries the original key and bytes as its value, the original headers, and
context headers in the manner of Kafka Connect's ``errors.deadletterqueue.context.headers``::

    __anomon.errors.reason      a `DeadLetterReason`: invalid_utf8 | invalid_json | not_an_object
                                | missing_required | wrong_type | non_finite | oversized
                                | processing_error | publish_refused
    __anomon.errors.message     what exactly was wrong, e.g. "field 'bytes': cannot read 'lots' as a number"
    __anomon.errors.topic       source topic
    __anomon.errors.partition   source partition
    __anomon.errors.offset      source offset

A record too large for the dead-letter topic (an ``oversized`` one, typically) cannot be forwarded
whole: its value is cut to what fits and ``__anomon.errors.original.size`` gives the full size.

>>> from monitor.transport import Record
>>> m = Record("events", 2, 41, b"k", b'{"bytes": "lots"}')
>>> d = dead_letter(m, DeadLetterReason.WRONG_TYPE, "field 'bytes': cannot read 'lots' as a number")
>>> d.value == m.value, dict(d.headers)["__anomon.errors.offset"]
(True, b'41')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from monitor.transport import Headers, Message
from trainer.encoding import Problem

HEADER_PREFIX = "__anomon.errors."
# Room kept for the record's framing, headers and key when a value is sized to the topic's limit.
RECORD_OVERHEAD_BYTES = 1024


class DeadLetterReason(StrEnum):
    """Every reason an event is dead-lettered: the ``__anomon.errors.reason`` header and metric label."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"  # also an empty value
    NOT_AN_OBJECT = "not_an_object"
    MISSING_REQUIRED = Problem.MISSING_REQUIRED.value
    WRONG_TYPE = Problem.WRONG_TYPE.value  # only with monitor.invalid_values: dead_letter
    NON_FINITE = Problem.NON_FINITE.value
    OVERSIZED = "oversized"
    PROCESSING_ERROR = "processing_error"
    # Not an event's fault: the broker refused an alert or dead letter for good, and this value-less
    # letter stands in for it (see `monitor.setaside`).
    PUBLISH_REFUSED = "publish_refused"


@dataclass(frozen=True)
class DeadLetter:
    """A record for the dead-letter topic."""

    reason: DeadLetterReason
    key: bytes | None
    value: bytes
    headers: Headers


def dead_letter(message: Message, reason: DeadLetterReason, detail: str, max_message_bytes: int = 1_000_000) -> DeadLetter:
    """The dead-letter record of `message`, its value cut if the record would exceed `max_message_bytes`."""
    value = message.value or b""
    context = [
        (HEADER_PREFIX + "reason", reason.encode()),
        (HEADER_PREFIX + "message", detail.encode()),
        (HEADER_PREFIX + "topic", message.topic.encode()),
        (HEADER_PREFIX + "partition", str(message.partition).encode()),
        (HEADER_PREFIX + "offset", str(message.offset).encode()),
    ]
    key = message.key
    room = max(0, max_message_bytes - RECORD_OVERHEAD_BYTES)
    if len(value) + len(key or b"") > room:
        context.append((HEADER_PREFIX + "original.size", str(len(value)).encode()))
        key = key if key is None or len(key) <= room // 2 else None
        value = value[: room - len(key or b"")]
    return DeadLetter(reason, key, value, [*message.headers, *context])
