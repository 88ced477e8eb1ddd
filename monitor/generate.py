"""`anomon generate`: the demo's synthetic web traffic (`monitor.traffic`), as a command.

Two modes:

* live (the default): send traffic with injected anomalies to a Kafka topic at ``--rate`` events
  per second, stamped with the send time, until SIGTERM or SIGINT (or ``--seconds`` passed, or
  ``--count`` events sent).  The compose stack's ``generator`` service runs this.
* history (``--out FILE``): write ``--count`` events (default 40,000) spread over a fixed week to
  a JSON Lines file (``.gz`` compresses), e.g. training data for `anomon train`; no Kafka.

Both use the same site (`monitor.traffic.SITE_SEED`: the same users), so a model trained on the
history fits the live traffic.  Kafka settings (and ``key``) come from ``--config``, by default
the packaged demo config, with the usual ``ANOMON_KAFKA_*`` environment overrides.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "history.jsonl"
>>> generate_history(out, count=50, anomaly_rate=0.0)
50
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from importlib.resources import as_file
from pathlib import Path
from typing import Any

from monitor.demo import TRAINING_EVENTS
from monitor.replay import send_records
from monitor.resources import DEMO_CONFIG
from monitor.service import stop_on_signals
from monitor.traffic import NORMAL, live_stream, week_of_history
from trainer.config import Config, load_config
from trainer.datasets import write_jsonl

def generate_history(out: str | Path, *, count: int, anomaly_rate: float) -> int:
    """Write `count` events of the fixed week (`monitor.traffic.week_of_history`) to `out`."""
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    return write_jsonl(week_of_history(count, anomaly_rate=anomaly_rate), out)


def generate_live(config: Config, *, rate: float, anomaly_rate: float, topic: str | None = None,
                  seconds: float | None = None, count: int | None = None, stop: threading.Event | None = None,
                  clock: Callable[[], float] = time.monotonic) -> Counter[str]:
    """Send live traffic to `topic` (default ``kafka.input_topic``) until `stop` is set, `seconds`
    pass or `count` events are sent, whichever comes first.

    Returns the events sent, by label (``normal`` or the anomaly kind).
    """
    stop = stop or threading.Event()
    deadline = None if seconds is None else clock() + seconds
    sent: Counter[str] = Counter()

    def events() -> Iterator[dict[str, Any]]:
        for event in live_stream(rate, anomaly_rate=anomaly_rate):
            if stop.is_set() or (deadline is not None and clock() >= deadline) or sent.total() == count:
                return
            sent[event["label"]] += 1
            yield event

    send_records(config, events(), topic=topic, rate=rate, client="generate")
    return sent


def run_generate(*, config_path: str | Path | None, rate: float, anomaly_rate: float, topic: str | None,
                 seconds: float | None, count: int | None, out: str | Path | None) -> int:
    """`anomon generate` (its defaults are the command line's); returns the exit status."""
    if out is not None:
        written = generate_history(out, count=TRAINING_EVENTS if count is None else count,
                                   anomaly_rate=anomaly_rate)
        print(f"wrote {written:,} events to {out}")
        return 0
    if config_path is None:
        with as_file(DEMO_CONFIG) as path:
            config = load_config(path)
    else:
        config = load_config(config_path)
    target = topic or config.kafka.input_topic
    print(f"generating {rate:g} events/s with {anomaly_rate:.1%} injected anomalies into {target} "
          f"at {config.kafka.bootstrap_servers} (Ctrl-C stops)", flush=True)
    stop = threading.Event()
    started = time.monotonic()
    with stop_on_signals(stop.set):
        sent = generate_live(config, rate=rate, anomaly_rate=anomaly_rate, topic=target, seconds=seconds,
                             count=count, stop=stop)
    total = sum(sent.values())
    print(f"generated {total:,} events ({total - sent[NORMAL]:,} injected anomalies) into {target} "
          f"in {time.monotonic() - started:.1f} s")
    return 0
