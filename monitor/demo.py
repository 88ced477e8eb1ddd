"""`anomon demo`: the whole system on one machine, in two minutes.

It starts the embedded broker, trains a bundle on a week of synthetic web traffic
(`monitor.traffic`), starts the monitor with its metrics server, and streams live traffic with
injected anomalies (exfiltration, brute force, impossible travel, latency spikes, odd-hour admin
actions) at ``--rate`` events per second.  Every second it prints the throughput, the alerts with
the fields that made them anomalous, precision/recall against the injected truth (the events'
``label``, which the model never sees) and the false-alarm rate of the last 5 seconds.

Then the loop that keeps the monitor calibrated: ``--shift-after`` seconds into the stream, a
scripted shift (every request 4x slower, a bad deploy: normal traffic all the same) raises the
false alarms; the monitor detects the drift, retrains in a separate process on the traffic since
(``retrain.mode: auto``), and takes the new version up between two batches; the false-alarm rate
returns to normal.  Each step is printed as it comes from the control topic.

It stops cleanly after ``--seconds`` (training included) or on Ctrl-C.  A retraining still running
then is waited for, streaming on, at most `RETRAIN_GRACE_S` more, and its model given
`RETRAINED_PHASE_S` of traffic, so the story ends on a slow machine too (the retraining's five
fold fits and final fit took 19-34 s beside the running demo on 2 cores, over 55 s in a CI run).  The configuration is the
package's ``monitor/resources/demo.yaml`` (`monitor.resources.DEMO_CONFIG`) with the broker's
address and automatic retraining, written to ``WORKDIR/anomon.yaml`` (the retraining process
reads it), so the demo runs from an installed wheel, from any directory.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from importlib.resources import as_file
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TextIO

import yaml
from kafka import KafkaConsumer, TopicPartition

from monitor.broker import EmbeddedBroker
from monitor.lifecycle import ModelWatcher
from monitor.metrics import MetricsError, MetricsServer
from monitor.replay import Replayer
from monitor.service import Monitor, stop_on_signals
from monitor.resources import DEMO_CONFIG, demo_config_mapping
from monitor.retrain import AutoRetrainer
from monitor.traffic import HISTORY_START, NORMAL, SITE_SEED, live_stream, week_of_history
from monitor.transport import client
from trainer.bundle import Bundle
from trainer.config import Config, load_config
from trainer.fit import fit
from trainer.scoring import short_value

__all__ = ["DEMO_CONFIG", "HISTORY_START", "SITE_SEED", "TRAINING_EVENTS", "demo_config", "run_demo", "scripted_shift"]

TRAINING_EVENTS = 40_000
ANOMALY_RATE = 0.01
MIN_STREAM_S = 5.0
ALERTS_SHOWN_PER_TICK = 4
SHIFT_FACTOR = 4.0  # the scripted shift: every request this many times slower
RETRAIN = {"mode": "auto", "min_records": 10_000, "cooldown_s": 3600}  # 20 s of traffic at 500 events/s
DRIFT = {"window": 100}  # windows of 100 events: ADWIN checks every 3,200 events, 6 s at 500 events/s
FALSE_ALARM_WINDOW_S = 5
RETRAIN_GRACE_S = 120.0  # past --seconds, at most this long waiting for a running retraining's model
RETRAINED_PHASE_S = 10.0  # ... and this long streaming with it: 5,000 events, the retrained false alarms


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

    def normal_counts(self) -> tuple[int, int]:
        """(normal events sent, normal events alerted): the false alarms' numerator and denominator."""
        with self._lock:
            return self.sent[NORMAL], self.alerted[NORMAL]

    def recall_by_kind(self) -> dict[str, tuple[int, int]]:
        """Per anomaly kind: (alerted, sent)."""
        with self._lock:
            return {kind: (self.alerted[kind], n) for kind, n in sorted(self.sent.items()) if kind != NORMAL}


class TopicWatcher(threading.Thread):
    """Reads a topic of JSON values from the beginning; each one `accept` takes is queued in `pending`."""

    def __init__(self, servers: str, topic: str, partitions: int, accept: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(name=f"demo-{topic}", daemon=True)
        self.accept = accept
        self.pending: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()  # to show
        self._stop_event = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=100)
        self._consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        self._consumer.seek_to_beginning()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                for records in self._consumer.poll(timeout_ms=100).values():
                    for record in records:
                        value = json.loads(record.value)
                        if self.accept(value):
                            self.pending.put(value)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def take(self) -> list[dict[str, Any]]:
        new = []
        while not self.pending.empty():
            new.append(self.pending.get())
        return new


def scripted_shift(event: dict[str, Any]) -> dict[str, Any]:
    """`event` after the scripted shift (a bad deploy): its request `SHIFT_FACTOR` times slower."""
    event["latency_ms"] = round(event["latency_ms"] * SHIFT_FACTOR, 1)
    return event


