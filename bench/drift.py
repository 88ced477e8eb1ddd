"""Drift detection: false alarms on stationary seasonal traffic, and detection delays after shifts.

Prints, from one run, with the demo's model (a week of synthetic history, ``demo.yaml``):

1. the drift events raised by a monitor on ``--events`` (default 1,000,000) events of stationary
   seasonal traffic from the same site (about 70 simulated days at 600 events/hour, each day from
   0.2x to 1.8x the mean volume), streamed through the embedded broker into a real monitor
   (``--offline``: fed straight to the drift observer, without Kafka);
2. per detector (ADWIN, KSWIN, PageHinkley, River's defaults) and per injected shift, the events
   from the shift to the first drift event naming the shifted field, and the drift events raised
   before the shift (false alarms), feeding the drift observer directly in batches of 500.

Shifts, from event 30,000 of 80,000: ``latency +2 sd`` (latency_ms up by two standard
deviations of its encoded, log-scaled value), ``latency +0.5 sd``, ``new country`` (60% of events
from a country never seen), ``attack wave`` (a fifth of the events anomalies: the score level).
Figures only, no pass/fail.

    python bench/drift.py [--events 1000000] [--offline] [--shift-events 80000]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

from monitor.broker import EmbeddedBroker  # noqa: E402
from monitor.drift import DriftObserver  # noqa: E402
from monitor.metrics import MonitorMetrics  # noqa: E402
from monitor.pipeline import BatchResult  # noqa: E402
from monitor.resources import demo_config_mapping  # noqa: E402
from monitor.service import Monitor  # noqa: E402
from monitor.traffic import HISTORY_START, SITE_SEED, TrafficGenerator, week_of_history  # noqa: E402
from trainer.bundle import Bundle  # noqa: E402
from trainer.config import Config, config_from_dict  # noqa: E402
from trainer.fit import fit  # noqa: E402

LIVE_START = HISTORY_START + timedelta(weeks=4)
SHIFT = 30_000
BATCH = 500


def live(anomaly_rate: float = 0.0) -> Iterator[dict[str, Any]]:
    return TrafficGenerator(seed=SITE_SEED, anomaly_rate=anomaly_rate, start=LIVE_START, events_per_hour=600).stream()


def observe(config: Config, bundle: Bundle, events: Iterator[dict[str, Any]], n: int,
            shift: Callable[[list[dict[str, Any]], int], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Feed `n` events to a drift observer in batches; returns its drift events, each with the event count then."""
    detections: list[dict[str, Any]] = []
    metrics = MonitorMetrics(build_version="bench")
    observer = DriftObserver(config, bundle, emit=detections.append, metrics=metrics)
    seen = 0
    while seen < n:
        batch = list(itertools.islice(events, min(BATCH, n - seen)))
        if shift is not None:
            batch = shift(batch, seen)
        scored = bundle.score(batch, strict=True)
        valid = scored.valid
        before = len(detections)
        seen += len(batch)
        observer.on_batch(BatchResult(scores=scored.scores[valid], bundle=bundle, encoded=scored.inputs[valid],
                                      size=len(batch)))
        for detection in detections[before:]:
            detection["at"] = seen
    return detections


def stationary_through_kafka(config_raw: dict[str, Any], bundle: Bundle, n: int) -> tuple[int, float]:
    """Drift events of a real monitor over `n` stationary events through the embedded broker; and events/s."""
    with EmbeddedBroker() as broker:
        raw = {**config_raw, "kafka": {**config_raw["kafka"], "bootstrap_servers": broker.bootstrap_servers,
                                       "partitions": 1}, "metrics": {"port": 0}}
        config = config_from_dict(raw, environ={})
        monitor = Monitor(config, bundle)
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        started = time.perf_counter()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=20, batch_size=1 << 18,
                                 compression_type="lz4" if _has_lz4() else None)
        for event in itertools.islice(live(), n):
            producer.send(config.kafka.input_topic, orjson.dumps(event))
        producer.flush()
        producer.close()
        while monitor.totals["events"] < n:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        monitor.stop()
        thread.join()
        return len(monitor.drift.detections), n / elapsed


def _has_lz4() -> bool:
    try:
        import lz4  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="stationary events (default 1,000,000)")
    parser.add_argument("--offline", action="store_true", help="feed the drift observer directly, without Kafka")
    parser.add_argument("--shift-events", type=int, default=80_000, help="events per shift run (default 80,000)")
    args = parser.parse_args()

    raw = demo_config_mapping()
    config = config_from_dict(raw, environ={})
    started = time.perf_counter()
    bundle = fit(week_of_history(40_000), config, verbose=False)
    print(f"model: demo config, 40,000 events of history, trained in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    if args.offline:
        count = len(observe(config, bundle, live(), args.events))
        rate = args.events / (time.perf_counter() - started)
        how = "drift observer fed directly"
    else:
        count, rate = stationary_through_kafka(raw, bundle, args.events)
        how = "embedded broker + monitor"
    days = args.events / 600 / 24
    print(f"stationary seasonal traffic: {args.events:,} events (~{days:.0f} simulated days, {how}, "
          f"{rate:,.0f} events/s): {count} drift events")

    encoder = bundle.encoder.encoder_for("latency_ms")
    column = next(b.start for b in bundle.encoder.blocks if b.field == "latency_ms")
    std = float(bundle.encoder.transform(list(itertools.islice(live(), SHIFT))).X[:, column].std())
    rng = random.Random(0)

    def latency(sds: float) -> Callable:
        factor = math.exp(sds * std * encoder.scale_)
        return lambda batch, seen: [{**e, "latency_ms": round(e["latency_ms"] * factor, 1)} if seen + i >= SHIFT
                                    else e for i, e in enumerate(batch)]

    def country(batch: list[dict[str, Any]], seen: int) -> list[dict[str, Any]]:
        return [{**e, "country": "ZZ"} if seen + i >= SHIFT and rng.random() < 0.6 else e for i, e in enumerate(batch)]

    shifts = {"latency +2 sd": ("latency_ms", latency(2.0), None), "latency +0.5 sd": ("latency_ms", latency(0.5), None),
              "new country": ("country", country, None), "attack wave": ("_score", None, 0.2)}
    print(f"\ndetection delay: events from the shift (at event {SHIFT:,}) to the first drift event naming the field; "
          f"drift events before the shift in brackets")
    print(f"{'detector':<14}" + "".join(f"{name:>20}" for name in shifts))
    for detector in ("adwin", "kswin", "page_hinkley"):
        cfg = config_from_dict({**raw, "drift": {"detector": detector}}, environ={})
        cells = []
        for field, mutate, wave in shifts.values():
            if wave is None:
                events = live()
            else:  # the first SHIFT events normal, then the same stream with anomalies injected
                events = itertools.chain(itertools.islice(live(), SHIFT), itertools.islice(live(wave), SHIFT, None))
            found = observe(cfg, bundle, events, args.shift_events, mutate)
            early = sum(d["at"] <= SHIFT for d in found)
            hit = next((d["at"] - SHIFT for d in found if d["at"] > SHIFT and d["field"] == field), None)
            cells.append(f"{'missed' if hit is None else f'{hit:,}'} [{early}]")
        print(f"{detector:<14}" + "".join(f"{c:>20}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
