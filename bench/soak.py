"""Soak: `anomon monitor` for 5 minutes at a steady rate; prints its RSS and open file descriptors.

The monitor runs as its own process on the embedded broker with the demo's model, fed synthetic
web traffic at ``--rate`` events/s in which every event has a user never seen before (so that
any per-key state would grow with the run), for ``--seconds``.  Every ``--sample-s`` it prints the
process's resident memory, open file descriptors and threads, and what it has scored (from its
metrics endpoint).  At the end: the spread of RSS and descriptors after ``--warmup-s``, as the
ratio of the largest sample to the first one after warm-up (flat means within 1.10).  Figures
only, no pass/fail.

    python bench/soak.py [--seconds 300] [--rate 1000] [--warmup-s 60] [--sample-s 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitor_throughput import fresh_topics, scored_count, start_monitor, stop, train  # noqa: E402

from monitor.broker import EmbeddedBroker  # noqa: E402
from monitor.traffic import TrafficGenerator  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="anomon-soak-") as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        model = train(workdir)
        topics, config_path, metrics_url = fresh_topics(workdir, broker.bootstrap_servers)
        monitor = start_monitor(config_path, model)
        try:
            while scored_count(metrics_url) == 0 and monitor.poll() is None:  # up, joined, scoring
                send_some(broker.bootstrap_servers, topics["input_topic"])
                time.sleep(0.5)
            samples = soak(monitor.pid, broker.bootstrap_servers, topics["input_topic"], metrics_url, args)
        finally:
            stop(monitor)
    report(samples, args)


def send_some(servers: str, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=servers)
    producer.send(topic, json.dumps({"user": "warm-up", "country": "US"}).encode())
    producer.flush()
    producer.close()


def soak(pid: int, servers: str, topic: str, metrics_url: str, args: argparse.Namespace) -> list[dict[str, float]]:
    """Stream at the rate for the duration, sampling the monitor process; returns the samples."""
    stopping = threading.Event()
    sent = [0]
    sender = threading.Thread(target=stream, args=(servers, topic, args.rate, stopping, sent), daemon=True)
    started = time.monotonic()
    sender.start()
    samples = []
    print(f"{'t (s)':>6} {'sent':>9} {'processed':>9} {'RSS (MB)':>9} {'fds':>5} {'threads':>7}", flush=True)
    try:
        while (elapsed := time.monotonic() - started) < args.seconds:
            time.sleep(min(args.sample_s, max(0.0, args.seconds - elapsed)))
            # /proc first: a metrics scrape runs in a thread of its own and holds a socket meanwhile.
            sample = {"t": time.monotonic() - started, "sent": sent[0], **process_sample(pid)}
            sample["scored"] = scored_count(metrics_url)
            samples.append(sample)
            print(f"{sample['t']:6.0f} {sample['sent']:9.0f} {sample['scored']:9.0f} {sample['rss_mb']:9.1f} "
                  f"{sample['fds']:5.0f} {sample['threads']:7.0f}", flush=True)
    finally:
        stopping.set()
        sender.join(timeout=30)
    return samples


def stream(servers: str, topic: str, rate: float, stopping: threading.Event, sent: list[int]) -> None:
    """`rate` events/s in 50 ms ticks, every one from a new user."""
    generator = TrafficGenerator(seed=3, anomaly_rate=0.01, start=datetime.now(timezone.utc),
                                 events_per_hour=rate * 3600)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    tick, per_tick, n = 0.05, rate * 0.05, 0
    next_tick, owed = time.monotonic(), 0.0
    try:
        while not stopping.is_set():
            owed += per_tick
            events = generator.generate(int(owed))
            owed -= len(events)
            for event in events:
                event["user"] = f"user-{n}"  # a key never seen before
                producer.send(topic, json.dumps(event).encode(), key=event["user"].encode())
                n += 1
            sent[0] = n
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
        producer.flush(timeout=30)
    finally:
        producer.close()


def process_sample(pid: int) -> dict[str, float]:
    """Resident memory (MB), open file descriptors and threads of process `pid`, from /proc."""
    with open(f"/proc/{pid}/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return {"rss_mb": rss_pages * PAGE / 1e6, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


def report(samples: list[dict[str, float]], args: argparse.Namespace) -> None:
    after = [s for s in samples if s["t"] >= args.warmup_s] or samples[-1:]
    if not after:
        print("soak: no sample taken")
        return
    scored = samples[-1]["scored"]
    print(f"soak: {samples[-1]['t']:.0f} s at {args.rate:.0f} events/s, {samples[-1]['sent']:.0f} sent, "
          f"{scored:.0f} processed, every event from a new user")
    for key, name in (("rss_mb", "RSS (MB)"), ("fds", "open fds"), ("threads", "threads")):
        values = [s[key] for s in after]
        ratio = max(values) / values[0] if values[0] else float("nan")
        print(f"soak: {name} after {args.warmup_s:.0f} s warm-up: first {values[0]:.1f}, min {min(values):.1f}, "
              f"max {max(values):.1f}, last {values[-1]:.1f}; max/first {ratio:.3f} "
              f"({'flat within 10%' if ratio <= 1.10 else 'GREW more than 10%'})")


if __name__ == "__main__":
    main()
