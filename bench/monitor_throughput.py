"""Monitor throughput and latency on the embedded broker (or any Kafka with --bootstrap-servers).

Prints, from one run:

1. events/s of a bare kafka-python loop (poll + json.loads) and of `anomon monitor` (poll, decode,
   encode, score, publish, commit) over the same topic of synthetic web traffic with the demo's
   model: the ratio is the cost of everything the monitor does on top of reading (a fresh topic
   per repeat, median ratio reported);
2. produce→alert latency (p50/p99) at a fixed event rate, from the producer's send to the alert
   arriving at a consumer of the alert topic, for the monitor and for a bare kafka-python relay
   (poll + json.loads, forward the injected anomalies at once, no model, no commit) on the same
   broker: the difference is what the monitor adds.  One pair of runs per producer setting:
   ``linger_ms=5`` (the Java client's default since Kafka 4.0, and librdkafka's) and ``0`` (no
   linger, kafka-python's default).  Each runs on fresh topics: the embedded broker lists every
   stored record batch of a partition on each fetch that finds data, so its fetches slow down as
   batches pile up, about three times as fast without linger (a bare consumer of 2k single-record
   batches/s: p50 4 ms in the first 2 s, 15 ms after 8 s; Apache Kafka indexes offsets and does
   not).

The monitor runs as its own process (``anomon monitor``), as in production; its progress is
read from its metrics endpoint.  Figures only, no pass/fail.

    python bench/monitor_throughput.py [--events 200000] [--repeats 3] [--rate 2000] [--seconds 15] [--linger-ms 5 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.broker import EmbeddedBroker  # noqa: E402
from monitor.demo import DEMO_CONFIG, HISTORY_START, SITE_SEED, TRAINING_EVENTS  # noqa: E402
from monitor.traffic import TrafficGenerator  # noqa: E402
from monitor.transport import client, ensure_topics  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.fit import fit  # noqa: E402

PARTITIONS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs (bare loop, then monitor)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency run")
    parser.add_argument("--linger-ms", type=int, nargs="+", default=[5, 0],
                        help="a latency run per producer linger_ms: 5 is the default of the Java client (since "
                             "Kafka 4.0) and of librdkafka; 0 (kafka-python's default) sends at once, which loads "
                             "the embedded broker most")
    parser.add_argument("--bootstrap-servers", help="an existing Kafka (default: start the embedded broker)")
    args = parser.parse_args()

    broker = None if args.bootstrap_servers else EmbeddedBroker().start()
    servers = args.bootstrap_servers or broker.bootstrap_servers
    broker_pid = broker.pid if broker is not None else None
    workdir = Path(tempfile.mkdtemp(prefix="anomon-bench-"))
    monitor = None
    try:
        model_dir = train(workdir)
        events = TrafficGenerator(seed=SITE_SEED, anomaly_rate=0.01, start=datetime.now(timezone.utc),
                                  events_per_hour=3_600_000).generate(args.events)
        values = [json.dumps(e).encode() for e in events]
        print(f"{args.events} events per run, {np.mean([len(v) for v in values]):.0f} bytes on average, "
              f"{PARTITIONS} partitions; demo model ({model_dir})")
        ratios = []
        for run in range(1, args.repeats + 1):  # --repeats 0: the latency runs alone
            topics, config_path, metrics_url = fresh_topics(workdir, servers)
            produce_all(servers, topics["input_topic"], values)
            bare = bare_loop(servers, topics["input_topic"], len(values)).events_per_s
            monitor = start_monitor(config_path, model_dir)
            rate = monitor_rate(metrics_url, len(values), monitor).events_per_s
            stop(monitor)
            monitor = None
            if not rate:  # timed from the first scrape that counts events, so it needs several
                raise SystemExit(f"the monitor had processed all {len(values)} events when first seen: too few to "
                                 "time (raise --events)")
            ratios.append(rate / bare)
            print(f"run {run}: bare kafka-python poll + json.loads {bare:7.0f} events/s, "
                  f"anomon monitor end to end {rate:7.0f} events/s: {rate / bare:.2f}x")
        if ratios:
            print(f"monitor / bare loop, median of {args.repeats}: {statistics.median(ratios):.2f}x")
        for linger_ms in args.linger_ms:
            print(f"latency at {args.rate:.0f} events/s for {args.seconds:.0f} s, producer linger_ms={linger_ms}, "
                  "fresh topics each:")
            topics, _, _ = fresh_topics(workdir, servers)
            with bare_relay(servers, topics) as relay_pid, cpu_used(broker=broker_pid, relay=relay_pid) as cpu:
                latencies = latency_run(servers, topics, args.rate, args.seconds, linger_ms)
            report_latency("bare relay", latencies, cpu)
            topics, config_path, metrics_url = fresh_topics(workdir, servers)
            monitor = start_monitor(config_path, model_dir)
            produce_all(servers, topics["input_topic"], values[:1])
            monitor_rate(metrics_url, 1, monitor)  # joined its group and scoring
            with cpu_used(broker=broker_pid, monitor=monitor.pid) as cpu:
                latencies = latency_run(servers, topics, args.rate, args.seconds, linger_ms)
            report_latency("anomon monitor", latencies, cpu)
            stop(monitor)
            monitor = None
    finally:
        if monitor is not None:
            stop(monitor)
        if broker is not None:
            broker.stop()


def train(workdir: Path) -> Path:
    """The demo's model (examples/demo/anomon.yaml, a week of traffic), saved under `workdir`."""
    history = TrafficGenerator(seed=SITE_SEED, start=HISTORY_START,
                               events_per_hour=TRAINING_EVENTS / 168).generate(TRAINING_EVENTS)
    bundle = fit(history, load_config(DEMO_CONFIG), verbose=False)
    bundle.save(workdir / "model")
    return workdir / "model"


