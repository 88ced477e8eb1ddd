"""Drift detection inside the monitor: River detectors on window aggregates of seasonally adjusted streams.

`DriftObserver` is a batch observer (`monitor.service.BatchObserver`).  From every settled
batch it feeds these streams, each to its own River detector (``drift.detector``: ADWIN by
default, KSWIN or PageHinkley, River's defaults unless ``drift.params`` / ``drift.fields``
say otherwise):

- ``_score``: log(score) of each event as a z-score against the training reference's baseline
  at the event's hour of day;
- each numeric or boolean field: its encoded value (the model input) as a z-score against the
  reference baseline at the event's hour;
- each categorical field, twice: the share of unseen/rare values minus the share expected at
  those hours (statistic ``unseen_rate``), and the Jensen-Shannon divergence between the
  window's category shares and the shares expected at those hours (``js_divergence``).

Seasonality never reads as drift because nothing is compared with the daily mix: every event
is measured against the reference *of its own hour* (`trainer.drift.Reference`), and the
detectors see window aggregates (the mean over ``drift.window`` events, z-scores clipped to
±5 so that a few anomalies do not move a window), which are stationary under stationary
seasonal traffic.

A detection must matter as well as be significant: after the detector flags a change, the mean
of the stream's last 8 aggregates must, within 32 windows, come to differ from the level before
(the mean of the aggregates since the stream started, less the last 40) by ``drift.min_shift``
(z-scores: standard deviations at that hour), ``drift.min_rate_shift`` (unseen share) or
``drift.min_divergence_shift`` (bits).  The reference
is an estimate from finite training data, so over hundreds of thousands of events a detector
would otherwise find its small errors (a few hundredths of a standard deviation at some hours).
A detection is debounced: the stream's detector starts afresh (it learns the new level) and
the stream stays silent for ``drift.cooldown_windows`` windows, so one shift gives one event,
not a storm.  Each detection increments ``anomon_drift_detected_total{detector,field}``, sets
``anomon_drift_last_timestamp_seconds{field}`` and emits a control event::

    {"type": "drift", "detector": "adwin", "field": "latency_ms", "statistic": "mean_z",
     "direction": "increase", "before": {"mean": 0.01, "windows": 24}, "after": {"mean": 2.1, "windows": 8},
     "window_events": 200, "events": 41800, "model_version": "...", "detected_at": "...",
     "offsets": {"0": 20950, "1": 20850}}

(`before`/`after`: the level before (mean aggregate), and over the last 8 windows; `events`: events
the stream has seen; `offsets`: the input partitions' next offsets after the batch.)  A batch
scored by another model than the last one rebuilds every stream from that model's reference.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift as river_drift

from monitor.alerts import iso_time
from monitor.metrics import MonitorMetrics
from monitor.pipeline import BatchResult
from trainer.bundle import Bundle
from trainer.config import Config
from trainer.drift import SCORE, CategoricalReference, NumericReference, Reference, day_features
from trainer.errors import AnomonError

log = logging.getLogger(__name__)

DETECTORS = {"adwin": river_drift.ADWIN, "kswin": river_drift.KSWIN, "page_hinkley": river_drift.PageHinkley}
Z_CLIP = 5.0
_AFTER = 8  # the last aggregates, taken as "after the change"
_CONFIRM = 32  # windows after a detector's flag in which the change may show (ADWIN checks every 32)


class DriftConfigError(AnomonError):
    """Detector parameters River refuses."""


def make_detector(name: str, params: dict[str, Any]) -> Any:
    """A River detector; KSWIN gets ``seed=0`` unless given one, so runs repeat exactly.

    >>> type(make_detector("page_hinkley", {"threshold": 20})).__name__
    'PageHinkley'
    """
    if name == "kswin":
        params = {"seed": 0, **params}
    try:
        return DETECTORS[name](**params)
    except (TypeError, ValueError) as exc:
        raise DriftConfigError(f"drift: {name} does not accept {params}: {exc}") from None


class _Batch:
    """A settled batch as the streams read it: scores, encoded rows, seasonal features, cached expectations."""

    def __init__(self, result: BatchResult, features: np.ndarray) -> None:
        self.scores, self.encoded, self.F = result.scores, result.encoded, features
        self._probabilities: dict[int, np.ndarray] = {}

    def probabilities(self, ref: CategoricalReference) -> np.ndarray:
        """Expected category shares of each row (computed once per field and batch: two streams read them)."""
        key = id(ref)
        if key not in self._probabilities:
            self._probabilities[key] = ref.probabilities(self.F)
        return self._probabilities[key]


@dataclass
class _Stream:
    """One detector on one aggregated stream; `values` gives per-event rows, `aggregate` reduces windows.

    A detector's flag opens a confirmation period of `_CONFIRM` windows: the drift is confirmed
    at the first window of it where the mean of the last `_AFTER` aggregates differs from the
    level before by `min_shift` or more.  The level before is the mean of the aggregates since
    the stream last started, less the last `_AFTER + _CONFIRM` (a change is flagged within
    `_CONFIRM` windows: ADWIN checks every 32).  So a flag raised early, on a few windows of a
    new level, still confirms once the level shows; a flag on a wobble too small to matter lapses.
    """

    field: str  # the metric label: a field name, or _score
    statistic: str
    detector_name: str
    params: dict[str, Any]
    window: int
    min_shift: float  # smallest |after - before| that counts as drift
    values: Callable[[_Batch], np.ndarray]  # (events, k), NaN rows are skipped
    aggregate: Callable[[np.ndarray], np.ndarray]  # (windows, window, k) -> (windows,)
    detector: Any = None
    pending: np.ndarray | None = None  # events not yet making a whole window
    recent: deque = field(default_factory=lambda: deque(maxlen=_AFTER + _CONFIRM))
    total: float = 0.0  # sum and count of the aggregates since the stream (re)started, less `recent`
    count: int = 0
    confirm: int = 0  # windows left in the confirmation period
    silent: int = 0  # windows left in the cool-down
    events: int = 0

    def __post_init__(self) -> None:
        self.detector = make_detector(self.detector_name, self.params)

    def feed(self, batch: _Batch) -> list[dict[str, Any]]:
        """Feed one batch; returns the confirmed detections (before/after statistics and direction)."""
        rows = self.values(batch)
        rows = rows[~np.isnan(rows).any(axis=1)]
        self.events += len(rows)
        if self.pending is not None:
            rows = np.concatenate([self.pending, rows])
        whole = len(rows) // self.window * self.window
        self.pending = rows[whole:]
        if not whole:
            return []
        detections = []
        for value in self.aggregate(rows[:whole].reshape(-1, self.window, rows.shape[1])):
            value = float(value)
            if len(self.recent) == self.recent.maxlen:
                self.total += self.recent[0]
                self.count += 1
            self.recent.append(value)
            self.detector.update(value)
            if self.silent:
                self.silent -= 1
                continue
            if self.detector.drift_detected:
                self.confirm = _CONFIRM
            if self.confirm:
                self.confirm -= 1
                if (detection := self._confirmed()) is not None:
                    detections.append(detection)
        return detections

    def _confirmed(self) -> dict[str, Any] | None:
        """The change, if it is large enough to matter (then the stream restarts); else None."""
        recent = list(self.recent)
        if self.count >= _AFTER:
            before, n_before = self.total / self.count, self.count
        elif len(recent) > _AFTER:  # just (re)started: what there is before the last _AFTER
            n_before = len(recent) - _AFTER
            before = float(np.mean(recent[:-_AFTER]))
        else:
            return None
        after = float(np.mean(recent[-_AFTER:]))
        change = after - before
        if abs(change) < self.min_shift:
            if not self.confirm:
                log.debug("drift: %s on %s flagged a change of %.3g, below %g", self.detector_name, self.field,
                          change, self.min_shift)
            return None
        detection = {"statistic": self.statistic, "direction": "increase" if change >= 0 else "decrease",
                     "before": {"mean": round(before, 4), "windows": n_before},
                     "after": {"mean": round(after, 4), "windows": _AFTER},
                     "window_events": self.window, "events": self.events}
        self.detector = make_detector(self.detector_name, self.params)
        self.recent.clear()
        self.total, self.count, self.confirm = 0.0, 0, 0
        return detection


def _mean(windows: np.ndarray) -> np.ndarray:
    return windows[:, :, 0].mean(axis=1)


def _divergence(windows: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits) of each window's observed shares against its expected ones."""
    k = windows.shape[2] // 2
    p, q = windows[:, :, :k].mean(axis=1), windows[:, :, k:].mean(axis=1)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return (kl_p + kl_q) / 2


