"""`Transport` on kafka-python, and topic creation with its admin client.

>>> from monitor.broker import EmbeddedBroker
>>> from monitor.transport import KafkaPythonTransport, ensure_topics, next_offsets

>>> with EmbeddedBroker() as broker:
...     servers = broker.bootstrap_servers
...     created = ensure_topics(servers, {"events": 1, "alerts": 1})
...     with KafkaPythonTransport(
...         bootstrap_servers=servers, group_id="monitor", input_topic="events",
...         session_timeout_ms=6000, heartbeat_interval_ms=1000,
...     ) as transport:
...         transport.produce("events", b'{"x": 1}', key=b"sensor-1")
...         transport.flush()
...         batch = []
...         while not batch:
...             batch = transport.poll(max_records=100, timeout_ms=500)
...         transport.produce("alerts", batch[0].value, headers=[("source", b"test")])
...         transport.flush()
...         transport.commit(next_offsets(batch))
>>> sorted(created)
['alerts', 'events']
>>> batch[0].key, batch[0].value, batch[0].offset
(b'sensor-1', b'{"x": 1}', 0)
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Iterator, Mapping

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from monitor.transport.base import (
    Client,
    CommitFailed,
    DeliveryFailed,
    DeliveryRefused,
    Headers,
    Message,
    Offsets,
    Refused,
    TransportError,
    TransportUnavailable,
    read_between,
    security_settings,
)

__all__ = ["KafkaPythonTransport", "KafkaPythonProducer", "KafkaPythonReader", "ensure_topics", "CLIENT"]

log = logging.getLogger(__name__)

# A producer drops its acknowledged futures once it holds this many (see `KafkaPythonProducer.produce`).
_PRUNE_AT = 1024
# Errors that mean "cannot reach / talk to the cluster right now": retry later.
_UNREACHABLE = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.BrokerNotAvailableError,
    OSError,
)


class KafkaPythonProducer:
    """`Producer` on kafka-python's ``KafkaProducer``: acks from all in-sync replicas, failures kept for `pending`.

    Parameters
    ----------
    bootstrap_servers, client_id
        As for `KafkaPythonTransport`.
    security_protocol, sasl_mechanism, sasl_plain_username, sasl_plain_password,
    ssl_cafile, ssl_certfile, ssl_keyfile, ssl_password
        Passed to the client when set; ``None`` keeps kafka-python's default.
    linger_ms
        How long a record may wait for others to share its request (batching).
    max_message_bytes
        Largest record produced.
    bootstrap_timeout_ms
        How long the constructor tries to reach the cluster before raising `TransportUnavailable`.
    produce_block_ms
        How long ``produce`` may block (metadata, full buffer) before failing.
    close_timeout_s
        Bound on ``close``, so shutting down with the broker gone does not hang.
    producer_config
        Extra kafka-python settings (e.g. ``{"compression_type": "zstd"}``), applied last.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        client_id: str = "anomon",
        security_protocol: str | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_password: str | None = None,
        linger_ms: int = 0,
        max_message_bytes: int = 1_048_576,
        bootstrap_timeout_ms: int = 10_000,
        produce_block_ms: int = 10_000,
        close_timeout_s: float = 5.0,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._close_timeout_s = close_timeout_s
        # (future, record) of each record not known to be acknowledged: the record is kept in case
        # the broker refuses it for good, for the caller to set aside.
        self._pending: list[tuple[Any, Refused]] = []
        self._refused: list[Refused] = []  # refused before being sent, reported by the next pending()
        self._prune_at = _PRUNE_AT
        self._closed = False
        self._producer = _connect(KafkaProducer, {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "bootstrap_timeout_ms": bootstrap_timeout_ms,
            **security_settings({
                "security_protocol": security_protocol,
                "sasl_mechanism": sasl_mechanism,
                "sasl_plain_username": sasl_plain_username,
                "sasl_plain_password": sasl_plain_password,
                "ssl_cafile": ssl_cafile,
                "ssl_certfile": ssl_certfile,
                "ssl_keyfile": ssl_keyfile,
            "ssl_password": ssl_password,
            }),
            "acks": "all",
            "linger_ms": linger_ms,
            "max_request_size": max_message_bytes,
            "max_block_ms": produce_block_ms,
            **(producer_config or {}),
        })

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        headers = list(headers or [])
        record = Refused(topic, value, key, tuple(headers), "")
        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except kafka_errors.KafkaError as exc:
            if refused_for_good(exc):  # too large for the client: never sent, reported by pending()
                self._refused.append(record._replace(error=_describe(exc)))
                return
            # Never queued (no metadata within produce_block_ms...): nothing is pending.
            raise DeliveryFailed(f"could not queue record for {topic!r}: {exc}") from exc
        self._pending.append((future, record))
        if len(self._pending) >= self._prune_at:
            # A producer nobody asks `pending` (replay) must not keep a future per record sent:
            # drop the acknowledged ones, keep the failed ones for `pending` to report.
            self._pending = [(f, r) for f, r in self._pending if not f.is_done or f.failed()]
            self._prune_at = max(_PRUNE_AT, 2 * len(self._pending))

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except kafka_errors.KafkaTimeoutError as exc:
            # Records stay pending: a later flush may still see them succeed.
            raise DeliveryFailed(f"flush timed out with {len(self._pending)} records pending: {exc}") from exc
        self.pending()  # every record is done now: raises if one failed

    def pending(self) -> int:
        done = [(future, record) for future, record in self._pending if future.is_done]
        if done:
            self._pending = [(future, record) for future, record in self._pending if not future.is_done]
            failed = [(future.exception, record) for future, record in done if future.failed()]
            transient = [exc for exc, _ in failed if not refused_for_good(exc)]
            if transient:  # the batch is read again after reconnecting: refusals come back then
                self._refused = []
                raise DeliveryFailed(f"{len(transient)} of {len(done)} records were not delivered: {transient[0]}")
            self._refused += [record._replace(error=_describe(exc)) for exc, record in failed]
        if self._refused:
            refused, self._refused = self._refused, []
            raise DeliveryRefused(refused)
        return len(self._pending)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close_producer(self._producer, self._close_timeout_s)

    def __enter__(self) -> "KafkaPythonProducer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class KafkaPythonTransport:
    """`Transport` on kafka-python: one consumer (group member) and one `KafkaPythonProducer`.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]``.
    group_id
        Consumer group; members of one group share the input partitions.
    input_topic
        Topic to consume.
    client_id
        Shown in broker logs and metrics.
    security_protocol, sasl_mechanism, sasl_plain_username, sasl_plain_password,
    ssl_cafile, ssl_certfile, ssl_keyfile, ssl_password
        Passed to both clients when set; ``None`` keeps kafka-python's default.
    session_timeout_ms, heartbeat_interval_ms
        Group membership timing. Lower values mean faster failover (and, on the
        embedded broker, faster joins: a join takes ``session_timeout_ms / 2``).
    max_poll_interval_ms
        Longest allowed gap between two ``poll`` calls before the member is
        considered stuck and its partitions are reassigned.
    fetch_max_wait_ms
        Longest the broker holds a fetch that finds no new records.
    max_message_bytes
        Largest record produced or fetched.
    auto_offset_reset
        Where a group without committed offsets starts: ``"earliest"`` (every
        record is scored) or ``"latest"``.
    bootstrap_timeout_ms
        How long the constructor tries to reach the cluster before raising
        `TransportUnavailable`.
    produce_block_ms
        How long ``produce`` may block (metadata, full buffer) before failing.
    commit_timeout_ms, lag_timeout_ms
        Bounds on ``commit`` and ``lag`` network calls.
    close_timeout_s
        Bound on ``close`` for each client, so shutting down with the broker
        gone does not hang.
    consumer_config, producer_config
        Extra kafka-python settings (e.g. ``{"compression_type": "zstd"}``),
        applied last.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        input_topic: str,
        client_id: str = "anomon-monitor",
        security_protocol: str | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_password: str | None = None,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        fetch_max_wait_ms: int = 500,
        max_message_bytes: int = 1_048_576,
        auto_offset_reset: str = "earliest",
        bootstrap_timeout_ms: int = 10_000,
        produce_block_ms: int = 10_000,
        commit_timeout_ms: int = 10_000,
        lag_timeout_ms: int = 2_000,
        close_timeout_s: float = 5.0,
        consumer_config: Mapping[str, Any] | None = None,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be 'earliest' or 'latest', not {auto_offset_reset!r}")
        self._input_topic = input_topic
        self._auto_offset_reset = auto_offset_reset
        self._commit_timeout_ms = commit_timeout_ms
        self._lag_timeout_ms = lag_timeout_ms
        self._close_timeout_s = close_timeout_s
        self._closed = False

        security = security_settings({
            "security_protocol": security_protocol,
            "sasl_mechanism": sasl_mechanism,
            "sasl_plain_username": sasl_plain_username,
            "sasl_plain_password": sasl_plain_password,
            "ssl_cafile": ssl_cafile,
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
            "ssl_password": ssl_password,
        })
        self._consumer = _connect(KafkaConsumer, {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "bootstrap_timeout_ms": bootstrap_timeout_ms,
            **security,
            "group_id": group_id,
            "enable_auto_commit": False,  # offsets are committed only after a successful flush
            "auto_offset_reset": auto_offset_reset,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
            "fetch_max_wait_ms": fetch_max_wait_ms,
            "max_partition_fetch_bytes": max(max_message_bytes, 1_048_576),
            **(consumer_config or {}),
        })
        try:
            self._producer = KafkaPythonProducer(
                bootstrap_servers=bootstrap_servers, client_id=client_id, **security,
                max_message_bytes=max_message_bytes, bootstrap_timeout_ms=bootstrap_timeout_ms,
                produce_block_ms=produce_block_ms, close_timeout_s=close_timeout_s, producer_config=producer_config)
        except BaseException:
            self._consumer.close(autocommit=False)
            raise
        self._consumer.subscribe([input_topic])

    # -- reading --------------------------------------------------------------

    def poll(self, max_records: int, timeout_ms: int) -> list[Message]:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except _UNREACHABLE as exc:
            raise TransportUnavailable(f"poll failed: {exc}") from exc
        except kafka_errors.KafkaError as exc:
            raise TransportError(f"poll failed: {exc}") from exc
        return [r for tp in sorted(batches) for r in batches[tp]]  # partition order, then offset order

    def commit(self, offsets: Offsets, *, wait: bool = True) -> None:
        # Only partitions this member owns: a batch read before a rebalance must not overwrite
        # the offsets committed by the partition's new owner.
        owned = self._consumer.assignment()
        to_commit = {
            tp: OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in offsets.items()
            if (tp := TopicPartition(topic, partition)) in owned
        }
        if not to_commit:
            return
        try:
            if wait:
                self._consumer.commit(to_commit, timeout_ms=self._commit_timeout_ms)
            else:  # the response is handled by a later poll
                self._consumer.commit_async(to_commit, callback=_log_failed_commit)
        except _UNREACHABLE as exc:
            raise TransportUnavailable(f"commit failed: {exc}") from exc
        except kafka_errors.KafkaError as exc:
            raise CommitFailed(f"commit failed: {exc}") from exc

    def rewind(self) -> None:
        """Seek every assigned partition back to its committed offset.

        Used after a failed flush: the consumer's position has already moved
        past the batch, and without a rewind it would only come back after a
        restart or a rebalance.
        """
        for tp in self._consumer.assignment():
            try:
                committed = self._consumer.committed(tp, timeout_ms=self._commit_timeout_ms)
            except _UNREACHABLE as exc:
                raise TransportUnavailable(f"rewind failed: {exc}") from exc
            except kafka_errors.KafkaError as exc:
                raise TransportError(f"rewind failed: {exc}") from exc
            if committed is not None:
                self._consumer.seek(tp, committed)
            elif self._auto_offset_reset == "earliest":
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek_to_end(tp)

    def lag(self) -> dict[int, int]:
        # Best effort by design: lag feeds a metric, it must never break the loop.
        partitions = [tp for tp in self._consumer.assignment() if tp.topic == self._input_topic]
        if not partitions:
            return {}
        try:
            ends = self._consumer.end_offsets(partitions, timeout_ms=self._lag_timeout_ms)
        except Exception as exc:  # noqa: BLE001 - any failure just means "unknown"
            log.debug("lag: end offsets unavailable: %s", exc)
            return {}
        result: dict[int, int] = {}
        for tp in partitions:
            try:
                position = self._consumer.position(tp, timeout_ms=self._lag_timeout_ms)
            except Exception as exc:  # noqa: BLE001
                log.debug("lag: no position for %s: %s", tp, exc)
                continue
            if position is not None and ends.get(tp) is not None:
                result[tp.partition] = max(0, ends[tp] - position)
        return result

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    # -- writing: the producer's -----------------------------------------------

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        self._producer.produce(topic, value, key=key, headers=headers)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout_s)

    def pending(self) -> int:
        return self._producer.pending()

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.close()
        finally:
            # autocommit=False: only explicit commits after a successful flush count.
            self._consumer.close(autocommit=False, timeout_ms=int(self._close_timeout_s * 1000))

    def __enter__(self) -> "KafkaPythonTransport":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def refused_for_good(exc: BaseException | None) -> bool:
    """Whether a delivery error means the broker (or the client) will never take this record.

    kafka-python marks the errors worth retrying (leader moved, timeout, connection lost) as
    ``retriable``; the others (record too large, invalid record, not authorised) stay so whatever
    happens, and reconnecting to read the batch again would only repeat them.

    >>> refused_for_good(kafka_errors.MessageSizeTooLargeError()), refused_for_good(kafka_errors.KafkaTimeoutError())
    (True, False)
    """
    return (isinstance(exc, kafka_errors.KafkaError) and not exc.retriable
            and not isinstance(exc, _UNREACHABLE))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _log_failed_commit(offsets: Mapping[TopicPartition, OffsetAndMetadata], response: Any) -> None:
    if isinstance(response, Exception):
        log.warning("commit of %d partitions failed: %s; their records will be delivered again unless a "
                    "later commit covers them", len(offsets), response)


def _close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close ``producer`` within about ``timeout_s``, even with records stuck.

    kafka-python 3.0's ``close`` raises KafkaTimeoutError when records are
    still pending (e.g. the broker is gone) and stops half-way, leaving its
    I/O thread running. Those records were never acknowledged, so nothing was
    committed for them: give up on them, force the I/O thread down (it fails
    the pending futures), then close again.
    """
    try:
        producer.close(timeout=timeout_s)
        return
    except kafka_errors.KafkaError as exc:
        log.warning("closing producer: giving up on undelivered records: %s", exc)
    sender = getattr(producer, "_sender", None)  # private: no public force-close exists
    if sender is not None:
        sender.force_close()
        sender.join(timeout_s)
    try:
        producer.close(timeout=timeout_s)
    except kafka_errors.KafkaError as exc:
        log.warning("producer did not close cleanly: %s", exc)