def fresh_topics(workdir: Path, servers: str, kafka_client: str = "kafka-python") -> tuple[dict[str, str], Path, str]:
    """Create fresh topics and write the demo config for them, a fresh group and `kafka_client`
    (``kafka.client``); returns (topics, config path, metrics URL)."""
    run, port = uuid.uuid4().hex[:8], free_port()
    topics = {"input_topic": f"bench-events-{run}", "alert_topic": f"bench-alerts-{run}",
              "dead_letter_topic": f"bench-dlq-{run}"}
    ensure_topics(servers, {name: PARTITIONS for name in topics.values()})
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["kafka"].update(bootstrap_servers=servers, group_id=f"bench-{run}", partitions=PARTITIONS, client=kafka_client,
                        **topics)
    raw["metrics"] = {"port": port}
    path = workdir / f"anomon-{run}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return topics, path, f"http://127.0.0.1:{port}/metrics"


def report_latency(name: str, latencies: np.ndarray, cpu: dict[str, float], window_s: float = 5.0) -> None:
    """p50/p99/max of both latencies, then the received one per `window_s` of the run (it drifts up
    with the embedded broker's stored batches), and the CPU the processes used meanwhile."""
    print(f"  {name}, {len(latencies)} alerts; CPU seconds during the run: "
          + ", ".join(f"{process} {seconds:.1f}" for process, seconds in cpu.items()))
    for column, what in enumerate(("produce→alert received", "produce→detected_at")):
        p50, p99 = np.percentile(latencies[:, column], [50, 99]) * 1000
        print(f"    {what:23s} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {latencies[:, column].max() * 1000:6.1f} ms")
    window = ((latencies[:, 2] - latencies[:, 2].min()) // window_s).astype(int)
    print("    received, by window:  " + "  ".join(
        f"{k * window_s:.0f}-{(k + 1) * window_s:.0f} s p50 {np.percentile(latencies[window == k, 0], 50) * 1000:.0f} / "
        f"p99 {np.percentile(latencies[window == k, 0], 99) * 1000:.0f} ms" for k in np.unique(window)))


@contextlib.contextmanager
def cpu_used(**pids: int | None) -> Iterator[dict[str, float]]:
    """CPU seconds (user + system) each named process uses inside the block, filled in at its end."""
    used: dict[str, float] = {}
    before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid is not None}
    yield used
    used.update({name: cpu_seconds(pids[name]) - seconds for name, seconds in before.items()})


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux: /proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def bare_relay(servers: str, topics: dict[str, str]) -> Iterator[int]:
    """A process forwarding the injected anomalies of the input topic to the alert topic, once in its
    group; yields its pid."""
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    relay = context.Process(target=relay_anomalies, args=(servers, topics, ready, done))
    relay.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the bare relay did not join its group")
        yield relay.pid
    finally:
        done.set()
        relay.join(30)


