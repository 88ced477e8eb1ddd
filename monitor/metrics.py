"""The monitor's Prometheus metrics and the HTTP server for `/metrics`, `/healthz` and `/readyz`.

Every monitor owns a `CollectorRegistry` (nothing is registered globally), so several monitors
can run in one process, e.g. in tests.  Per-record observations (anomaly scores, event lag) are
made a batch at a time with numpy by `BatchHistogram`, a collector that renders as an ordinary
Prometheus histogram.

Everything derived from the model bundle (threshold, version, created-at) is set by `set_model`
and replaced on a swap; the score histogram observes score / threshold of the model that scored
each event, so its buckets (`SCORE_RATIO_BUCKETS`) never depend on one bundle.

>>> import urllib.request
>>> metrics = MonitorMetrics(build_version="0.1.0")
>>> metrics.set_model(threshold=2.0, version="v1", created_at=1.7e9)
>>> metrics.score_ratio.observe_many(np.array([0.5, 1.0, 3.0]) / 2.0)
>>> with MetricsServer(metrics.registry, port=0, ready=lambda: True) as server:
...     body = urllib.request.urlopen(server.url + "/metrics").read().decode()
...     ready = urllib.request.urlopen(server.url + "/readyz").status
>>> 'anomon_score_ratio_count 3.0' in body, 'anomon_threshold 2.0' in body, ready
(True, True, 200)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor.deadletter import DeadLetterReason
from monitor.pipeline import BatchResult
from trainer.errors import AnomonError
from trainer.threshold import BANDS

PUBLISH_KINDS = ("alert", "dead_letter", "control")  # what `monitor.setaside` counts
# Seconds from event time to scoring: sub-second when live, minutes to hours when catching up.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
PROCESSING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class MetricsError(AnomonError):
    """The metrics server could not listen on its address."""


# Score / threshold: 1.0 is the alert threshold, whichever model scored the event.
SCORE_RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0)
RELOAD_RESULTS = ("loaded", "refused")


class BatchHistogram(Collector):
    """A histogram fed a numpy array at a time: one `searchsorted` instead of a call per value.

    Non-finite values are skipped (e.g. records without an event time).

    >>> registry = CollectorRegistry()
    >>> h = BatchHistogram("demo_seconds", "Demo.", buckets=[1, 2], registry=registry)
    >>> h.observe_many(np.array([0.5, 1.0, 1.5, 7.0, np.nan]))
    >>> registry.get_sample_value("demo_seconds_bucket", {"le": "1.0"}), registry.get_sample_value("demo_seconds_count")
    (2.0, 4.0)
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.upper_bounds = np.array([*sorted(buckets), np.inf])
        self._counts = np.zeros(len(self.upper_bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()  # collect() runs in the HTTP server's threads
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        # side="left": a value equal to a bound belongs to that bucket (le means <=).
        counts = np.bincount(np.searchsorted(self.upper_bounds, values, side="left"),
                             minlength=len(self.upper_bounds))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts), self._sum
        yield HistogramMetricFamily(
            self.name, self.documentation, sum_value=total,
            buckets=[(floatToGoString(b), float(c)) for b, c in zip(self.upper_bounds, cumulative)],
        )

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


class MonitorMetrics:
    """The monitor's metrics, registered in their own `registry`; a batch observer (`on_batch`).

    Parameters
    ----------
    build_version
        Exported as ``anomon_build_info{version}``.
    fields
        The schema's fields: the label values of ``anomon_invalid_values_total{field}``
        (bounded by the schema, whatever events arrive).
    registry
        Where to register; default a new `CollectorRegistry`.

    The model's gauges are set by `set_model`; the drift counters' children by `add_drift_streams`.
    """

    def __init__(self, *, build_version: str, fields: Sequence[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter("anomon_events", "Events read from the input topic, by outcome.",
                              ["result"], registry=r)
        self.alerts = Counter("anomon_alerts", "Alerts published, by severity.", ["severity"], registry=r)
        self.dead_letters = Counter("anomon_dead_letter", "Events sent to the dead-letter topic, by reason.",
                                    ["reason"], registry=r)
        self.publish_failures = Counter("anomon_publish_failures", "Records the broker refused for good and that "
                                        "were set aside, by kind.", ["kind"], registry=r)
        self.unknown_fields = Counter("anomon_unknown_fields", "Fields of scored events that the schema "
                                      "does not define (ignored).", registry=r)
        self.invalid_values = Counter("anomon_invalid_values", "Values that could not be read as their field's "
                                      "type, scored as missing, by field.", ["field"], registry=r)
        self.score_ratio = BatchHistogram("anomon_score_ratio", "Anomaly score of scored events divided by the "
                                          "alert threshold of the model that scored them.",
                                          SCORE_RATIO_BUCKETS, registry=r)
        self.batch_size = Histogram("anomon_batch_size", "Events per polled batch.",
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.processing = Histogram("anomon_processing_seconds", "Time to process a polled batch: decode, "
                                    "encode, score, build and queue its alerts and dead letters (not the "
                                    "poll, nor waiting for acknowledgements and the commit).",
                                    buckets=PROCESSING_BUCKETS, registry=r)
        self.event_lag = BatchHistogram("anomon_event_lag_seconds", "Scoring time minus event time.",
                                        LAG_BUCKETS, registry=r)
        self.consumer_lag = Gauge("anomon_consumer_lag_messages", "Messages not yet read, by input partition.",
                                  ["partition"], registry=r)
        self.threshold = Gauge("anomon_threshold", "Alert threshold of the loaded model.", registry=r)
        self.model_info = Gauge("anomon_model_info", "The loaded model version (value 1).", ["version"], registry=r)
        self.model_created = Gauge("anomon_model_created_timestamp_seconds", "When the loaded model was trained "
                                   "(unix seconds).", registry=r)
        self.model_reloads = Counter("anomon_model_reloads", "New model versions seen in CURRENT, by result.",
                                     ["result"], registry=r)
        self.drift_detected = Counter("anomon_drift_detected", "Drift detections, by detector and field "
                                      "(field _score: the anomaly-score stream).", ["detector", "field"], registry=r)
        self.drift_last = Gauge("anomon_drift_last_timestamp_seconds", "When drift was last detected, by field "
                                "(unix seconds).", ["field"], registry=r)
        self.build_info = Info("anomon_build", "anomon version.", registry=r)

        # Every label value from the start: a counter that appears late breaks rate().
        for result in ("scored", "dead_letter"):
            self.events.labels(result)
        for severity in BANDS:
            self.alerts.labels(severity)
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason)
        for name in fields:
            self.invalid_values.labels(name)
        for outcome in RELOAD_RESULTS:
            self.model_reloads.labels(outcome)
        for kind in PUBLISH_KINDS:
            self.publish_failures.labels(kind)
        self.build_info.info({"version": build_version})
        self._lag_partitions: set[int] = set()
        self._model_version: str | None = None

    def set_model(self, *, threshold: float, version: str, created_at: float) -> None:
        """Export the active model: its threshold, version (the previous one's series goes) and created-at."""
        if self._model_version is not None and self._model_version != version:
            self.model_info.remove(self._model_version)
        self.threshold.set(threshold)
        self.model_info.labels(version).set(1)
        self.model_created.set(created_at)
        self._model_version = version

    def add_drift_streams(self, streams: Iterable[tuple[str, str]]) -> None:
        """Create the (detector, field) children of the drift counter at 0, so their series exist."""
        for detector, field in streams:
            self.drift_detected.labels(detector, field)

    def on_batch(self, result: BatchResult) -> None:
        """Count and observe one settled batch (the `BatchObserver` protocol)."""
        self.events.labels("scored").inc(result.scored)
        self.events.labels("dead_letter").inc(len(result.dead_letters))
        for alert in result.alerts:
            self.alerts.labels(alert.severity).inc()
        for letter in result.dead_letters:
            self.dead_letters.labels(letter.reason).inc()
        if result.unknown_fields:
            self.unknown_fields.inc(result.unknown_fields)
        for name, count in result.invalid_values.items():
            self.invalid_values.labels(name).inc(count)
        if result.scored:
            self.score_ratio.observe_many(result.scores / result.bundle.threshold.value)
        self.event_lag.observe_many(result.event_lag)
        self.batch_size.observe(result.size)
        self.processing.observe(result.seconds)

    def set_consumer_lag(self, lag: dict[int, int]) -> None:
        """Replace the per-partition lag; partitions no longer assigned disappear."""
        for partition in self._lag_partitions - set(lag):
            self.consumer_lag.remove(str(partition))
        for partition, value in lag.items():
            self.consumer_lag.labels(str(partition)).set(value)
        self._lag_partitions = set(lag)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never delays shutdown


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise


class MetricsServer:
    """Serves `/metrics` from `registry`, `/healthz` (the process is up) and `/readyz` (`ready()`).

    Parameters
    ----------
    registry
        The registry to expose.
    host, port
        Where to listen; port 0 picks a free port (see `port` once started).
    ready
        Called per `/readyz` request: True → 200, False → 503.
    """

    def __init__(self, registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int = 9108,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self.ready = ready
        self._metrics_app = make_wsgi_app(registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise MetricsError("metrics: the server is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MetricsServer:
        """Listen and serve from a daemon thread; a no-op when already serving."""
        if self._server is not None:
            return self
        try:
            self._server = make_server(self.host, self.requested_port, self._app,
                                       server_class=_Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise MetricsError(f"metrics: cannot listen on {self.host}:{self.requested_port}: "
                               f"{exc.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="anomon-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _app(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            if self.ready():
                return _text(start_response, "200 OK", "ready\n")
            return _text(start_response, "503 Service Unavailable", "not ready\n")
        return _text(start_response, "404 Not Found", "try /metrics, /healthz or /readyz\n")


def _text(start_response: Callable, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]
