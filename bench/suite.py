"""`make bench`: every performance figure of anomon beside a baseline measured in the same run.

1. Score path (bytes → decode → encode → score → alert decision → alerts, `bench/score_path.py`)
   at 1% and 20% alert rates, against River ``MinMaxScaler | HalfSpaceTrees`` on the same events.
   Targets: ≥ 5× River at 1%; the 20% rate ≥ half the 1% rate.
2. Monitor end to end (``anomon monitor`` as its own process, through the embedded broker) over
   the score path's 1% stream, for each transport (``kafka.client``), against a bare kafka-python
   poll + ``json.loads`` loop over the same topic (`bench/monitor_throughput.py`).  Targets: ≥ 0.8×
   the bare loop for each transport; confluent ≥ 0.8× the score path and ≥ 1.3× kafka-python.
   Each is the best of ``--repeats`` runs, in events/s and in events per CPU second of the
   consuming process: on a shared machine the wall clock also measures the neighbours, CPU time
   much less (the score path is measured in CPU time too).
3. Latency produce → alert received, p50/p99 at 1k and 5k events/s (batching producer,
   ``linger_ms=5``), for each transport, beside a bare kafka-python relay on the same broker.
   Target: p99 ≤ 50 ms where the relay meets it.
4. Training: NSL-KDD through schema infer → fit (`bench/quality.py`'s protocol), seconds and
   records/s, with ROC-AUC beside IsolationForest and HalfSpaceTrees on the same split.
5. Memory: the monitor's RSS after 100k and after 1M events.  Target: flat within 10%.
6. Training memory: ``anomon train``'s peak RSS and time on 1M events beside 100k
   (`bench/train_memory.py`, 3 epochs).  Target: under 2 GB.

Prints one table (figure, baseline, ratio, target, met) and writes every figure to
``bench/results.json``.  About 8 minutes on 2 cores.

    .venv/bin/python bench/suite.py [--events 200000] [--repeats 3] [--latency-seconds 10]
        [--latency-rates 1000 5000] [--memory-events 1000000] [--train-memory-events 1000000]
        [--skip-training] [--out bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from kafka import KafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import monitor_throughput as mt  # noqa: E402
import score_path  # noqa: E402
import train_memory  # noqa: E402

from monitor.broker import EmbeddedBroker  # noqa: E402
from monitor.transport import CLIENTS  # noqa: E402
from trainer.config import load_config  # noqa: E402

LATENCY_RATES = [1000.0, 5000.0]
LINGER_MS = 5
MEMORY_FIRST = 100_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per end-to-end run")
    parser.add_argument("--score-events", type=int, default=100_000, help="events per score path stream")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs per transport (median)")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-rates", type=float, nargs="+", default=LATENCY_RATES, help="events/s")
    parser.add_argument("--memory-events", type=int, default=1_000_000)
    parser.add_argument("--train-memory-events", type=int, default=1_000_000)
    parser.add_argument("--skip-training", action="store_true",
                        help="leave out the training figures (NSL-KDD, training memory)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="anomon-bench-") as workdir, EmbeddedBroker() as broker:
        workdir = Path(workdir)
        bundle = score_path.demo_bundle(workdir / "model")
        batch_size = load_config(mt.DEMO_CONFIG).monitor.max_batch_records
        step("score path", lambda: results.update(score_path=score_path.measure(
            bundle, events=args.score_events, river_events=20_000, rates=[0.01, 0.2], batch_size=batch_size)))
        values = score_path.stream(bundle, args.events, 0.01)
        step("end to end", lambda: results.update(end_to_end=end_to_end(
            broker, workdir, bundle.path, values, args.repeats, results["score_path"])))
        step("latency", lambda: results.update(latency=latency(broker, workdir, bundle.path, args.latency_rates,
                                                               args.latency_seconds)))
        step("memory", lambda: results.update(memory=memory(broker, workdir, bundle.path, values, args.memory_events)))
    if not args.skip_training:
        step("training", lambda: results.update(training=training()))
        step("training memory", lambda: results.update(training_memory=train_memory.measure(
            args.train_memory_events, args.train_memory_events // 10)))
    results["seconds"] = round(time.perf_counter() - started, 1)
    rows = table(results)
    results["table"] = [dict(zip(("what", "figure", "baseline", "ratio", "target", "met"), row)) for row in rows]
    print_table(rows)
    print(f"\n{results['seconds']:.0f} s; figures in {args.out}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def step(name: str, run: Callable[[], None]) -> None:
    started = time.perf_counter()
    print(f"{name} ...", flush=True)
    run()
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


# -- 2. end to end ------------------------------------------------------------------


def end_to_end(broker: EmbeddedBroker, workdir: Path, model: Path, values: list[bytes], repeats: int,
               scored: dict[str, Any]) -> dict[str, Any]:
    """Per repeat and transport: a fresh topic, the bare loop over it, then the monitor over it.

    Each figure is the best of the repeats (on a shared machine the others measure the neighbours),
    in events/s of wall-clock time and in events per CPU second of the consuming process.
    """
    servers = broker.bootstrap_servers
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CLIENTS}
    for _ in range(repeats):
        for name in CLIENTS:
            topics, config_path, metrics_url = mt.fresh_topics(workdir, servers, name)
            mt.produce_all(servers, topics["input_topic"], values)
            bare = mt.bare_loop(servers, topics["input_topic"], len(values))
            monitor = mt.start_monitor(config_path, model)
            try:
                ours = mt.monitor_rate(metrics_url, len(values), monitor)
            finally:
                mt.stop(monitor)
            delete_topics(servers, topics.values())
            runs[name].append({"bare_events_per_s": round(bare.events_per_s),
                               "bare_events_per_cpu_s": round(1 / bare.cpu_per_event),
                               "monitor_events_per_s": round(ours.events_per_s),
                               "monitor_events_per_cpu_s": round(1 / ours.cpu_per_event)})
            print(f"  {name}: monitor {ours.events_per_s:7.0f} events/s ({1 / ours.cpu_per_event:7.0f} per CPU s), "
                  f"bare kafka-python loop {bare.events_per_s:7.0f} ({1 / bare.cpu_per_event:7.0f})", flush=True)
    result: dict[str, Any] = {"events": len(values), "repeats": repeats}
    for name in CLIENTS:
        best = {key: max(run[key] for run in runs[name]) for key in runs[name][0]}
        result[name] = {"runs": runs[name], **best,
                        "ratio": round(best["monitor_events_per_s"] / best["bare_events_per_s"], 3),
                        "ratio_cpu": round(best["monitor_events_per_cpu_s"] / best["bare_events_per_cpu_s"], 3)}
    score_rate = scored["rates"]["0.01"]["events_per_s"]  # per CPU second
    confluent, kafka_python = result["confluent"], result["kafka-python"]
    result["confluent_vs_score_path_cpu"] = round(confluent["monitor_events_per_cpu_s"] / score_rate, 3)
    result["confluent_vs_kafka_python"] = round(confluent["monitor_events_per_s"] / kafka_python["monitor_events_per_s"], 3)
    result["confluent_vs_kafka_python_cpu"] = round(
        confluent["monitor_events_per_cpu_s"] / kafka_python["monitor_events_per_cpu_s"], 3)
    return result


def delete_topics(servers: str, topics: Any) -> None:
    """The embedded broker keeps every record in memory: drop a run's topics once it is measured."""
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.delete_topics(list(topics))
    finally:
        admin.close()


