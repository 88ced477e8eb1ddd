"""The transport contract, independent of any Kafka client library: this module imports none.

The scoring loop only talks to the `Transport` protocol, so a client library is one module beside
this one (`monitor.transport.kafka_python`, ...) and the loop does not change with it.

Delivery is at-least-once. The contract that makes it so:

1. ``poll`` a batch and process it, calling ``produce`` for alerts and
   dead-letter records;
2. ``flush`` (or see ``pending`` reach 0 without waiting): it raises
   `DeliveryFailed` if any of those records was not acknowledged, and then
   the loop must **not** commit (call ``rewind`` to read the batch again);
   it raises `DeliveryRefused` instead when the only failures are records
   the broker refused for good (too large for the topic, invalid, not
   authorised): re-reading would only repeat them, so the loop sets them
   aside (`monitor.setaside`) and goes on;
3. ``commit`` the next offset to read per partition (`next_offsets` computes
   it from the batch).

A broker that cannot be reached shows up as `TransportUnavailable`, which
the loop catches and retries with backoff.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Protocol, runtime_checkable

from trainer.errors import AnomonError

__all__ = [
    "Offsets",
    "Headers",
    "SECURITY_SETTINGS",
    "Message",
    "Record",
    "Producer",
    "Transport",
    "TopicReader",
    "Client",
    "next_offsets",
    "read_between",
    "security_settings",
    "TransportError",
    "TransportUnavailable",
    "DeliveryFailed",
    "DeliveryRefused",
    "Refused",
    "CommitFailed",
]

Offsets = dict[tuple[str, int], int]
Headers = list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]

# The security settings a transport takes (the config's kafka.* keys of the same names, which are
# kafka-python's names; other clients map them to their own).
SECURITY_SETTINGS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
)


# -- errors -------------------------------------------------------------------


class TransportError(AnomonError):
    """Base class of every error the transport raises on purpose."""


class TransportUnavailable(TransportError):
    """The broker cannot be reached. Transient: retry with backoff."""


class DeliveryFailed(TransportError):
    """One or more produced records were not acknowledged. Do not commit."""


class Refused(NamedTuple):
    """A produced record the broker refused for good, and its error: what `DeliveryRefused` lists."""

    topic: str
    value: bytes
    key: bytes | None
    headers: Headers
    error: str


class DeliveryRefused(DeliveryFailed):
    """Records the broker refused for good: the same bytes sent again would be refused again.

    Unlike other delivery failures (an unreachable broker, a timeout) these are not worth a
    reconnection.  They are no longer pending; `refused` lists them for the caller to retry a
    bounded number of times or set aside.  Every other record is still pending or acknowledged.
    """

    def __init__(self, refused: list[Refused]) -> None:
        super().__init__(f"{len(refused)} records refused for good, e.g. for {refused[0].topic!r}: {refused[0].error}")
        self.refused = refused


class CommitFailed(TransportError):
    """Offsets were not committed (e.g. the group rebalanced meanwhile).

    Records since the last successful commit will be delivered again, to this
    member or to whichever member owns the partition now.
    """


# -- data and interface -------------------------------------------------------


class Message(Protocol):
    """One record read from Kafka, as the scoring loop sees it, whatever the client library.

    kafka-python's ``ConsumerRecord`` has these attributes already, so `KafkaPythonTransport`
    hands its records over as they are: a copy per record would cost more than decoding its JSON.
    """

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def timestamp(self) -> int | None:
        """Milliseconds since the epoch; None or negative when the record has none."""
        ...


class Record(NamedTuple):
    """A `Message` built by hand: for transports whose client has no record type of its own, and tests."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp: int | None = None


@runtime_checkable
class Producer(Protocol):
    """The writing half of a `Transport`, alone: what `anomon replay` and the demo's traffic need."""

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Queue a record. Raises `DeliveryFailed` if it cannot even be queued.

        A record refused for good before it is even sent (larger than the client allows, say)
        does not raise: the next ``pending`` or ``flush`` reports it with `DeliveryRefused`.
        """
        ...

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for queued records; raise `DeliveryFailed` if any failed (`DeliveryRefused` if only refused ones)."""
        ...

    def pending(self) -> int:
        """Records queued and not acknowledged yet, without waiting; `DeliveryFailed` / `DeliveryRefused` as `flush`."""
        ...

    def close(self) -> None:
        """Release connections, giving up on records still queued after a bounded wait."""
        ...