class KafkaPythonReader:
    """`TopicReader` on kafka-python's ``KafkaConsumer``, assigned partitions by hand (no group, no commits).

    ``bootstrap_servers``, ``client_id``, ``bootstrap_timeout_ms`` and the security settings
    (`SECURITY_SETTINGS`, as keywords) are those of `KafkaPythonProducer`; ``fetch_max_wait_ms``
    bounds how long a fetch waits for records, and ``max_records`` how many one poll returns.
    """

    def __init__(self, *, bootstrap_servers: str, client_id: str = "anomon-reader", fetch_max_wait_ms: int = 100,
                 max_records: int = 5000, bootstrap_timeout_ms: int = 10_000, **security: Any) -> None:
        self._max_records = max_records
        self._consumer = _connect(KafkaConsumer, {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "enable_auto_commit": False,
            "fetch_max_wait_ms": fetch_max_wait_ms,
            "bootstrap_timeout_ms": bootstrap_timeout_ms,
            **security_settings(security),
        })

    def partitions(self, topic: str) -> set[int]:
        return set(self._consumer.partitions_for_topic(topic) or ())

    def offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        tps = [TopicPartition(topic, p) for p in partitions]
        first, last = self._consumer.beginning_offsets(tps), self._consumer.end_offsets(tps)
        return {tp.partition: (first[tp], last[tp]) for tp in tps}

    def offsets_at(self, topic: str, partitions: Iterable[int], timestamp_ms: int) -> dict[int, int | None]:
        found = self._consumer.offsets_for_times({TopicPartition(topic, p): timestamp_ms for p in partitions})
        return {tp.partition: (at.offset if at is not None else None) for tp, at in found.items()}

    def read(self, topic: str, partition: int, start: int, end: int, *, idle_timeout_s: float = 10.0) -> Iterator[Message]:
        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        yield from read_between(lambda: self._consumer.poll(timeout_ms=500, max_records=self._max_records).get(tp, []),
                                start, end, idle_timeout_s, time.monotonic)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> "KafkaPythonReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _connect(client_class: type, settings: Mapping[str, Any]) -> Any:
    """Build a kafka-python client, turning "cannot reach the cluster" into one error."""
    try:
        return client_class(**settings)
    except _UNREACHABLE as exc:
        raise TransportUnavailable(
            f"cannot reach Kafka at {settings['bootstrap_servers']}: {exc}"
        ) from exc