# -- 3. latency ---------------------------------------------------------------------


def latency(broker: EmbeddedBroker, workdir: Path, model: Path, rates: list[float], seconds: float) -> dict[str, Any]:
    """p50/p99 produce → alert received per rate: the bare relay, then the monitor on each transport."""
    servers = broker.bootstrap_servers
    result: dict[str, Any] = {"seconds": seconds, "linger_ms": LINGER_MS, "rates": rates}
    for rate in rates:
        figures: dict[str, Any] = {}
        topics, _, _ = mt.fresh_topics(workdir, servers)
        with mt.bare_relay(servers, topics):
            figures["bare relay"] = percentiles(mt.latency_run(servers, topics, rate, seconds, LINGER_MS))
        delete_topics(servers, topics.values())
        for name in CLIENTS:
            topics, config_path, metrics_url = mt.fresh_topics(workdir, servers, name)
            monitor = mt.start_monitor(config_path, model)
            try:
                mt.produce_all(servers, topics["input_topic"], [b"{}"])
                mt.monitor_rate(metrics_url, 1, monitor)  # joined its group and scoring
                figures[name] = percentiles(mt.latency_run(servers, topics, rate, seconds, LINGER_MS))
            finally:
                mt.stop(monitor)
            delete_topics(servers, topics.values())
        for who, f in figures.items():
            print(f"  {rate:.0f} events/s {who}: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms ({f['alerts']} alerts)",
                  flush=True)
        result[f"{rate:.0f}"] = figures
    return result


