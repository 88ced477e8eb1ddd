"""Retraining's calibration: false-alarm rates of a retrained model, held-out split against cross-fitting.

A retraining window is small (``retrain.min_records``, 20,000 by default; the demo's 10,000). For
each of ``--windows`` windows of the demo's traffic after its scripted shift (every request 4x
slower), trains the demo's model on ``--records`` events twice: calibrated on a 10% held-out split
(``model.cross_fit_below`` 1,000, as ``anomon train``), and on out-of-fold scores of every record
(``retrain.cross_fit_below``, as ``anomon retrain``).  Prints each version's false-alarm rate on the
next 50,000 normal events of the same traffic beside the target (``threshold.target_rate``), and
the training times.  Figures only, no pass/fail.

    python bench/retrain_calibration.py [--windows 6] [--records 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from monitor.demo import demo_config, scripted_shift  # noqa: E402
from monitor.retrain import retraining_config  # noqa: E402
from monitor.traffic import TrafficGenerator  # noqa: E402
from trainer.fit import fit  # noqa: E402

TEST_EVENTS = 50_000
RATE = 500  # events/s, the demo's: a window spans seconds of one hour of the day


def shifted_traffic(seed: int, n: int) -> list[dict]:
    events = TrafficGenerator(seed=seed, anomaly_rate=0.0, start=datetime(2026, 12, 3, 15, tzinfo=timezone.utc),
                              events_per_hour=RATE * 3600).generate(n)
    return [scripted_shift(event) for event in events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--records", type=int, default=10_000, help="events per retraining window")
    args = parser.parse_args()
    held_out = demo_config("127.0.0.1:9092")
    configs = {"held-out split": held_out, "cross-fitted": retraining_config(held_out)}
    target = held_out.threshold.target_rate
    rates: dict[str, list[float]] = {name: [] for name in configs}
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    print(f"{args.windows} windows of {args.records:,} events, false alarms on the next {TEST_EVENTS:,} "
          f"(target {target:.2%})")
    for window in range(args.windows):
        events = shifted_traffic(100 + window, args.records + TEST_EVENTS)
        train, test = events[: args.records], events[args.records :]
        line = []
        for name, config in configs.items():
            bundle = fit(train, config, verbose=False)
            rates[name].append(float(np.mean(bundle.score(test).scores >= bundle.threshold.value)))
            seconds[name].append(bundle.training["seconds"])
            line.append(f"{name} {rates[name][-1]:.3%} ({bundle.training['calibration']}, {seconds[name][-1]:.1f} s)")
        print(f"window {window}: " + "; ".join(line), flush=True)
    for name in configs:
        print(f"{name:15s} false-alarm rate mean {statistics.mean(rates[name]):.3%}, "
              f"{min(rates[name]):.3%}-{max(rates[name]):.3%}; training {statistics.mean(seconds[name]):.1f} s")


if __name__ == "__main__":
    main()
