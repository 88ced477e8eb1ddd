"""`anomon demo`: the whole system on one machine, in about a minute.

It starts the embedded broker, trains a bundle on a week of synthetic web traffic
(`monitor.traffic`), starts the monitor with its metrics server, and streams live traffic with
injected anomalies (exfiltration, brute force, impossible travel, latency spikes, odd-hour admin
actions) at ``--rate`` events per second.  Every second it prints the throughput, the alerts with
the fields that made them anomalous, and precision/recall against the injected truth (the
events' ``label``, which the model never sees).  It stops cleanly after ``--seconds`` (training
included) or on Ctrl-C.  The configuration is the package's ``monitor/resources/demo.yaml``
(`monitor.resources.DEMO_CONFIG`), so the demo runs from an installed wheel, from any directory.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from importlib.resources import as_file
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TextIO

from kafka import KafkaConsumer, TopicPartition

from monitor.broker import EmbeddedBroker
from monitor.metrics import MetricsError, MetricsServer
from monitor.replay import Replayer
from monitor.service import Monitor, stop_on_signals
from monitor.resources import DEMO_CONFIG
from monitor.traffic import HISTORY_START, NORMAL, SITE_SEED, live_stream, week_of_history
from monitor.transport import client
from trainer.bundle import Bundle
from trainer.config import Config, load_config
from trainer.fit import fit
from trainer.scoring import short_value

__all__ = ["DEMO_CONFIG", "HISTORY_START", "SITE_SEED", "TRAINING_EVENTS", "demo_config", "run_demo"]

TRAINING_EVENTS = 40_000
ANOMALY_RATE = 0.01
MIN_STREAM_S = 5.0
ALERTS_SHOWN_PER_TICK = 4


class Scoreboard:
    """Precision and recall of the alerts against the injected truth, updated from two threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: Counter[str] = Counter()  # events sent, by label
        self.alerted: Counter[str] = Counter()  # distinct alerted events, by label
        self._alert_ids: set[str] = set()

    def count_sent(self, label: str) -> None:
        with self._lock:
            self.sent[label] += 1

    def count_alert(self, alert: dict[str, Any]) -> bool:
        """Record an alert; False if its event was already alerted (a redelivery)."""
        with self._lock:
            if alert["alert_id"] in self._alert_ids:
                return False
            self._alert_ids.add(alert["alert_id"])
            self.alerted[(alert.get("event") or {}).get("label", "?")] += 1
            return True

    def snapshot(self) -> tuple[int, int, int, int]:
        """(events sent, anomalies sent, alerts, alerts on anomalies)."""
        with self._lock:
            alerts = sum(self.alerted.values())
            return (sum(self.sent.values()), sum(self.sent.values()) - self.sent[NORMAL],
                    alerts, alerts - self.alerted[NORMAL])

    def precision_recall(self) -> tuple[float | None, float | None]:
        _, anomalies, alerts, hits = self.snapshot()
        return (hits / alerts if alerts else None, hits / anomalies if anomalies else None)

    def recall_by_kind(self) -> dict[str, tuple[int, int]]:
        """Per anomaly kind: (alerted, sent)."""
        with self._lock:
            return {kind: (self.alerted[kind], n) for kind, n in sorted(self.sent.items()) if kind != NORMAL}


class AlertWatcher(threading.Thread):
    """Reads the alert topic from the beginning and hands each new alert to the scoreboard and the screen."""

    def __init__(self, servers: str, topic: str, partitions: int, scoreboard: Scoreboard) -> None:
        super().__init__(name="demo-alerts", daemon=True)
        self.scoreboard = scoreboard
        self.pending: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()  # new alerts, to show
        self._stop_event = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=100)
        self._consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        self._consumer.seek_to_beginning()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                for records in self._consumer.poll(timeout_ms=100).values():
                    for record in records:
                        alert = json.loads(record.value)
                        if self.scoreboard.count_alert(alert):
                            self.pending.put(alert)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def live_traffic(scoreboard: Scoreboard, stop: threading.Event, rate: float) -> Iterator[dict[str, Any]]:
    """Live traffic for sending at `rate` events/s, until `stop`; each event is counted as sent."""
    for event in live_stream(rate, anomaly_rate=ANOMALY_RATE):
        if stop.is_set():
            return
        scoreboard.count_sent(event["label"])
        yield event


def demo_config(servers: str, path: Traversable = DEMO_CONFIG) -> Config:
    """The demo config (packaged by default), talking to the broker at `servers`."""
    with as_file(path) as file:
        config = load_config(file)
    return dataclasses.replace(config, kafka=dataclasses.replace(config.kafka, bootstrap_servers=servers))


def format_alert(alert: dict[str, Any], fields: int = 3) -> str:
    """One line: severity, key, score, the injected kind, and the top fields with actual vs expected."""
    event = alert.get("event") or {}
    parts = [f"{c['field']}={short_value(c['actual'])} (expected {short_value(c['expected'])}, {c['share']:.0%})"
             for c in alert["contributions"][:fields]]
    return (f"  ALERT {alert['severity']:<8} {event.get('user', '?'):<8} score {alert['score']:<8.3g} "
            f"[{event.get('label', '?')}]  " + ", ".join(parts))


def _ratio(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.2f}"