def percentiles(latencies: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(latencies[:, 0], [50, 99]) * 1000
    return {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1), "alerts": len(latencies)}


# -- 5. memory ----------------------------------------------------------------------


def memory(broker: EmbeddedBroker, workdir: Path, model: Path, values: list[bytes], events: int) -> dict[str, Any]:
    """RSS of a kafka-python monitor once it has processed 100k events, and once it has processed `events`."""
    servers = broker.bootstrap_servers
    topics, config_path, metrics_url = mt.fresh_topics(workdir, servers)
    mt.produce_all(servers, topics["input_topic"], (values[i % len(values)] for i in range(events)))
    monitor = mt.start_monitor(config_path, model)
    try:
        first = rss_at(metrics_url, monitor, min(MEMORY_FIRST, events))
        last = rss_at(metrics_url, monitor, events)
    finally:
        mt.stop(monitor)
    delete_topics(servers, topics.values())
    return {"events": events, "rss_first_mb": round(first, 1), "rss_last_mb": round(last, 1),
            "first_events": min(MEMORY_FIRST, events), "ratio": round(last / first, 3)}


def rss_at(metrics_url: str, monitor: Any, count: int, timeout_s: float = 300) -> float:
    """The monitor's RSS in MB as soon as it has processed `count` events."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and monitor.poll() is None:
        if mt.scored_count(metrics_url) >= count:
            return rss_mb(monitor.pid)
        time.sleep(0.05)
    raise SystemExit(f"the monitor did not process {count} events (exit code {monitor.poll()})")


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (Linux: VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# -- 4. training --------------------------------------------------------------------


def training() -> dict[str, Any]:
    """NSL-KDD as bench/quality.py runs it: anomon (schema infer → fit), IsolationForest, HalfSpaceTrees."""
    import quality

    split = quality.nsl_kdd_split()
    row = quality.run_set(split, seeds=1)
    a = row["anomon"]
    return {"records": row["n_train"], "fit_seconds": a["fit_seconds"],
            "records_per_s": round(row["n_train"] / a["fit_seconds"]),
            "roc_auc": round(a["roc_auc"], 4), "pr_auc": round(a["pr_auc"], 4),
            "iforest": {k: round(v, 4) for k, v in row["iforest"].items()},
            "hst": {k: round(v, 4) for k, v in row["hst"].items()}}


# -- the table ----------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(what, figure, baseline, ratio, target, met) per figure."""
    rows = []
    sp = results["score_path"]
    low, high = sp["rates"]["0.01"], sp["rates"]["0.2"]
    river = sp["river_events_per_s"]
    rows.append(("score path, 1% alerts", f"{low['events_per_s']:,} ev/s", f"River HST {river:,} ev/s",
                 f"{sp['ratio_vs_river']:.2f}x", ">= 5x", _met(sp["ratio_vs_river"] >= 5)))
    rows.append(("score path, 20% alerts", f"{high['events_per_s']:,} ev/s", f"1% rate {low['events_per_s']:,} ev/s",
                 f"{sp['ratio_high_vs_low']:.2f}x", ">= 0.5x", _met(sp["ratio_high_vs_low"] >= 0.5)))
    e2e = results["end_to_end"]
    for name in CLIENTS:
        f = e2e[name]
        rows.append((f"monitor end to end, {name}",
                     f"{f['monitor_events_per_s']:,} ev/s ({f['monitor_events_per_cpu_s']:,}/CPU s)",
                     f"bare kafka-python {f['bare_events_per_s']:,} ev/s ({f['bare_events_per_cpu_s']:,}/CPU s)",
                     f"{f['ratio']:.2f}x ({f['ratio_cpu']:.2f}x CPU)", ">= 0.8x",
                     _met(f["ratio"] >= 0.8, f["ratio_cpu"] >= 0.8)))
    confluent, kafka_python = e2e["confluent"], e2e["kafka-python"]
    rows.append(("monitor end to end, confluent", f"{confluent['monitor_events_per_cpu_s']:,}/CPU s",
                 f"score path 1% {low['events_per_s']:,}/CPU s", f"{e2e['confluent_vs_score_path_cpu']:.2f}x CPU",
                 ">= 0.8x", _met(e2e["confluent_vs_score_path_cpu"] >= 0.8)))
    rows.append(("monitor end to end, confluent",
                 f"{confluent['monitor_events_per_s']:,} ev/s ({confluent['monitor_events_per_cpu_s']:,}/CPU s)",
                 f"kafka-python monitor {kafka_python['monitor_events_per_s']:,} ev/s "
                 f"({kafka_python['monitor_events_per_cpu_s']:,}/CPU s)",
                 f"{e2e['confluent_vs_kafka_python']:.2f}x ({e2e['confluent_vs_kafka_python_cpu']:.2f}x CPU)", ">= 1.3x",
                 _met(e2e["confluent_vs_kafka_python"] >= 1.3, e2e["confluent_vs_kafka_python_cpu"] >= 1.3)))
    lat = results["latency"]
    for rate in lat["rates"]:
        figures = lat[f"{rate:.0f}"]
        relay = figures["bare relay"]
        for name in CLIENTS:
            f = figures[name]
            target_applies = relay["p99_ms"] <= 50
            rows.append((f"produce→alert p50/p99 at {rate / 1000:.0f}k ev/s, {name}",
                         f"{f['p50_ms']:.1f} / {f['p99_ms']:.1f} ms",
                         f"bare relay {relay['p50_ms']:.1f} / {relay['p99_ms']:.1f} ms",
                         f"{f['p99_ms'] / relay['p99_ms']:.2f}x p99",
                         "p99 <= 50 ms" if target_applies else "(relay > 50 ms)",
                         _met(f["p99_ms"] <= 50) if target_applies else "n/a"))
    if "training" in results:
        t = results["training"]
        best = max(t["iforest"]["roc_auc"], t["hst"]["roc_auc"])
        rows.append(("NSL-KDD training", f"{t['fit_seconds']:.1f} s, {t['records_per_s']:,} rec/s",
                     f"{t['records']:,} records", "", "", ""))
        rows.append(("NSL-KDD ROC-AUC", f"{t['roc_auc']:.3f}",
                     f"IForest {t['iforest']['roc_auc']:.3f}, HST {t['hst']['roc_auc']:.3f}",
                     f"{t['roc_auc'] / best:.3f}x", "", ""))
    if "training_memory" in results:
        t = results["training_memory"]
        window, baseline = t["window"], t["baseline"]
        rows.append((f"anomon train peak RSS, {window['events'] / 1e6:g}M events",
                     f"{window['peak_rss_mb']:,.0f} MB, {window['seconds']:.0f} s",
                     f"{baseline['events'] / 1e3:.0f}k: {baseline['peak_rss_mb']:,.0f} MB, {baseline['seconds']:.0f} s",
                     f"{t['rss_ratio']:.2f}x", f"< {t['target_mb']:,} MB", _met(t["met"])))
    m = results["memory"]
    rows.append((f"monitor RSS after {m['events'] / 1e6:g}M events", f"{m['rss_last_mb']:.0f} MB",
                 f"after {m['first_events'] / 1e3:.0f}k: {m['rss_first_mb']:.0f} MB", f"{m['ratio']:.3f}x",
                 "<= 1.1x", _met(m["ratio"] <= 1.1)))
    return rows


def _met(*ok: bool) -> str:
    """"yes" or "NO" per figure: wall clock, then CPU where both are given."""
    return "/".join("yes" if o else "NO" for o in ok)


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("what", "figure", "baseline (same run)", "ratio", "target", "met")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    print("\n" + line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    raise SystemExit(main())
