"""`anomon replay`: produce a file's records into a Kafka topic, as events for the monitor.

Each record is sent as one JSON message, keyed by the config's ``key`` field when set.  A
record without a value in the schema's timestamp field gets the time it is sent, so the
monitor's event lag means something.  ``--rate`` paces sending (events per second, on a fixed
schedule); ``--loop`` starts over at the end of the file until interrupted.  Records go through
the transport seam (the `monitor.transport.Producer` of the ``kafka.client`` library):
acknowledged by all in-sync replicas, batched for up to 5 ms.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, repeat
from pathlib import Path
from typing import Any

from monitor.alerts import iso_time, key_bytes
from monitor.service import kafka_security, stop_on_signals
from monitor.transport import Producer
from monitor.transport import client as kafka_client
from trainer.config import Config, load_config
from trainer.data import count_lines, iter_records
from trainer.progress import progress

class Replayer:
    """Sends records to a topic at an optional fixed rate.

    Parameters
    ----------
    config
        Kafka settings, the key field and the timestamp field.
    topic
        Target topic; default ``kafka.input_topic``.
    rate
        Events per second; None sends as fast as possible.
    clock
        Wall clock for stamping missing event times.
    """

    def __init__(self, config: Config, *, topic: str | None = None, rate: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.config = config
        self.topic = topic or config.kafka.input_topic
        self.rate = rate
        self.clock = clock
        self._time_field = config.timestamp_field
        self.sent = 0
        self._stopping = False

    def stop(self) -> None:
        """Stop `send` after the record in hand (safe from a signal handler or another thread)."""
        self._stopping = True

    def encode(self, record: dict[str, Any]) -> tuple[bytes | None, bytes]:
        """(key, value) of `record`, with its event time stamped if it has none."""
        if self._time_field is not None and record.get(self._time_field) is None:
            record = {**record, self._time_field: iso_time(self.clock())}
        key = record.get(self.config.key) if self.config.key else None
        return (None if key is None else key_bytes(key)), json.dumps(record).encode()

    def send(self, producer: Producer, records: Iterator[dict[str, Any]]) -> int:
        """Send `records` (paced by `rate`) and flush; returns how many were sent (also in `sent`)."""
        started, first = time.perf_counter(), self.sent
        for record in records:
            if self.rate is not None:
                # Fixed schedule: record n leaves at n / rate, so short stalls are caught up.
                delay = started + (self.sent - first) / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            key, value = self.encode(record)
            producer.produce(self.topic, value, key=key)
            self.sent += 1
            if self._stopping:  # checked after sending, so that no record is taken from `records` and dropped
                break
        producer.flush()
        return self.sent - first


def send_records(config: Config, records: Iterable[dict[str, Any]], *, topic: str | None = None,
                 rate: float | None = None, client: str = "replay") -> Replayer:
    """Send `records` with a `Replayer` over a new producer (creating the topic if missing), then close.

    Ctrl-C or SIGTERM stops sending after the record in hand; what was sent by then is delivered.
    (A signal handler asks the loop to stop rather than raising KeyboardInterrupt inside the
    client library, which could leave its locks held and the final flush waiting for ever.)
    Returns the replayer (its `sent`).
    `client` names the Kafka client: ``<kafka.client_id>-<client>``; the library is ``kafka.client``'s.
    """
    replayer = Replayer(config, topic=topic, rate=rate)
    k = config.kafka
    library = kafka_client(k.client)
    security = kafka_security(k)
    client_id = f"{k.client_id}-{client}"
    library.ensure_topics(k.bootstrap_servers, {replayer.topic: k.partitions}, client_id=client_id, **security)
    producer = library.producer(bootstrap_servers=k.bootstrap_servers, client_id=client_id, linger_ms=5, **security)
    on_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers go
    try:
        with stop_on_signals(replayer.stop) if on_main_thread else contextlib.nullcontext():
            replayer.send(producer, iter(records))
    finally:
        producer.close()
    return replayer


def replay_file(config_path: str | Path, data: str | Path, *, topic: str | None = None, rate: float | None = None,
                loop: bool = False) -> int:
    """`anomon replay`: send the records of `data`; returns the exit status."""
    config = load_config(config_path)
    passes = repeat(None) if loop else [None]
    records = chain.from_iterable(iter_records(data) for _ in passes)
    target = topic or config.kafka.input_topic
    bar = progress(records, total=None if loop else count_lines(data), desc=f"replay → {target}", unit="ev")
    started = time.perf_counter()
    try:
        replayer = send_records(config, bar, topic=target, rate=rate)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    print(f"replayed {replayer.sent} events from {data} to {replayer.topic} in {elapsed:.1f} s "
          f"({replayer.sent / max(elapsed, 1e-9):.0f} events/s)")
    return 0
