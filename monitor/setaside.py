"""Records the broker refuses for good: retried a bounded number of times, then set aside.

A record the broker will never take (larger than the topic's ``max.message.bytes``, say) must not
stall its partition: treated like an unreachable broker it would be re-read, re-scored and refused
again, forever.  The transport reports such refusals apart from transient failures
(`DeliveryRefused`, listing the `Refused` records); `SetAside.handle` produces each one again, up
to `max_attempts` in all, and after that sets it aside:

- a smaller dead letter goes to the dead-letter topic in its place: no value, the original key,
  the context headers of a dead letter (reason ``publish_refused``, the broker's error, the source
  event's topic/partition/offset when known) and ``__anomon.errors.original.topic`` / ``.size``;
- ``anomon_publish_failures_total{kind}`` counts it (kind ``alert``, ``dead_letter`` or ``control``),
  and ``anomon_dead_letter_total{reason="publish_refused"}`` the smaller letters sent;
- one log line says what was refused, where from, and why.

The batch is then committed as usual once that smaller record is acknowledged.  If even the
smaller record is refused, it is counted and logged, and dropped: nothing is retried forever.

>>> from monitor.transport import Record
>>> produced, counted = [], []
>>> class Transport:
...     def produce(self, topic, value, key=None, headers=None):
...         produced.append((topic, value, dict(headers or ())))
>>> aside = SetAside({"alerts": "alert", "dlq": "dead_letter"}, "dlq", max_attempts=2,
...                  count=lambda kind, replaced: counted.append((kind, replaced)))
>>> refused = Refused("alerts", b'{"source": {"topic": "events", "partition": 1, "offset": 7}}', b"u1", (),
...                   "MessageSizeTooLargeError")
>>> aside.handle(Transport(), [refused])  # attempt 2 of 2
>>> aside.handle(Transport(), [refused])  # refused again: set aside
>>> [(topic, len(value)) for topic, value, _ in produced], counted
([('alerts', 60), ('dlq', 0)], [('alert', True)])
>>> headers = produced[1][2]
>>> headers["__anomon.errors.reason"], headers["__anomon.errors.offset"], headers["__anomon.errors.original.topic"]
(b'publish_refused', b'7', b'alerts')
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from monitor.deadletter import HEADER_PREFIX, DeadLetterReason
from monitor.transport import Headers, Refused

log = logging.getLogger(__name__)

REASON = DeadLetterReason.PUBLISH_REFUSED


class _Producer(Protocol):
    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None) -> None: ...


class SetAside:
    """Bounded retries, then the smaller dead letter, the counter and the log line (see the module docstring).

    Parameters
    ----------
    kinds
        Topic → kind (``alert``, ``dead_letter``, ``control``) of what is published there.
    dead_letter_topic
        Where the smaller dead letters go.
    count
        Called for every record set aside with its kind, and whether a smaller dead letter is sent
        in its place (False for such a letter refused in turn, which is dropped):
        ``anomon_publish_failures_total{kind}`` and ``anomon_dead_letter_total{reason="publish_refused"}``.
    max_attempts
        Produce attempts of a refused record in all, the first one included.
    """

    def __init__(self, kinds: Mapping[str, str], dead_letter_topic: str, *, count: Callable[[str, bool], None],
                 max_attempts: int = 3) -> None:
        self.kinds = dict(kinds)
        self.dead_letter_topic = dead_letter_topic
        self.count = count
        self.max_attempts = max_attempts
        # Attempts so far per refused record (a digest of its bytes): refusals are rare, and a
        # record leaves this map once set aside, so it stays small.
        self._attempts: dict[bytes, int] = {}

    def handle(self, transport: _Producer, refused: list[Refused]) -> None:
        """Produce each refused record again, or set it aside once it has had `max_attempts`."""
        for record in refused:
            if _is_set_aside(record.headers):
                self._give_up(record)
                continue
            digest = _digest(record)
            attempts = self._attempts.get(digest, 1) + 1
            if attempts <= self.max_attempts:
                self._attempts[digest] = attempts
                log.warning("the broker refused a record for %s (%s): attempt %d of %d", record.topic, record.error,
                            attempts, self.max_attempts)
                transport.produce(record.topic, record.value, key=record.key, headers=record.headers)
            else:
                self._attempts.pop(digest, None)
                self._set_aside(transport, record)

    def _set_aside(self, transport: _Producer, record: Refused) -> None:
        kind = self.kinds.get(record.topic, "control")
        source = _source(record, kind)
        where = "/".join(str(source[k]) for k in ("topic", "partition", "offset")) if source else "unknown"
        log.error("set aside: the broker refused the %s for event %s on %s %d times for good (%s); a %d-byte "
                  "record was replaced by a dead letter without value", kind, where, record.topic, self.max_attempts,
                  record.error, len(record.value))
        self.count(kind, True)
        headers = [
            (HEADER_PREFIX + "reason", REASON.encode()),
            (HEADER_PREFIX + "message", f"{kind} refused by the broker: {record.error}"[:1000].encode()),
            *((HEADER_PREFIX + name, str(source[name]).encode()) for name in ("topic", "partition", "offset")
              if source),
            (HEADER_PREFIX + "original.topic", record.topic.encode()),
            (HEADER_PREFIX + "original.size", str(len(record.value)).encode()),
        ]
        transport.produce(self.dead_letter_topic, b"", key=record.key, headers=headers)

    def _give_up(self, record: Refused) -> None:
        """A set-aside letter refused in turn: counted, logged, dropped."""
        log.error("dropped: the broker refused even the dead letter that set aside a refused record (%s)",
                  record.error)
        self.count("dead_letter", False)


def _digest(record: Refused) -> bytes:
    return hashlib.blake2b(b"\0".join([record.topic.encode(), record.key or b"", record.value]), digest_size=16).digest()


def _is_set_aside(headers: Headers) -> bool:
    return (HEADER_PREFIX + "reason", REASON.encode()) in list(headers)


def _source(record: Refused, kind: str) -> dict[str, Any] | None:
    """The source event's topic, partition and offset: in an alert's JSON, in a dead letter's headers."""
    if kind == "alert":
        try:
            source = orjson.loads(record.value).get("source")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return source if isinstance(source, dict) and {"topic", "partition", "offset"} <= set(source) else None
    headers = dict(record.headers)
    names = ("topic", "partition", "offset")
    if all(HEADER_PREFIX + n in headers for n in names):
        return {n: headers[HEADER_PREFIX + n].decode(errors="replace") for n in names}
    return None
