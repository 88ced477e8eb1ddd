"""Training in bounded memory: peak RSS and wall time of ``anomon train`` on 1,000,000 events.

Writes ``--events`` (default 1,000,000) events of the demo's synthetic traffic (`monitor.traffic`,
about a week at the site's volume) to a temporary JSON Lines file, then runs ``anomon train`` on
it with the demo's config in a subprocess, and prints the subprocess's peak RSS and wall time
beside the same training on ``--baseline-events`` (default 100,000) measured in the same run.
``model.epochs`` is set to ``--epochs`` (default 3) so that the run takes minutes: an epoch's
memory does not depend on how many follow.  Target: peak RSS under 2 GB; prints PASS or FAIL.

    python bench/train_memory.py [--events 1000000] [--baseline-events 100000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import yaml  # noqa: E402

from monitor.resources import demo_config_mapping  # noqa: E402
from monitor.traffic import HISTORY_START, SITE_SEED, TrafficGenerator  # noqa: E402

TARGET_MB = 2048


def write_events(path: Path, n: int) -> None:
    """`n` events over a week, streamed to `path` (never held as a list)."""
    stream = TrafficGenerator(seed=SITE_SEED, start=HISTORY_START, events_per_hour=n / (7 * 24)).stream()
    with open(path, "wb") as out:
        for event in islice(stream, n):
            out.write(orjson.dumps(event) + b"\n")


def train(config: Path, data: Path, out: Path) -> dict[str, float]:
    """Run ``anomon train`` in a subprocess: its peak RSS (MB) and wall time (s)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "monitor.cli", "train", "--config", str(config),
                                "--data", str(data), "--out", str(out), "--quiet"], cwd=ROOT,
                               stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own figures, not the largest child's
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"anomon train failed with status {process.returncode}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(time.perf_counter() - started, 1)}


def measure(events: int = 1_000_000, baseline_events: int = 100_000, epochs: int = 3) -> dict[str, Any]:
    """Peak RSS and time of training on `events` and on `baseline_events`."""
    with tempfile.TemporaryDirectory(prefix="anomon-train-memory-") as workdir:
        workdir = Path(workdir)
        raw = demo_config_mapping()
        raw["model"] = {**raw.get("model", {}), "epochs": epochs}
        config = workdir / "anomon.yaml"
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        figures: dict[str, Any] = {"epochs": epochs}
        for name, n in (("baseline", baseline_events), ("window", events)):
            data = workdir / f"{name}.jsonl"
            write_events(data, n)
            figures[name] = {"events": n, **train(config, data, workdir / name)}
            data.unlink()
    window, baseline = figures["window"], figures["baseline"]
    figures["rss_ratio"] = round(window["peak_rss_mb"] / baseline["peak_rss_mb"], 2)
    figures["time_ratio"] = round(window["seconds"] / baseline["seconds"], 2)
    figures["target_mb"] = TARGET_MB
    figures["met"] = window["peak_rss_mb"] < TARGET_MB
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline-events", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3, help="model.epochs (default 3)")
    args = parser.parse_args(argv)
    f = measure(args.events, args.baseline_events, args.epochs)
    for name in ("baseline", "window"):
        print(f"anomon train, {f[name]['events']:,} events, {f['epochs']} epochs: peak RSS "
              f"{f[name]['peak_rss_mb']:,.0f} MB, {f[name]['seconds']:.1f} s")
    print(f"ratio {f['window']['events'] / f['baseline']['events']:g}x the events: {f['rss_ratio']:.2f}x the peak RSS, "
          f"{f['time_ratio']:.2f}x the time")
    print(f"{'PASS' if f['met'] else 'FAIL'}: peak RSS {f['window']['peak_rss_mb']:,.0f} MB, target < {TARGET_MB:,} MB")
    return 0 if f["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