class DriftObserver:
    """Drift detection on settled batches; see the module docstring.

    Parameters
    ----------
    config
        ``drift`` settings (and the fields' types).
    bundle
        The model whose training reference the streams compare with.
    emit
        Receives each control event (the monitor publishes them on ``kafka.control_topic``).
    metrics
        Where the drift counters and gauges live.
    clock
        Wall clock in epoch seconds.
    """

    def __init__(self, config: Config, bundle: Bundle, *, emit: Callable[[dict[str, Any]], None],
                 metrics: MonitorMetrics, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.emit = emit
        self.metrics = metrics
        self.clock = clock
        self.detections: deque[dict[str, Any]] = deque(maxlen=1000)  # the events emitted, oldest first
        self._build(bundle)

    @property
    def streams(self) -> list[tuple[str, str, str]]:
        """(detector, field, statistic) of every stream."""
        return [(s.detector_name, s.field, s.statistic) for s in self._streams]

    def _build(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.reference = Reference.of(bundle.training)
        streams: list[_Stream] = []
        drift = self.config.drift
        encoder = bundle.encoder
        reference = self.reference

        def add(name: str | None, statistic: str, values: Callable, aggregate: Callable = _mean) -> None:
            enabled, detector, params, window = drift.stream(name)
            min_shift = {"unseen_rate": drift.min_rate_shift, "js_divergence": drift.min_divergence_shift}.get(
                statistic, drift.min_shift)
            if enabled:
                streams.append(_Stream(name or SCORE, statistic, detector, params, window, min_shift, values,
                                       aggregate))

        def clipped(z: np.ndarray) -> np.ndarray:
            return np.clip(z, -Z_CLIP, Z_CLIP)[:, None]

        if reference is None or reference.score is None:
            log.warning("model %s has no drift reference (trained before anomon stored one): only the "
                        "score stream is watched, against its own start", bundle.version)
            add(None, "log_score", lambda b: np.log(np.maximum(b.scores, 1e-300))[:, None])
        else:
            add(None, "log_score_z", lambda b: clipped(reference.score_z(b.F, b.scores)))
        for name, ref in (reference.fields.items() if reference else ()):
            if isinstance(ref, NumericReference):
                add(name, "mean_z", lambda b, name=name: clipped(reference.z(name, b.F, b.encoded)))
            else:
                add(name, "unseen_rate", lambda b, ref=ref: (b.encoded[:, ref.stop - 1]
                                                              - b.probabilities(ref)[:, -1])[:, None])
                add(name, "js_divergence", lambda b, ref=ref: np.concatenate(
                    [b.encoded[:, ref.start:ref.stop], b.probabilities(ref)], axis=1), _divergence)
        self._streams = streams
        self._features = lambda X: day_features(encoder, X)[:, : reference.seasonal if reference else 1]
        self.metrics.add_drift_streams({(s.detector_name, s.field) for s in streams})

    def on_batch(self, result: BatchResult) -> None:
        if result.bundle is not None and result.bundle is not self.bundle:
            log.info("drift: streams restart against the reference of model %s", result.bundle.version)
            self._build(result.bundle)
        if not result.scored:
            return
        batch = _Batch(result, self._features(result.encoded))
        for stream in self._streams:
            for detection in stream.feed(batch):
                self._detected(stream, detection, result)

    def _detected(self, stream: _Stream, detection: dict[str, Any], result: BatchResult) -> None:
        now = self.clock()
        stream.silent = self.config.drift.cooldown_windows
        event = {"type": "drift", "detector": stream.detector_name, "field": stream.field, **detection,
                 "model_version": self.bundle.version,
                 "detected_at": iso_time(now),
                 "offsets": {str(p): o for (_, p), o in sorted(result.offsets.items())}}
        self.metrics.drift_detected.labels(stream.detector_name, stream.field).inc()
        self.metrics.drift_last.labels(stream.field).set(now)
        self.detections.append(event)
        log.warning("drift: %s on %s (%s %s, %s → %s)", stream.detector_name, stream.field, detection["statistic"],
                    detection["direction"], detection["before"]["mean"], detection["after"]["mean"])
        self.emit(event)