@runtime_checkable
class Transport(Producer, Protocol):
    """What the monitor loop needs from a Kafka client: a group member and a `Producer`. One thread per instance."""

    def poll(self, max_records: int, timeout_ms: int) -> list[Message]:
        """Up to ``max_records`` messages, in partition then offset order.

        Returns as soon as messages are there, waiting at most ``timeout_ms`` for the first one
        (longer only while joining the group).
        """
        ...

    def commit(self, offsets: Offsets, *, wait: bool = True) -> None:
        """Commit ``{(topic, partition): next offset to read}`` for the partitions this member owns.

        Offsets of other partitions are left out: a rebalance gave them to another member.

        With ``wait=False`` the commit is sent and not waited for: if it fails, that is logged,
        and those records are delivered again unless a later commit covers them.
        """
        ...

    def rewind(self) -> None:
        """Go back to the last committed offsets on every assigned partition."""
        ...

    def lag(self) -> dict[int, int]:
        """Records not yet read per input partition (best effort, may be empty)."""
        ...

    def assignment(self) -> set[tuple[str, int]]:
        """``(topic, partition)`` pairs currently assigned to this member."""
        ...

    def close(self) -> None:
        """Leave the group and release connections. Does not commit."""
        ...


@runtime_checkable
class TopicReader(Protocol):
    """Reads a topic's partitions between offsets, outside any consumer group (retraining's window).

    Commits nothing and joins no group, so reading never moves the monitor's offsets.
    """

    def partitions(self, topic: str) -> set[int]:
        """The topic's partition numbers; empty when there is no such topic."""
        ...

    def offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        """Per partition: (first offset held, offset after the last)."""
        ...

    def offsets_at(self, topic: str, partitions: Iterable[int], timestamp_ms: int) -> dict[int, int | None]:
        """Per partition: the first offset whose record time is at or after ``timestamp_ms``; None if none is."""
        ...

    def read(self, topic: str, partition: int, start: int, end: int, *, idle_timeout_s: float = 10.0) -> Iterator[Message]:
        """The partition's records from offset ``start`` up to ``end`` (exclusive), in offset order.

        Stops early when no record arrives for ``idle_timeout_s`` (the partition ended sooner).
        """
        ...

    def close(self) -> None:
        ...


class Client(NamedTuple):
    """One client library behind the seam (``kafka.client`` in the config names it).

    Each takes the same keyword arguments whatever the library: see `KafkaPythonTransport`,
    `KafkaPythonProducer`, `KafkaPythonReader` and `ensure_topics` in `monitor.transport.kafka_python`.
    """

    name: str
    transport: Callable[..., Transport]
    producer: Callable[..., Producer]
    ensure_topics: Callable[..., set[str]]
    reader: Callable[..., TopicReader]


def security_settings(security: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``security`` that are set, by their `SECURITY_SETTINGS` names; unknown names refused.

    >>> security_settings({"security_protocol": "SSL", "ssl_cafile": None})
    {'security_protocol': 'SSL'}
    >>> security_settings({"sasl_pasword": "x"})
    Traceback (most recent call last):
    ...
    TypeError: unknown security settings: ['sasl_pasword']
    """
    unknown = set(security) - set(SECURITY_SETTINGS)
    if unknown:
        raise TypeError(f"unknown security settings: {sorted(unknown)}")
    return {key: value for key, value in security.items() if value is not None}


def next_offsets(messages: Iterable[Message]) -> Offsets:
    """Offsets to commit after processing ``messages`` (in offset order per partition, as polled).

    >>> next_offsets([Record("t", 0, 5, None, b""), Record("t", 1, 9, None, b""), Record("t", 0, 6, None, b"")])
    {('t', 0): 7, ('t', 1): 10}
    """
    return {(m.topic, m.partition): m.offset + 1 for m in messages}  # the last one of a partition wins


def read_between(fetch: Callable[[], list[Message]], start: int, end: int, idle_timeout_s: float,
                 clock: Callable[[], float]) -> Iterator[Message]:
    """The messages of one partition's `fetch` batches (read from offset `start`) up to offset `end`
    (exclusive), stopping early once a fetch has come back empty for `idle_timeout_s`: what each
    `TopicReader.read` does over its own client.

    >>> batches = [[Record("t", 0, 3, None, b"a"), Record("t", 0, 4, None, b"b")], [], [Record("t", 0, 5, None, b"c")]]
    >>> import time
    >>> [m.offset for m in read_between(lambda: batches.pop(0), 3, 5, 1.0, time.monotonic)]
    [3, 4]
    >>> [m.offset for m in read_between(lambda: [], 3, 5, 0.0, time.monotonic)]
    []
    """
    position, idle_since = start, clock()
    while position < end:
        batch = fetch()
        if not batch:
            if clock() - idle_since >= idle_timeout_s:
                return
            continue
        idle_since = clock()
        for message in batch:
            if message.offset >= end:
                return
            position = message.offset + 1
            yield message