class _Demo:
    """The running demo's parts, stopped in reverse order."""

    def __init__(self, seconds: float, rate: float, workdir: Path, out: TextIO) -> None:
        self.seconds, self.rate, self.workdir, self.out = seconds, rate, workdir, out
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.scoreboard = Scoreboard()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> None:
        with EmbeddedBroker() as broker:
            config = demo_config(broker.bootstrap_servers)
            self.say(f"anomon demo: embedded Kafka broker at {broker.bootstrap_servers}")
            bundle = self.train(config)
            k = config.kafka
            client(k.client).ensure_topics(broker.bootstrap_servers, {t: k.partitions for t in
                                                                      (k.input_topic, k.alert_topic, k.dead_letter_topic)})
            monitor = Monitor(config, bundle)
            with self.metrics_server(monitor, config) as server:
                self.say(f"metrics: {server.url}/metrics   (also {server.url}/readyz)")
                self.stream(config, broker.bootstrap_servers, monitor)

    def train(self, config: Config) -> Bundle:
        history = week_of_history(TRAINING_EVENTS)
        self.say(f"training on {TRAINING_EVENTS:,} events, a week of normal traffic ...")
        bundle = fit(history, config, verbose=False)
        target = bundle.save(self.workdir / "models" / "demo")
        self.say(f"trained in {bundle.training['seconds']:.1f} s, threshold {bundle.threshold.value:.4g}; "
                 f"bundle {target}")
        return bundle

    def metrics_server(self, monitor: Monitor, config: Config) -> MetricsServer:
        server = MetricsServer(monitor.metrics.registry, host=config.metrics.host, port=config.metrics.port,
                               ready=lambda: monitor.ready)
        try:
            return server.start()
        except MetricsError:  # port taken (another monitor?): any free port will do for a demo
            server.requested_port = 0
            return server.start()

    def stream(self, config: Config, servers: str, monitor: Monitor) -> None:
        k = config.kafka
        monitor_thread = threading.Thread(target=monitor.run, name="demo-monitor")
        monitor_thread.start()
        watcher = AlertWatcher(servers, k.alert_topic, k.partitions, self.scoreboard)
        watcher.start()
        producer = client(k.client).producer(bootstrap_servers=servers, linger_ms=5)
        replayer = Replayer(config, rate=self.rate)
        sender = threading.Thread(target=replayer.send, name="demo-traffic",
                                  args=(producer, live_traffic(self.scoreboard, self.stop, self.rate)))
        try:
            while not monitor.assignment and not self.stop.is_set():  # the group forms in a few seconds
                time.sleep(0.1)
            remaining = max(MIN_STREAM_S, self.seconds - (time.monotonic() - self.started))
            self.say(f"streaming {self.rate:.0f} events/s with {ANOMALY_RATE:.0%} injected anomalies "
                     f"for {remaining:.0f} s (Ctrl-C stops)")
            sender.start()
            with stop_on_signals(self.stop.set):  # Ctrl-C: stop sending, drain, summarise
                self.watch(monitor, watcher, time.monotonic() + remaining)
        finally:
            self.stop.set()
            if sender.is_alive():
                sender.join()
            producer.close()
            self.drain(monitor, watcher)
            monitor.stop()
            monitor_thread.join()
            watcher.stop()
        self.summary(monitor)

    def watch(self, monitor: Monitor, watcher: AlertWatcher, until: float) -> None:
        """Print a status line and the new alerts once a second."""
        last_events, last_time = monitor.totals["events"], time.monotonic()
        while not self.stop.wait(max(0.0, min(1.0, until - time.monotonic()))) and time.monotonic() < until:
            self.show_alerts(watcher)
            events, now = monitor.totals["events"], time.monotonic()
            self.say(self.status(monitor, (events - last_events) / (now - last_time)))
            last_events, last_time = events, now
        self.show_alerts(watcher)

    def show_alerts(self, watcher: AlertWatcher) -> None:
        new = []
        while not watcher.pending.empty():
            new.append(watcher.pending.get())
        for alert in new[:ALERTS_SHOWN_PER_TICK]:
            self.say(format_alert(alert))
        if len(new) > ALERTS_SHOWN_PER_TICK:
            self.say(f"  ... and {len(new) - ALERTS_SHOWN_PER_TICK} more alerts")

    def status(self, monitor: Monitor, events_per_s: float) -> str:
        precision, recall = self.scoreboard.precision_recall()
        t = monitor.totals
        return (f"[{time.monotonic() - self.started:5.0f} s] {events_per_s:6.0f} events/s | scored {t['scored']:,} | "
                f"alerts {t['alerts']:,} | dead letters {t['dead_letters']:,} | "
                f"precision {_ratio(precision)} | recall {_ratio(recall)}")

    def drain(self, monitor: Monitor, watcher: AlertWatcher, timeout_s: float = 10.0) -> None:
        """Let the monitor score what was sent and the watcher read its alerts, so the summary is exact."""
        sent = self.scoreboard.snapshot()[0]
        deadline = time.monotonic() + timeout_s
        while monitor.totals["events"] < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        while self.scoreboard.snapshot()[2] < monitor.totals["alerts"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.show_alerts(watcher)

    def summary(self, monitor: Monitor) -> None:
        sent, anomalies, alerts, hits = self.scoreboard.snapshot()
        precision, recall = self.scoreboard.precision_recall()
        self.say(f"done: {sent:,} events sent, {monitor.totals['scored']:,} scored, {anomalies} injected anomalies, "
                 f"{alerts} alerts ({hits} on injected anomalies): precision {_ratio(precision)}, "
                 f"recall {_ratio(recall)}")
        for kind, (hit, n) in self.scoreboard.recall_by_kind().items():
            self.say(f"  {kind:<18} {hit:4d} of {n:4d} detected")


def run_demo(seconds: float = 60.0, rate: float = 500.0, workdir: Path = Path("demo-run"),
             out: TextIO = sys.stdout) -> int:
    """`anomon demo`; returns the exit status (0, also after Ctrl-C while streaming)."""
    _Demo(seconds, rate, Path(workdir), out).run()
    return 0