def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    client_id: str = "anomon-admin",
    bootstrap_timeout_ms: int = 10_000,
    request_timeout_ms: int = 10_000,
    **security: Any,
) -> set[str]:
    """Create the topics of ``topics`` (name → partitions) that do not exist yet.

    Existing topics are left alone, whatever their partition count. Returns
    the names actually created, so a second call returns an empty set.
    ``security`` takes the same settings as `KafkaPythonTransport`.
    """
    if not topics:
        return set()
    admin = _connect(KafkaAdminClient, {
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "bootstrap_timeout_ms": bootstrap_timeout_ms,
        "request_timeout_ms": request_timeout_ms,
        **security_settings(security),
    })
    try:
        response = admin.create_topics(
            {
                name: {"num_partitions": partitions, "replication_factor": replication_factor}
                for name, partitions in topics.items()
            },
            timeout_ms=request_timeout_ms,
            raise_errors=False,  # "already exists" is the expected, idempotent case
            wait_for_metadata=True,  # usable by clients as soon as we return
        )
    except _UNREACHABLE as exc:
        raise TransportUnavailable(f"cannot create topics on {bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()

    created: set[str] = set()
    already_exists = kafka_errors.TopicAlreadyExistsError.errno
    for result in response["topics"]:
        if result["error_code"] == 0:
            created.add(result["name"])
        elif result["error_code"] != already_exists:
            error = kafka_errors.for_code(result["error_code"])
            raise TransportError(
                f"cannot create topic {result['name']!r}: {error.__name__}: {result['error_message']}"
            )
    return created


CLIENT = Client("kafka-python", KafkaPythonTransport, KafkaPythonProducer, ensure_topics, KafkaPythonReader)
