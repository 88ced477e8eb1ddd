"""Alert threshold, severity bands and the 0-100 record score, calibrated on held-out normal scores.

Methods:

- ``quantile``: the (1 - target_rate) quantile of the calibration scores.
- ``max``: the largest calibration score times (1 + margin).
- ``evt``: peaks over threshold; a generalised Pareto distribution is fitted to the excesses
  over the (1 - tail_fraction) quantile and solved for the target rate, which extrapolates
  beyond the calibration sample (a 0.001 rate from 1,000 scores is otherwise just the maximum).

Severity bands come from the same calibration: ``warning`` starts at the threshold, ``minor``,
``major`` and ``critical`` at the tail-model scores expected at 1/10, 1/100 and 1/1000 of the
target rate (kept at least 1.5x apart, so bounded tails still give distinct bands).
``record_score`` maps a score to 0-100 like Elastic's: below 25 is normal, then warning
[25, 50), minor [50, 75), major [75, 90), critical [90, 100].

>>> import numpy as np
>>> scores = np.random.default_rng(0).exponential(size=100_000)
>>> t = calibrate(scores, method="quantile", target_rate=0.01)
>>> round(t.value, 1)  # exact: -ln(0.01) = 4.6
4.6
>>> t.severity(np.array([1.0, 5.0, 50.0])).tolist()
[None, 'warning', 'critical']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

BANDS = ("warning", "minor", "major", "critical")
_BAND_SCORES = (25.0, 50.0, 75.0, 90.0)
_BAND_SPACING = 1.5


@dataclass(frozen=True)
class Threshold:
    """A calibrated threshold with its severity band edges (score units)."""

    method: str
    value: float
    target_rate: float
    bands: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, float] = field(default_factory=dict)  # summary of the calibration scores

    def is_anomaly(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.value

    def severity(self, scores: np.ndarray) -> np.ndarray:
        """Band name per score (None below the threshold)."""
        edges = np.array([self.bands[b] for b in BANDS])
        index = np.searchsorted(edges, np.asarray(scores, dtype=float), side="right") - 1
        names = np.array([None, *BANDS], dtype=object)
        return names[np.where(np.isnan(scores), -1, index) + 1]

    def record_score(self, scores: np.ndarray) -> np.ndarray:
        """0-100: linear below the threshold, log-linear between band edges, saturating above."""
        s = np.maximum(np.asarray(scores, dtype=float), 1e-300)
        edges = np.array([self.bands[b] for b in BANDS])
        inside = np.interp(np.log(s), np.log(edges), _BAND_SCORES)
        above = 90.0 + 10.0 * (1.0 - edges[-1] / s)
        result = np.where(s < edges[0], 25.0 * s / edges[0], np.where(s > edges[-1], above, inside))
        return np.round(result, 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Threshold:
        return cls(**state)


def calibrate(
    scores: np.ndarray,
    method: str = "quantile",
    target_rate: float = 0.001,
    margin: float = 0.0,
    tail_fraction: float = 0.1,
) -> Threshold:
    """Threshold and bands from scores of held-out normal records."""
    scores = np.sort(np.asarray(scores, dtype=float)[np.isfinite(scores)])
    if scores.size < 10:
        raise ValueError(f"threshold: need at least 10 calibration scores, got {scores.size}")
    tail = TailModel.fit(scores, tail_fraction)
    if method == "quantile":
        value = float(np.quantile(scores, 1 - target_rate))
    elif method == "max":
        value = float(scores[-1] * (1 + margin))
    elif method == "evt":
        value = tail.quantile(target_rate)
    else:
        raise ValueError(f"threshold: unknown method '{method}' (quantile, max, evt)")
    edges = [value]
    for k in range(1, len(BANDS)):
        edges.append(max(tail.quantile(target_rate / 10**k), edges[-1] * _BAND_SPACING))
    summary = {
        "n": int(scores.size),
        "median": float(np.median(scores)),
        "p99": float(np.quantile(scores, 0.99)),
        "max": float(scores[-1]),
        "gpd_shape": tail.shape,
        "gpd_scale": tail.scale,
    }
    return Threshold(method, value, target_rate, dict(zip(BANDS, edges)), summary)


@dataclass(frozen=True)
class TailModel:
    """Generalised Pareto fit to the excesses over a high quantile (peaks over threshold)."""

    threshold: float
    exceed_rate: float
    shape: float
    scale: float

    @classmethod
    def fit(cls, sorted_scores: np.ndarray, tail_fraction: float) -> TailModel:
        n_tail = max(10, int(round(tail_fraction * sorted_scores.size)))
        u = float(sorted_scores[-n_tail - 1]) if n_tail < sorted_scores.size else float(sorted_scores[0])
        excess = sorted_scores[sorted_scores > u] - u
        if excess.size < 5 or np.ptp(excess) == 0:
            scale = float(excess.mean()) if excess.size else 1.0
            return cls(u, excess.size / sorted_scores.size, 0.0, max(scale, 1e-12))
        shape, _, scale = stats.genpareto.fit(excess, floc=0)
        return cls(u, excess.size / sorted_scores.size, float(shape), float(scale))

    def quantile(self, rate: float) -> float:
        """Score exceeded with probability `rate` (rate below the fitted tail's share)."""
        ratio = min(rate / self.exceed_rate, 1.0)
        if abs(self.shape) < 1e-6:
            return self.threshold - self.scale * np.log(ratio)
        return float(self.threshold + self.scale / self.shape * (ratio ** (-self.shape) - 1))
