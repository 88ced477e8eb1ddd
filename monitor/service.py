"""The streaming monitor: `anomon monitor --config anomon.yaml --model DIR`.

`Monitor.run` is the loop: poll a micro-batch, score it (`BatchScorer`), publish its alerts and
dead letters, and commit the batch's offsets only once the broker has acknowledged all of them.
The loop does not wait for those acknowledgements: after each poll it commits the batches whose
records are acknowledged by then (without waiting for the commit either), and only waits when
`max_unsettled_batches` are outstanding, or when it stops.  A crash at any point loses nothing:
whatever was not committed is read again, and its alerts come out again with the same
``alert_id``.  The loop only talks to the `Transport` protocol.

When Kafka cannot be reached the monitor reports not-ready, drops its client, and reconnects
with exponential backoff (creating missing topics again), while the metrics server keeps
serving.  A record the broker refuses for good is not a lost broker: it is produced again a few
times, then set aside (`monitor.setaside`), and its partition flows on.  Across a rebalance,
commits sent without waiting are sent again on the partitions kept (one sent during the
rebalance is refused), and records scored twice, because a partition went back to its last
commit or was handed over before its commit, are logged with their count (``totals["reread"]``,
``totals["handed_over"]``).  `run_monitor` adds configuration, the metrics server and signal handling: SIGTERM or
SIGINT finishes the batch in hand, flushes, commits, closes and returns 0.

Each settled batch (committed, its records acknowledged) goes to the monitor's batch observers
(`BatchObserver`): the metrics, drift detection (`monitor.drift`), and any passed in.  Observers
run on the scoring thread and see every batch exactly once, in order; a batch read again after
a reconnection was never settled, so it is not seen twice.

`Monitor.swap_model` replaces the model between two batches: the batch in hand is scored by the
old one, every later batch by the new one, so no event is dropped or scored twice by the switch.
Control events (drift, model reloads and refusals: JSON objects) are published to
``kafka.control_topic`` by the scoring thread, best-effort (not part of the commits).

In a program (or a test), run it in a thread and stop it from another::

    monitor = Monitor(load_config("anomon.yaml"), Bundle.load("models/web"))
    thread = threading.Thread(target=monitor.run)
    thread.start()
    ...
    monitor.stop()
    thread.join()
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from prometheus_client import CollectorRegistry

from monitor.alerts import iso_time
from monitor.deadletter import DeadLetterReason
from monitor.limits import ShapeLimits
from monitor.metrics import MetricsServer, MonitorMetrics
from monitor.pipeline import BatchResult, BatchScorer
from monitor.setaside import SetAside
from monitor.transport import (
    CommitFailed,
    DeliveryRefused,
    Message,
    Offsets,
    Transport,
    TransportError,
    TransportUnavailable,
    client,
    next_offsets,
)
from trainer.bundle import Bundle, anomon_version
from trainer.config import Config, KafkaConfig, effective_config, load_config
from trainer.errors import AnomonError
from trainer.fit import single_thread
from trainer.secrets import redact_logging

log = logging.getLogger(__name__)


class MonitorError(AnomonError):
    """The monitor cannot start (e.g. a model trained for other fields)."""


def kafka_transport(config: Config, **overrides: Any) -> Transport:
    """Create the monitor's missing topics, then a transport of the ``kafka.client`` library from ``config.kafka``.

    `overrides` are passed to the transport (e.g. ``bootstrap_timeout_ms``).
    """
    k = config.kafka
    library = client(k.client)
    security = kafka_security(k)
    library.ensure_topics(k.bootstrap_servers, {topic: k.partitions for topic in
                                                (k.input_topic, k.alert_topic, k.dead_letter_topic, k.control_topic)},
                          client_id=f"{k.client_id}-admin",
                          bootstrap_timeout_ms=overrides.get("bootstrap_timeout_ms", 10_000), **security)
    settings = {
        "bootstrap_servers": k.bootstrap_servers,
        "group_id": k.group_id,
        "input_topic": k.input_topic,
        "client_id": k.client_id,
        "session_timeout_ms": k.session_timeout_ms,
        "heartbeat_interval_ms": k.heartbeat_interval_ms,
        "max_message_bytes": config.monitor.max_message_bytes,
        # A fetch the broker holds longer than a batch may wait only adds latency: on tansu,
        # kafka-python's 500 ms gave a produce-to-poll p50 of 80-120 ms, 50 ms gave 15 ms.
        "fetch_max_wait_ms": config.monitor.max_wait_ms,
        **security,
        **overrides,
    }
    return library.transport(**settings)


def kafka_security(kafka: KafkaConfig) -> dict[str, Any]:
    """The security settings of ``config.kafka`` that are set, as transport keyword arguments (secrets revealed)."""
    return kafka.client_security()


def check_fields(config: Config, bundle: Bundle) -> None:
    """Refuse a bundle trained for other fields than the config defines, or vectors over the array limit."""
    for spec in bundle.config.fields:
        if spec.type == "vector" and spec.size > config.monitor.max_array_length:
            raise MonitorError(f"monitor: vector field '{spec.name}' has {spec.size} elements, more than "
                               f"monitor.max_array_length {config.monitor.max_array_length}: raise the limit")
    ours = {f.name: f.type for f in config.fields}
    theirs = {f.name: f.type for f in bundle.config.fields}
    for name in [*ours, *(n for n in theirs if n not in ours)]:
        if ours.get(name) != theirs.get(name):
            raise MonitorError(
                f"monitor: field '{name}' is {_kind(ours.get(name))} in the config but "
                f"{_kind(theirs.get(name))} in model {bundle.version}: retrain, or use the model's config")


def _kind(field_type: str | None) -> str:
    return field_type or "absent"


class BatchObserver(Protocol):
    """Sees every settled batch once, on the scoring thread (keep it quick: the loop waits)."""

    def on_batch(self, result: BatchResult) -> None: ...


def model_created_at(bundle: Bundle) -> float:
    """Unix seconds of the bundle's created-at (NaN for a bundle never saved)."""
    created = bundle.manifest.get("created_at")
    return datetime.fromisoformat(created).timestamp() if created else float("nan")


