"""The monitor's score path, without Kafka: bytes → decode → encode → score → alert decision → alerts.

`BatchScorer.process` runs over the same stream of encoded demo events (``Record`` messages in
batches of ``monitor.max_batch_records``) at two alert rates, 1% (a normal day) and 20% (an
incident), with the demo's model.  The stream is built from scored events so that exactly that
share of it alerts.  The baseline, in the same process: River ``MinMaxScaler() | HalfSpaceTrees()``
(``score_one`` then ``learn_one``, as a streaming detector runs) on the same events, already
decoded and turned into River's feature dicts (numbers and booleans as they are, one "field=value"
feature per categorical value), so River's figure leaves out the decoding anomon's includes.
Rates are per CPU second of this process (see `best_rate`).

    .venv/bin/python bench/score_path.py [--events 100000] [--river-events 20000] [--rates 0.01 0.2]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.pipeline import BatchScorer  # noqa: E402
from monitor.traffic import TrafficGenerator, week_of_history  # noqa: E402
from monitor.transport import Record  # noqa: E402
from trainer.bundle import Bundle  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.fit import fit, single_thread  # noqa: E402

TRAINING_EVENTS = 40_000
POOL_EVENTS = 60_000


def demo_bundle(directory: Path) -> Bundle:
    """The demo's model (its config, a week of traffic), saved under `directory`."""
    from monitor.demo import DEMO_CONFIG

    bundle = fit(week_of_history(TRAINING_EVENTS), load_config(DEMO_CONFIG), verbose=False)
    bundle.save(directory)
    return Bundle.load(directory)


def stream(bundle: Bundle, n: int, alert_rate: float, seed: int = 0) -> list[bytes]:
    """`n` encoded live events of which exactly ``round(alert_rate * n)`` score at or above the threshold.

    Drawn (with replacement, in a random order) from a pool of live traffic with 5% injected anomalies.
    """
    pool = TrafficGenerator(seed=seed, anomaly_rate=0.05).generate(POOL_EVENTS)
    scores = bundle.score(pool).scores
    alerting = [e for e, s in zip(pool, scores) if np.isfinite(s) and s >= bundle.threshold.value]
    quiet = [e for e, s in zip(pool, scores) if np.isfinite(s) and s < bundle.threshold.value]
    rng = random.Random(seed)
    n_alerts = round(alert_rate * n)
    events = rng.choices(alerting, k=n_alerts) + rng.choices(quiet, k=n - n_alerts)
    rng.shuffle(events)
    return [json.dumps(e).encode() for e in events]


def messages_of(values: list[bytes], partitions: int = 4, topic: str = "bench.events") -> list[Record]:
    now_ms = int(time.time() * 1000)
    return [Record(topic, i % partitions, i // partitions, b"user%d" % (i % 300), v, (), now_ms)
            for i, v in enumerate(values)]


def best_rate(run: Callable[[], int]) -> float:
    """Items per CPU second of one call of `run` (which returns how many it did).

    CPU time of this process, not wall time: on a shared machine wall time also measures the
    neighbours.  The score path and River are single-threaded here, so on an idle machine the two agree.
    """
    started = time.process_time()
    done = run()
    return done / (time.process_time() - started)


def score_path_rates(bundle: Bundle, streams: dict[str, list[Record]], batch_size: int,
                     repeats: int = 3) -> dict[str, dict[str, float]]:
    """Per stream: events/s of `BatchScorer.process` (best of `repeats`, the streams interleaved) and its alert share."""
    scorer = BatchScorer(bundle, key_field="user")
    results = {name: {"events_per_s": 0.0, "alert_rate": 0.0} for name in streams}
    with single_thread():  # as the monitor runs it
        for _ in range(repeats):
            for name, messages in streams.items():
                batches = [messages[i:i + batch_size] for i in range(0, len(messages), batch_size)]
                alerts = 0

                def run() -> int:
                    nonlocal alerts
                    alerts = sum(len(scorer.process(batch).alerts) for batch in batches)
                    return len(messages)

                rate = best_rate(run)
                results[name] = {"events_per_s": max(rate, results[name]["events_per_s"]),
                                 "alert_rate": alerts / len(messages)}
    return results


def river_features(event: dict[str, Any]) -> dict[str, float]:
    """Numbers and booleans as they are, one feature per categorical value; the event time left out."""
    features: dict[str, float] = {}
    for name, value in event.items():
        if name in ("event_time", "user", "label"):
            continue
        if isinstance(value, (bool, int, float)):
            features[name] = float(value)
        else:
            features[f"{name}={value}"] = 1.0
    return features


def river_rate(values: list[bytes], repeats: int = 2) -> float:
    """events/s (best of `repeats`) of River MinMaxScaler | HalfSpaceTrees, score_one then learn_one, on decoded events."""
    from river import anomaly, compose, preprocessing

    features = [river_features(json.loads(v)) for v in values]

    def run() -> int:
        model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
        for x in features:
            model.score_one(x)
            model.learn_one(x)
        return len(features)

    return max(best_rate(run) for _ in range(repeats))


def measure(bundle: Bundle, *, events: int, river_events: int, rates: list[float], batch_size: int,
            repeats: int = 3) -> dict[str, Any]:
    """Score path events/s per alert rate, River's on the first `river_events` of the first stream, and the ratios."""
    values = {f"{rate:g}": stream(bundle, events, rate) for rate in rates}
    figures = score_path_rates(bundle, {name: messages_of(v) for name, v in values.items()}, batch_size, repeats)
    results: dict[str, Any] = {"events": events, "batch_size": batch_size, "repeats": repeats,
                               "rates": {name: {"events_per_s": round(f["events_per_s"]),
                                                "alert_rate": round(f["alert_rate"], 4)} for name, f in figures.items()}}
    results["river_events"] = river_events
    results["river_events_per_s"] = round(river_rate(values[f"{rates[0]:g}"][:river_events]))
    low, high = (results["rates"][f"{r:g}"]["events_per_s"] for r in (rates[0], rates[-1]))
    results["ratio_vs_river"] = round(low / results["river_events_per_s"], 2)
    results["ratio_high_vs_low"] = round(high / low, 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--river-events", type=int, default=20_000)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from monitor.demo import DEMO_CONFIG

    batch_size = load_config(DEMO_CONFIG).monitor.max_batch_records
    with tempfile.TemporaryDirectory(prefix="anomon-score-path-") as workdir:
        bundle = demo_bundle(Path(workdir) / "model")
        results = measure(bundle, events=args.events, river_events=args.river_events, rates=args.rates,
                          batch_size=batch_size, repeats=args.repeats)
    for rate, figures in results["rates"].items():
        print(f"score path at {float(rate):.0%} alerts (measured {figures['alert_rate']:.2%}): "
              f"{figures['events_per_s']:8d} events/s")
    print(f"River MinMaxScaler | HalfSpaceTrees: {results['river_events_per_s']:8d} events/s")
    print(f"score path at {args.rates[0]:.0%} / River: {results['ratio_vs_river']:.2f}x; "
          f"at {args.rates[-1]:.0%} / at {args.rates[0]:.0%}: {results['ratio_high_vs_low']:.2f}x")


if __name__ == "__main__":
    main()