def relay_anomalies(servers: str, topics: dict[str, str], ready: Any, done: Any) -> None:
    """The monitor's consumer settings, json.loads, and an alert-shaped record per injected anomaly."""
    monitor = load_config(DEMO_CONFIG).monitor
    consumer = KafkaConsumer(topics["input_topic"], bootstrap_servers=servers, group_id=f"relay-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000, fetch_max_wait_ms=monitor.max_wait_ms)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=0)
    while not consumer.assignment():
        consumer.poll(timeout_ms=100)
    ready.set()
    while not done.is_set():
        for records in consumer.poll(timeout_ms=monitor.max_wait_ms, max_records=monitor.max_batch_records).values():
            for record in records:
                event = json.loads(record.value)
                if event.get("label") != "normal":
                    alert = {"detected_at": datetime.now(timezone.utc).isoformat(), "event": event}
                    producer.send(topics["alert_topic"], json.dumps(alert).encode())
    producer.close()
    consumer.close()


def start_monitor(config_path: Path, model_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monitor.cli", "monitor", "--config", str(config_path),
                             "--model", str(model_dir)], cwd=ROOT, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def produce_all(servers: str, topic: str, values: Iterable[bytes], kafka_client: str = "confluent") -> None:
    """Send `values` with the transport seam's producer of `kafka_client` (confluent: 20x kafka-python's rate)."""
    producer = client(kafka_client).producer(bootstrap_servers=servers, linger_ms=5)
    try:
        for value in values:
            producer.produce(topic, value)
        producer.flush()
    finally:
        producer.close()


class Throughput(NamedTuple):
    """events/s (wall clock) and CPU seconds per event of the consuming process, over the same span."""

    events_per_s: float
    cpu_per_event: float


def bare_loop(servers: str, topic: str, expected: int) -> Throughput:
    """poll + json.loads in this process, timed from the first record to the last."""
    consumer = KafkaConsumer(topic, bootstrap_servers=servers, group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    seen, first, started, cpu = 0, 0, None, 0.0
    try:
        while seen < expected:
            batches = consumer.poll(timeout_ms=200, max_records=500)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
            if started is None and seen:
                started, first, cpu = time.perf_counter(), seen, time.process_time()
        return Throughput((seen - first) / (time.perf_counter() - started), (time.process_time() - cpu) / (seen - first))
    finally:
        consumer.close()


def scored_count(metrics_url: str) -> float:
    try:
        body = urllib.request.urlopen(metrics_url, timeout=1).read().decode()
    except OSError:
        return 0.0
    return sum(float(v) for v in re.findall(r'^anomon_events_total\{result="\w+"\} (\S+)$', body, re.MULTILINE))


def monitor_rate(metrics_url: str, expected: int, process: subprocess.Popen, timeout_s: float = 300) -> Throughput:
    """events/s and CPU per event of the monitor process, from its first counted batch until it has processed everything."""
    deadline = time.monotonic() + timeout_s
    first, started, cpu = 0.0, None, 0.0
    while time.monotonic() < deadline and process.poll() is None:
        count = scored_count(metrics_url)
        if started is None and count:
            started, first, cpu = time.perf_counter(), count, cpu_seconds(process.pid)
        if count >= expected:
            done = count - first  # 0: everything was done by the first scrape, nothing to time
            return Throughput(done / (time.perf_counter() - started),
                              (cpu_seconds(process.pid) - cpu) / done if done else float("nan"))
        time.sleep(0.1)  # scraping costs the monitor CPU: not too often
    raise SystemExit(f"the monitor did not process {expected} events (exit code {process.poll()})")


def latency_run(servers: str, topics: dict[str, str], rate: float, seconds: float, linger_ms: int = 0) -> np.ndarray:
    """Send traffic with anomalies at `rate`; per alert, seconds from send to arrival and to detection.

    Alerts are read by a separate process, as a downstream consumer would: sharing this
    process's interpreter with the sender would add its own waits to the figures.
    """
    marker = uuid.uuid4().hex
    context = multiprocessing.get_context("spawn")  # no fork of a process running Kafka client threads
    results = context.Queue()
    ready = context.Event()
    reader = context.Process(target=read_alerts, args=(servers, topics["alert_topic"], marker, ready, results))
    reader.start()
    ready.wait(60)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=linger_ms)
    # Generated beforehand: on a small machine, generating while sending takes CPU from the monitor.
    events = TrafficGenerator(seed=SITE_SEED, anomaly_rate=0.05, start=datetime.now(timezone.utc),
                              events_per_hour=rate * 3600).generate(int(rate * seconds) + 1)
    started, sent = time.perf_counter(), 0
    try:
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:  # fixed schedule: late sends catch up, none are skipped
                event = events[sent]
                event.update(run=marker, sent_at=time.time())
                producer.send(topics["input_topic"], json.dumps(event).encode())
                sent += 1
            time.sleep(0.001)
        producer.flush()
    finally:
        producer.close()
    latencies = results.get(timeout=60)  # the reader stops 2 s after the last alert
    reader.join()
    if not latencies:
        raise SystemExit("no alert arrived during the latency run")
    return np.array(latencies)


def read_alerts(servers: str, topic: str, marker: str, ready: Any, results: Any, idle_s: float = 2.0) -> None:
    """(arrival - send, detection - send, send time) of the alerts of events marked `marker`, until idle."""
    # The embedded broker holds a fetch that finds nothing for its whole max wait (new records
    # do not end it early): a short one keeps the reader's own wait out of the figures.
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=5)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    consumer.poll(timeout_ms=100)
    ready.set()
    latencies: list[tuple[float, float]] = []
    last = time.monotonic()
    while not latencies or time.monotonic() - last < idle_s:
        for records in consumer.poll(timeout_ms=50).values():
            arrived = time.time()
            for record in records:
                alert = json.loads(record.value)
                event = alert["event"]
                if event.get("run") == marker:
                    detected = datetime.fromisoformat(alert["detected_at"]).timestamp()
                    latencies.append((arrived - event["sent_at"], detected - event["sent_at"], event["sent_at"]))
                    last = time.monotonic()
    consumer.close()
    results.put(latencies)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