class Backoff:
    """Delays between reconnection attempts: doubling from `initial_s` up to `max_s`, with jitter.

    >>> b = Backoff(initial_s=1, max_s=4, jitter=0)
    >>> [b.next() for _ in range(4)]
    [1.0, 2.0, 4.0, 4.0]
    """

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0, jitter: float = 0.2) -> None:
        self.initial_s, self.max_s, self.jitter = initial_s, max_s, jitter
        self._next = float(initial_s)

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        # Jitter: monitors that lost the same broker do not all come back in the same instant.
        return delay * (1 - self.jitter * random.random())

    def reset(self) -> None:
        self._next = float(self.initial_s)


@dataclass
class _Unsettled:
    """A processed batch whose records are queued but not yet acknowledged, nor its offsets committed."""

    offsets: Offsets  # next offset to read per partition
    result: BatchResult
    firsts: Offsets  # first offset of the batch per partition


class Monitor:
    """Scores a Kafka topic of JSON events with a model bundle; at-least-once.

    Parameters
    ----------
    config
        Kafka topics and settings (``kafka``), batch sizes (``monitor``), the alert key (``key``).
    bundle
        The model. It lives in ``monitor.scorer.bundle``, read once per batch.
    transport_factory
        Makes a connected `Transport`; raises `TransportError` when Kafka cannot be reached.
        Default: `kafka_transport` with ``config``.
    flush_timeout_s
        Longest wait for alerts and dead letters to be acknowledged before the batch is given up
        (and read again after reconnecting).
    max_unsettled_batches
        Processed batches whose records may be unacknowledged at once; one more, and the loop
        waits for the broker (so a slow alert topic slows the monitor rather than filling memory).
    backoff
        Delays between reconnection attempts.
    lag_interval_s
        How often the consumer lag is measured; two failed measurements in a row while
        partitions are assigned mean the broker is gone, and the monitor reconnects.
    registry
        Prometheus registry for the metrics; default a new one (see `metrics`).
    observers
        Batch observers called after the metrics and drift detection (see `BatchObserver`).
    clock
        Wall clock in epoch seconds (control events' times).
    """

    def __init__(self, config: Config, bundle: Bundle, *,
                 transport_factory: Callable[[], Transport] | None = None,
                 flush_timeout_s: float = 30.0, max_unsettled_batches: int = 64, backoff: Backoff | None = None,
                 lag_interval_s: float = 5.0, registry: CollectorRegistry | None = None,
                 observers: Iterable[BatchObserver] = (), clock: Callable[[], float] = time.time) -> None:
        from monitor.drift import DriftObserver  # drift imports this module's protocol

        self.config = config
        self.clock = clock
        self.scorer = BatchScorer(bundle, key_field=config.key, max_message_bytes=config.monitor.max_message_bytes,
                                  top_contributions=config.monitor.top_contributions,
                                  invalid_values=config.monitor.invalid_values,
                                  limits=ShapeLimits(config.monitor.max_nesting_depth, config.monitor.max_array_length))
        self.metrics = MonitorMetrics(build_version=anomon_version(), fields=bundle.field_names, registry=registry)
        self.metrics.set_model(threshold=bundle.threshold.value, version=bundle.version,
                               created_at=model_created_at(bundle))
        self.drift = DriftObserver(config, bundle, emit=self.emit, metrics=self.metrics, clock=clock)
        self.observers: list[BatchObserver] = [self.metrics, self.drift, *observers]
        k = config.kafka
        kinds = {k.alert_topic: "alert", k.dead_letter_topic: "dead_letter", k.control_topic: "control"}
        self.set_aside = SetAside(kinds, k.dead_letter_topic, count=self._count_set_aside)
        self.transport_factory = transport_factory or (lambda: kafka_transport(config))
        self.flush_timeout_s = flush_timeout_s
        self.max_unsettled_batches = max_unsettled_batches
        self.backoff = backoff or Backoff()
        self.lag_interval_s = lag_interval_s
        self.ready = False  # connected to Kafka and answering: what /readyz reports
        self.assignment: frozenset[tuple[str, int]] = frozenset()
        # events, scored, alerts, dead_letters, batches, disconnects, reread, handed_over
        self.totals: Counter[str] = Counter()
        self._stop = threading.Event()
        self._unsettled: list[_Unsettled] = []  # processed, records not known to be acknowledged
        self._committed_unconfirmed: Offsets = {}  # committed without waiting: confirmed when stopping
        self._read_to: Offsets = {}  # next offset expected per partition: an earlier one is a re-read
        self._failed_probes = 0
        self._next_probe = 0.0
        self._next_model: Bundle | None = None  # set by swap_model, taken up before the next batch
        self._model_lock = threading.Lock()
        self._control: list[dict[str, Any]] = []  # control events waiting to be published

    @property
    def bundle(self) -> Bundle:
        """The model scoring the batches now."""
        return self.scorer.bundle

    def swap_model(self, bundle: Bundle) -> None:
        """Score every batch after the one in hand with `bundle` (safe from any thread).

        Raises `MonitorError` (and changes nothing) when `bundle` was trained for other fields.
        """
        check_fields(self.config, bundle)
        with self._model_lock:
            self._next_model = bundle

    def emit(self, event: dict[str, Any]) -> None:
        """Queue a control event for ``kafka.control_topic`` (safe from any thread)."""
        self._control.append(event)  # list.append is atomic; the loop takes the list whole

    def _take_up_model(self) -> None:
        with self._model_lock:
            bundle, self._next_model = self._next_model, None
        if bundle is None:
            return
        old = self.scorer.bundle
        self.scorer.bundle = bundle
        self.metrics.set_model(threshold=bundle.threshold.value, version=bundle.version,
                               created_at=model_created_at(bundle))
        self.totals["model_swaps"] += 1
        log.info("model %s → %s (threshold %.6g → %.6g), from the next batch on", old.version, bundle.version,
                 old.threshold.value, bundle.threshold.value)
        self.emit({"type": "model_loaded", "model_version": bundle.version, "previous_version": old.version,
                   "threshold": bundle.threshold.value, "at": iso_time(self.clock())})

    def _publish_control(self, transport: Transport) -> None:
        if not self._control:
            return
        events, self._control = self._control, []
        for event in events:
            transport.produce(self.config.kafka.control_topic, orjson.dumps(event), key=event["type"].encode())

    def stop(self) -> None:
        """Ask `run` to return after the batch in hand (safe from signal handlers and other threads)."""
        self._stop.set()

    def run(self) -> None:
        """Process batches until `stop`; reconnects by itself whenever Kafka is unreachable."""
        transport: Transport | None = None
        with single_thread():  # small forward passes: threads only add contention with the Kafka client
            try:
                while not self._stop.is_set():
                    if transport is None:
                        transport = self._connect()
                        continue
                    try:
                        self._step(transport)
                    except CommitFailed as exc:
                        # A rebalance moved the partitions: the batch is read again, same alert ids.
                        log.warning("%s; the batch will be delivered again", exc)
                    except TransportError as exc:
                        log.warning("Kafka unavailable: %s; reconnecting", exc)
                        self.ready = False
                        self.totals["disconnects"] += 1
                        self._unsettled = []  # read again after reconnecting
                        self._committed_unconfirmed = {}
                        self._read_to = {}  # said above: the batches since the last commit come again
                        transport.close()
                        transport = None
            finally:
                self.ready = False
                if transport is not None:
                    self._close(transport)
                t = self.totals
                log.info("stopped: %d events, %d scored, %d alerts, %d dead letters",
                         t["events"], t["scored"], t["alerts"], t["dead_letters"])

    def _close(self, transport: Transport) -> None:
        """Settle the batches in hand (on a clean stop), publish the control events, then close."""
        try:
            self._settle(transport, wait=True)
            self._publish_control(transport)
            self._flush(transport)
        except TransportError as exc:
            log.warning("%s; the batches since the last commit will be delivered again", exc)
        finally:
            transport.close()

    def _connect(self) -> Transport | None:
        try:
            transport = self.transport_factory()
        except TransportError as exc:
            delay = self.backoff.next()
            log.warning("cannot connect to Kafka (%s); retrying in %.1f s", exc, delay)
            self._stop.wait(delay)
            return None
        self.backoff.reset()
        self.ready = True
        self._failed_probes = 0
        self._next_probe = time.monotonic() + self.lag_interval_s
        log.info("connected to Kafka; consuming %s as group %s", self.config.kafka.input_topic,
                 self.config.kafka.group_id)
        return transport

    def _step(self, transport: Transport) -> None:
        m = self.config.monitor
        messages = transport.poll(max_records=m.max_batch_records, timeout_ms=m.max_wait_ms)
        assignment = frozenset(transport.assignment())
        if assignment != self.assignment:
            self._rebalanced(transport, assignment)
        self.assignment = assignment
        self._settle(transport)  # the earlier batches' records were acknowledged during the poll, as a rule
        self._publish_control(transport)
        self._take_up_model()  # between batches: this one is scored whole by the new model
        if messages:
            self._unsettled.append(self._process(transport, messages))
        if time.monotonic() >= self._next_probe:
            self._probe(transport)

    def _process(self, transport: Transport, messages: list[Message]) -> _Unsettled:
        """Score a batch and queue its alerts and dead letters."""
        started = time.perf_counter()
        result = self.scorer.process(messages)
        k = self.config.kafka
        for alert in result.alerts:
            transport.produce(k.alert_topic, alert.value, key=alert.key)
        for letter in result.dead_letters:
            transport.produce(k.dead_letter_topic, letter.value, key=letter.key, headers=letter.headers)
        result.seconds = time.perf_counter() - started
        result.offsets = next_offsets(messages)
        firsts = {(m.topic, m.partition): m.offset for m in reversed(messages)}
        self._note_reread(firsts)
        self._read_to.update(result.offsets)
        return _Unsettled(result.offsets, result, firsts)

    def _rebalanced(self, transport: Transport, assignment: frozenset[tuple[str, int]]) -> None:
        """Commit again what was committed without waiting on the partitions this member keeps.

        A commit sent while the group rebalances fails (``RebalanceInProgress``); on a partition
        that receives nothing more, no later commit would cover it, and a restart would score
        its records again.  Partitions this member lost are left alone: their new owner's
        commits are newer than ours.
        """
        kept = {tp: o for tp, o in self._committed_unconfirmed.items() if tp in assignment and tp in self.assignment}
        self._committed_unconfirmed = kept
        if kept:
            transport.commit(kept, wait=False)

    def _note_reread(self, firsts: Offsets) -> None:
        """Say so when a partition goes back to records this process has scored already.

        That is at-least-once at work (a rebalance reset the position to the last commit, or a
        batch outlived ``max_poll_interval_ms`` and the member was dropped): the records are
        scored again and their alerts come out again under the same ``alert_id``.
        """
        again = {tp: self._read_to[tp] - first for tp, first in firsts.items() if first < self._read_to.get(tp, first)}
        if again:
            self.totals["reread"] += sum(again.values())
            log.warning("reading %d records again (%s): the group rebalanced or a commit was lost; they are scored "
                        "again and their alerts repeat under the same alert ids", sum(again.values()),
                        ", ".join(f"{t}/{p} from {firsts[(t, p)]}" for t, p in sorted(again)))

    def _settle(self, transport: Transport, wait: bool = False) -> None:
        """Commit the processed batches whose alerts and dead letters are all acknowledged.

        Without `wait`, neither acknowledgements nor the commit are waited for, unless
        `max_unsettled_batches` are outstanding.  With `wait` (when stopping), everything is
        flushed and every offset committed since the last confirmed commit is confirmed.
        """
        if wait or len(self._unsettled) > self.max_unsettled_batches:
            self._flush(transport)
        elif not self._unsettled or self._pending(transport):
            return  # nothing to settle, or records still on their way: checked again after the next poll
        batches, self._unsettled = self._unsettled, []  # whatever happens next, never committed twice
        # Partitions a rebalance gave to another member are theirs to commit: ours could be older.
        assigned = transport.assignment()
        offsets = {tp: offset for batch in batches for tp, offset in batch.offsets.items() if tp in assigned}
        handed_over = sum(offset - batch.firsts[tp] for batch in batches for tp, offset in batch.offsets.items()
                          if tp not in assigned)
        if handed_over:
            self.totals["handed_over"] += handed_over
            moved = sorted({tp for batch in batches for tp in batch.offsets if tp not in assigned})
            log.warning("%s moved to another member before %d records of theirs were committed: the new owner "
                        "scores them again, their alerts repeat under the same alert ids", ", ".join(
                            f"{t}/{p}" for t, p in moved), handed_over)
        if wait:
            unconfirmed = {tp: o for tp, o in self._committed_unconfirmed.items() if tp in assigned}
            transport.commit({**unconfirmed, **offsets})
            self._committed_unconfirmed = {}
        else:
            transport.commit(offsets, wait=False)
            self._committed_unconfirmed.update(offsets)
        for batch in batches:
            result = batch.result
            for observer in self.observers:
                observer.on_batch(result)
            self.totals.update(events=result.size, scored=result.scored, alerts=len(result.alerts),
                               dead_letters=len(result.dead_letters), batches=1)

    def _flush(self, transport: Transport) -> None:
        """Wait for every record; those refused for good are produced again or set aside, and waited for too.

        Ends: a refused record is produced again at most `SetAside.max_attempts` times, then
        replaced once by a smaller one, which is dropped if refused in turn.
        """
        while True:
            try:
                return transport.flush(self.flush_timeout_s)
            except DeliveryRefused as exc:
                self.set_aside.handle(transport, exc.refused)

    def _pending(self, transport: Transport) -> int:
        """Records not yet acknowledged; those refused for good are produced again or set aside.

        After a refusal it reports 1 whatever is pending: the batches settle after the next poll.
        """
        try:
            return transport.pending()
        except DeliveryRefused as exc:
            self.set_aside.handle(transport, exc.refused)
            return 1

    def _count_set_aside(self, kind: str, replaced: bool) -> None:
        self.metrics.publish_failures.labels(kind).inc()
        if replaced:
            self.metrics.dead_letters.labels(DeadLetterReason.PUBLISH_REFUSED).inc()

    def _probe(self, transport: Transport) -> None:
        """Measure the consumer lag; it is also how a silently lost broker shows (polls just return nothing)."""
        lag = transport.lag()
        self._next_probe = time.monotonic() + self.lag_interval_s
        if self.assignment and not lag:
            self._failed_probes += 1
            self.ready = False
            if self._failed_probes >= 2:
                raise TransportUnavailable("the broker does not answer (lag unavailable twice)")
            return
        self._failed_probes = 0
        self.ready = True
        self.metrics.set_consumer_lag(lag)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call `stop` on SIGTERM and SIGINT (main thread only), restoring the previous handlers after."""

    def handler(signum: int, frame: object) -> None:
        log.info("%s: finishing the work in hand, then stopping", signal.Signals(signum).name)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_monitor(config_path: str | Path, model_dir: str | Path, log_level: str = "INFO") -> int:
    """`anomon monitor`: run until SIGTERM/SIGINT; returns the exit status (0 after a clean stop).

    Every log line, the Kafka client's included, has the config's secrets replaced by ``***``;
    the effective config (secrets redacted) is logged once at start.  Given a model directory
    (not one version), the monitor follows its CURRENT (`monitor.lifecycle.ModelWatcher`), and
    with ``retrain.mode: auto`` retrains after a drift (`monitor.retrain.AutoRetrainer`).
    """
    from monitor.lifecycle import ModelWatcher  # both import this module
    from monitor.retrain import AutoRetrainer

    config = load_config(config_path)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logging(config.secrets())
    # Its INFO lines narrate every connection; at DEBUG it logs its configuration (redacted above).
    logging.getLogger("kafka").setLevel(logging.DEBUG if logging.getLevelName(log_level) == logging.DEBUG
                                        else logging.WARNING)
    log.info("effective config: %s", json.dumps(effective_config(config), sort_keys=True))
    bundle = Bundle.load(model_dir)
    check_fields(config, bundle)
    monitor = Monitor(config, bundle)
    watched = (Path(model_dir) / "CURRENT").is_file()
    watcher = ModelWatcher(model_dir, monitor) if watched else None
    if config.retrain.mode == "auto":
        if not watched:
            raise MonitorError(f"monitor: retrain.mode auto needs a model directory with a CURRENT, not {model_dir}")
        monitor.observers.append(AutoRetrainer(config, config_path, model_dir, monitor))
    # What is loaded by now (torch, the model, the Kafka clients: 200k+ objects) lives as long as
    # the process. Frozen, it is skipped by full garbage collections, which otherwise take ~100 ms
    # each: the monitor's worst latencies.
    gc.freeze()
    with MetricsServer(monitor.metrics.registry, host=config.metrics.host, port=config.metrics.port,
                       ready=lambda: monitor.ready) as server:
        log.info("model %s (threshold %.6g); metrics at %s/metrics", bundle.version, bundle.threshold.value,
                 server.url)
        if watcher is not None:
            watcher.start()
        try:
            with stop_on_signals(monitor.stop):
                monitor.run()
        finally:
            if watcher is not None:
                watcher.stop()
    return 0