def live_traffic(scoreboard: Scoreboard, stop: threading.Event, rate: float,
                 shifted: threading.Event | None = None) -> Iterator[dict[str, Any]]:
    """Live traffic for sending at `rate` events/s, until `stop`; each event is counted as sent.

    Once `shifted` is set, every request takes `SHIFT_FACTOR` times longer.
    """
    for event in live_stream(rate, anomaly_rate=ANOMALY_RATE):
        if stop.is_set():
            return
        if shifted is not None and shifted.is_set():
            scripted_shift(event)
        scoreboard.count_sent(event["label"])
        yield event


def demo_config(servers: str, path: Traversable = DEMO_CONFIG) -> Config:
    """The demo config (packaged by default), talking to the broker at `servers`."""
    with as_file(path) as file:
        config = load_config(file)
    return dataclasses.replace(config, kafka=dataclasses.replace(config.kafka, bootstrap_servers=servers))


def write_demo_config(servers: str, directory: Path) -> Path:
    """The packaged demo config with the broker at `servers`, quicker drift windows and automatic
    retraining, as a file."""
    raw = demo_config_mapping()
    raw["kafka"]["bootstrap_servers"] = servers
    raw["retrain"] = dict(RETRAIN)
    raw["drift"] = dict(DRIFT)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "anomon.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def format_control(event: dict[str, Any]) -> str:
    """One line per control event: drift, retraining, a new model live or refused."""
    kind = event["type"]
    if kind == "drift":
        return (f"  DRIFT detected by {event['detector']} on {event['field']}: {event['statistic']} "
                f"{event['before']['mean']:+.3g} -> {event['after']['mean']:+.3g} ({event['direction']}), "
                f"model {event['model_version']}")
    if kind == "retrain_started":
        return (f"  RETRAINING in a separate process on the traffic since the drift "
                f"(offsets {event['from_offsets']} to {event['to_offsets']}); scoring goes on")
    if kind == "retrain_finished":
        return "  RETRAINING done" if event["returncode"] == 0 else f"  RETRAINING failed ({event['returncode']})"
    if kind == "model_loaded":
        return (f"  NEW MODEL LIVE: {event['model_version']} (threshold {event['threshold']:.4g}), "
                f"replacing {event['previous_version']} between two batches")
    if kind == "model_refused":
        return f"  MODEL REFUSED: {event['model_version']}: {event['error']}"
    return f"  {kind}: {event}"


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

    def __init__(self, seconds: float, rate: float, workdir: Path, out: TextIO, shift_after: float | None) -> None:
        self.seconds, self.rate, self.workdir, self.out = seconds, rate, workdir, out
        self.shift_after = shift_after
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.shifted = threading.Event()
        self.scoreboard = Scoreboard()
        self.false_alarms: deque[tuple[int, int]] = deque(maxlen=FALSE_ALARM_WINDOW_S + 1)  # (normal sent, alerted)
        self.phases: dict[str, tuple[int, int]] = {}  # phase start → (normal sent, alerted) then
        self.retraining = False  # a retraining started and its model is not live (nor failed) yet
        self.reloaded_at: float | None = None  # monotonic time the retrained model went live

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> None:
        with EmbeddedBroker() as broker:
            path = write_demo_config(broker.bootstrap_servers, self.workdir)
            config = load_config(path)
            self.say(f"anomon demo: embedded Kafka broker at {broker.bootstrap_servers}")
            bundle = self.train(config)
            k = config.kafka
            client(k.client).ensure_topics(broker.bootstrap_servers, {t: k.partitions for t in (
                k.input_topic, k.alert_topic, k.dead_letter_topic, k.control_topic)})
            monitor = Monitor(config, bundle)
            model_dir = self.workdir / "models" / "demo"
            retrainer = AutoRetrainer(config, path, model_dir, monitor)
            monitor.observers.append(retrainer)
            models = ModelWatcher(model_dir, monitor, interval_s=0.5)
            models.start()
            try:
                with self.metrics_server(monitor, config) as server:
                    self.say(f"metrics: {server.url}/metrics   (also {server.url}/readyz)")
                    self.stream(config, broker.bootstrap_servers, monitor)
            finally:
                models.stop()
                if retrainer.process is not None and retrainer.process.poll() is None:
                    retrainer.process.terminate()  # the demo is over: so is its retraining
                    retrainer.process.wait()

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
        watcher = TopicWatcher(servers, k.alert_topic, k.partitions, self.scoreboard.count_alert)
        watcher.start()
        control = TopicWatcher(servers, k.control_topic, k.partitions, lambda event: True)
        control.start()
        producer = client(k.client).producer(bootstrap_servers=servers, linger_ms=5)
        replayer = Replayer(config, rate=self.rate)
        sender = threading.Thread(target=replayer.send, name="demo-traffic",
                                  args=(producer, live_traffic(self.scoreboard, self.stop, self.rate, self.shifted)))
        try:
            while not monitor.assignment and not self.stop.is_set():  # the group forms in a few seconds
                time.sleep(0.1)
            remaining = max(MIN_STREAM_S, self.seconds - (time.monotonic() - self.started))
            self.say(f"streaming {self.rate:.0f} events/s with {ANOMALY_RATE:.0%} injected anomalies "
                     f"for {remaining:.0f} s (Ctrl-C stops)")
            sender.start()
            self.phases["before the shift"] = self.scoreboard.normal_counts()
            with stop_on_signals(self.stop.set):  # Ctrl-C: stop sending, drain, summarise
                self.watch(monitor, watcher, control, time.monotonic() + remaining)
        finally:
            self.stop.set()
            if sender.is_alive():
                sender.join()
            producer.close()
            self.drain(monitor, watcher)
            monitor.stop()
            monitor_thread.join()
            watcher.stop()
            self.show_control(control)
            control.stop()
        self.summary(monitor)

    def watch(self, monitor: Monitor, watcher: TopicWatcher, control: TopicWatcher, until: float) -> None:
        """Print a status line, the new alerts and control events once a second; shift when it is time."""
        streaming = time.monotonic()
        last_events, last_time = monitor.totals["events"], time.monotonic()
        told = False
        while (not self.stop.wait(max(0.0, min(1.0, self.ends_at(until) - time.monotonic())))
               and time.monotonic() < self.ends_at(until)):
            if time.monotonic() >= until and not told:  # past --seconds: say why it goes on
                told = True
                self.say(f"  the retraining is still running: streaming on until its model is live "
                         f"(at most {RETRAIN_GRACE_S:.0f} s more)" if self.retraining else
                         f"  streaming on for {RETRAINED_PHASE_S:.0f} s with the retrained model")
            if (self.shift_after is not None and not self.shifted.is_set()
                    and time.monotonic() - streaming >= self.shift_after):
                self.shifted.set()
                self.phases["after the shift, old model"] = self.scoreboard.normal_counts()
                self.say(f"  SCRIPTED SHIFT: from now on every request takes {SHIFT_FACTOR:g}x longer "
                         f"(a bad deploy); the traffic is as normal as before")
            self.show_alerts(watcher)
            self.show_control(control)
            events, now = monitor.totals["events"], time.monotonic()
            self.false_alarms.append(self.scoreboard.normal_counts())
            self.say(self.status(monitor, (events - last_events) / (now - last_time)))
            last_events, last_time = events, now
        self.show_alerts(watcher)

    def ends_at(self, until: float) -> float:
        """When streaming stops: `until`, or later while a retraining's model is awaited or new."""
        if self.retraining:
            return until + RETRAIN_GRACE_S
        if self.reloaded_at is not None:
            return min(until + RETRAIN_GRACE_S, max(until, self.reloaded_at + RETRAINED_PHASE_S))
        return until

    def show_alerts(self, watcher: TopicWatcher) -> None:
        new = watcher.take()
        for alert in new[:ALERTS_SHOWN_PER_TICK]:
            self.say(format_alert(alert))
        if len(new) > ALERTS_SHOWN_PER_TICK:
            self.say(f"  ... and {len(new) - ALERTS_SHOWN_PER_TICK} more alerts")

    def show_control(self, control: TopicWatcher) -> None:
        for event in control.take():
            self.say(format_control(event))
            kind = event["type"]
            if kind == "retrain_started":
                self.retraining = True
            elif kind == "model_refused" or (kind == "retrain_finished" and event["returncode"] != 0):
                self.retraining = False
            elif kind == "model_loaded" and self.shifted.is_set():
                self.retraining, self.reloaded_at = False, time.monotonic()
                self.phases["with the retrained model"] = self.scoreboard.normal_counts()

    def status(self, monitor: Monitor, events_per_s: float) -> str:
        precision, recall = self.scoreboard.precision_recall()
        t = monitor.totals
        (sent0, alerted0), (sent1, alerted1) = self.false_alarms[0], self.false_alarms[-1]
        recent = f"{(alerted1 - alerted0) / (sent1 - sent0):.2%}" if sent1 > sent0 else "  -  "
        return (f"[{time.monotonic() - self.started:5.0f} s] {events_per_s:6.0f} events/s | scored {t['scored']:,} | "
                f"alerts {t['alerts']:,} | dead letters {t['dead_letters']:,} | "
                f"precision {_ratio(precision)} | recall {_ratio(recall)} | "
                f"false alarms {recent} (last {FALSE_ALARM_WINDOW_S} s) | model {monitor.bundle.version[-17:]}")

    def drain(self, monitor: Monitor, watcher: TopicWatcher, timeout_s: float = 10.0) -> None:
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
        if len(self.phases) > 1:
            bounds = [*self.phases.values(), self.scoreboard.normal_counts()]
            rates = [f"{name} {(a1 - a0) / (s1 - s0):.2%}" if s1 > s0 else f"{name} -"
                     for name, (s0, a0), (s1, a1) in zip(self.phases, bounds, bounds[1:])]
            self.say(f"false-alarm rate (target {monitor.bundle.threshold.target_rate:.2%}): " + ", ".join(rates))


def run_demo(seconds: float = 120.0, rate: float = 500.0, workdir: Path = Path("demo-run"),
             out: TextIO = sys.stdout, shift_after: float | None = 15.0) -> int:
    """`anomon demo`; returns the exit status (0, also after Ctrl-C while streaming)."""
    _Demo(seconds, rate, Path(workdir), out, shift_after).run()
    return 0
