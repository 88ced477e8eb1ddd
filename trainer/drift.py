"""Drift against the training reference: the reference a bundle stores, and the batch drift report.

The reference describes what the training traffic looked like, per field and for the anomaly
score, *as a function of the hour of day*, so that live traffic is always compared with training
traffic of the same hours (a 02:00 window with the 02:00 reference, never with the daily mix):

- numeric and boolean fields: the baseline mean and variance of the field's encoded value (the
  log-scaled, scaled model input) at hour h, fitted by least squares on harmonics
  ``F(h) = [1, sin d, cos d, sin 2d, cos 2d, sin w, cos w]`` (d the angle of the time of day, w of
  the day of week), and the quantiles
  of the de-seasonalised values (value minus the baseline mean at its hour);
- categorical fields: the share of each slot (frequent categories, then unseen/rare) at hour h,
  fitted the same way, and the overall shares;
- the score: baseline mean and variance of log(score).

The time of day and week come from the encoded timestamp block (the model's cyclic inputs).
Without a cyclic timestamp field, or when the training data does not cover the whole day (a
retraining window of one hour, say), the baseline is a constant, and without the whole week it
has no weekly terms: harmonics fitted on part of a cycle would extrapolate wildly to the rest.

`drift_report` is the batch view (`anomon drift --model DIR --data FILE`): per field, the file
against the reference, hour for hour.  Numeric and boolean fields: the population stability
index over the training deciles, the expected share of each decile being the mix of the
reference's shares at the file's hours (drift at PSI >= 0.2), and the Wasserstein-1 distance
between de-seasonalised values (in encoded units); categorical fields: the Jensen-Shannon
distance between the file's category shares and the shares expected at its hours (drift at
>= 0.1).

>>> from trainer.config import FieldSpec
>>> from trainer.encoding import Encoder
>>> rng = np.random.default_rng(0)
>>> hours = rng.uniform(0, 24, 5000)
>>> records = [{"t": f"2024-01-01T{int(h):02d}:{int(h % 1 * 60):02d}:00Z", "x": float(10 + 5 * np.cos(h / 24 * 2 * np.pi)
...             + rng.normal()), "c": "ab"[i % 2]} for i, h in enumerate(hours)]
>>> encoder = Encoder([FieldSpec("t", "timestamp"), FieldSpec("x", "numeric", log=False),
...                    FieldSpec("c", "categorical")]).fit(records)
>>> reference = Reference.fit(encoder, encoder.transform(records).X)
>>> reference.seasonal, sorted(reference.fields)  # one day: daily harmonics, no weekly ones
(5, ['c', 'x'])
>>> X = encoder.transform([{"t": "2024-01-02T00:00:00Z", "x": 15.0}, {"t": "2024-01-02T12:00:00Z", "x": 5.0}]).X
>>> np.abs(reference.z("x", day_features(encoder, X)[:, :5], X)).max() < 0.1  # both on their hour's baseline
np.True_
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.encoding import Encoder, OTHER, TimestampEncoder

REFERENCE_KEY = "drift_reference"  # where `fit` stores the reference in the bundle's training summary
SCORE = "_score"  # the score's stream name (and its `anomon_drift_detected_total` field label)
PSI_DRIFT = 0.2  # population stability index at or above which a numeric field has drifted
JS_DRIFT = 0.1  # Jensen-Shannon distance (base 2) at or above which a categorical field has drifted
_QUANTILES = np.linspace(0.0, 1.0, 101)
_MIN_HOUR_SHARE = 0.1  # each hour must hold a tenth of its fair share of records for a seasonal fit
_RIDGE = 1e-6
_SHRINK = 500  # training records an hour needs for half its own correction (see `_hourly`)
_SHRINK_SHARES = 50  # the same for an hour's bin shares


def day_features(encoder: Encoder, X: np.ndarray) -> np.ndarray:
    """Seasonal features of encoded rows, (n, 7): 1, sin d, cos d, sin 2d, cos 2d, sin w, cos w.

    d is the angle of the time of day, w of the day of week (the model sees both, so its scores
    can follow both).  Rows without an event time have zeros but for the constant term; without
    a cyclic timestamp field the features are the constant alone, (n, 1).
    """
    block = next((b for e, b in zip(encoder.encoders_, encoder.blocks)
                  if isinstance(e, TimestampEncoder) and e.spec.cyclic), None)
    ones = np.ones(len(X))
    if block is None:
        return ones[:, None]
    s, c, sw, cw = (X[:, block.start + i].astype(np.float64) for i in range(4))
    return np.stack([ones, s, c, 2 * s * c, c * c - s * s, sw, cw], axis=1)


def seasonal_columns(F: np.ndarray) -> int:
    """How many leading features of `F` training data pins down: 7 (a week covered), 5 (a day), else 1.

    Each hour of the day (and each day of the week) must hold a tenth of its fair share of the
    timed records; harmonics fitted on part of a cycle would extrapolate wildly to the rest.
    """
    if F.shape[1] == 1:
        return 1
    timed = hour_of_day(F) >= 0
    n = int(timed.sum())

    def covered(s: np.ndarray, c: np.ndarray, bins: int) -> bool:
        position = (np.arctan2(s, c) % (2 * np.pi)) * bins / (2 * np.pi)
        counts = np.bincount(np.minimum(position.astype(int), bins - 1), minlength=bins)
        return n >= 10 * bins and counts.min() >= _MIN_HOUR_SHARE * n / bins

    if not covered(F[timed, 1], F[timed, 2], 24):
        return 1
    return 7 if covered(F[timed, 5], F[timed, 6], 7) else 5


def _fit(F: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of Y (n,) or (n, k) on F (n, m), slightly ridged."""
    gram = F.T @ F + _RIDGE * len(F) * np.eye(F.shape[1])
    return np.linalg.solve(gram, F.T @ Y)


def hour_of_day(F: np.ndarray) -> np.ndarray:
    """Hour (0-23) of each row of day features; -1 for rows without a time (or features without one)."""
    if F.shape[1] < 3:
        return np.full(len(F), -1)
    hours = ((np.arctan2(F[:, 1], F[:, 2]) % (2 * np.pi)) * 24 / (2 * np.pi)).astype(int)
    return np.where((F[:, 1] != 0) | (F[:, 2] != 0), np.minimum(hours, 23), -1)


def _hourly(F: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Per-hour corrections of a harmonic baseline (steps such as business hours), shrunk towards 0.

    An hour's correction is its residuals' sum over (its records + _SHRINK): hours with few
    training records barely move the baseline, so their noise does not become a daily pattern.
    Entry 24 (rows without a time) is 0.
    """
    hours = hour_of_day(F)
    timed = hours >= 0
    sums = np.bincount(hours[timed], weights=residual[timed], minlength=24)
    counts = np.bincount(hours[timed], minlength=24)
    return np.append(sums / (counts + _SHRINK), 0.0)


@dataclass
class NumericReference:
    column: int
    indicator: int | None  # missing-indicator column, None for required fields
    mean: np.ndarray  # coefficients on the seasonal features
    hourly: np.ndarray  # 25 corrections of the mean: hours 0-23, then rows without a time
    var: np.ndarray
    quantiles: np.ndarray  # of the de-seasonalised training values
    var_floor: float
    edges: np.ndarray  # bin edges of the values (their distinct deciles), for the PSI
    shares: np.ndarray  # (25, bins): each bin's share at hours 0-23 (shrunk towards the day's), and overall

    def present(self, X: np.ndarray) -> np.ndarray:
        return np.ones(len(X), bool) if self.indicator is None else X[:, self.indicator] == 0

    def bins(self, values: np.ndarray) -> np.ndarray:
        """Bin of each value: (-inf, e0], (e0, e1], ..., (e_last, inf)."""
        return np.searchsorted(self.edges, values, side="left")

    def baseline(self, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected value and standard deviation at each row's time."""
        m = F.shape[1]
        mean = F @ self.mean[:m] + self.hourly[hour_of_day(F)]
        return mean, np.sqrt(np.maximum(F @ self.var[:m], self.var_floor))


@dataclass
class CategoricalReference:
    start: int
    stop: int
    categories: list[str]  # slot names; the last is OTHER (unseen or rare)
    coef: np.ndarray  # (features, slots)
    frequencies: np.ndarray

    def probabilities(self, F: np.ndarray) -> np.ndarray:
        p = np.clip(F @ self.coef[: F.shape[1]], 1e-4, None)
        return p / p.sum(axis=1, keepdims=True)


class Reference:
    """The training reference of a bundle (see the module docstring); JSON via `to_dict`/`from_dict`.

    Baselines take ``day_features(...)[:, :seasonal]``.
    """

    def __init__(self, seasonal: int, fields: dict[str, NumericReference | CategoricalReference],
                 score: NumericReference | None):
        self.seasonal = seasonal  # seasonal features used: 1 (none), 5 (daily) or 7 (daily and weekly)
        self.fields = fields
        self.score = score

    @classmethod
    def fit(cls, encoder: Encoder, X: np.ndarray, scores: tuple[np.ndarray, np.ndarray] | None = None) -> Reference:
        """From the encoded training records `X`; `scores`: (encoded rows, their scores)."""
        seasonal = seasonal_columns(day_features(encoder, X))
        F = day_features(encoder, X)[:, :seasonal]
        fields: dict[str, NumericReference | CategoricalReference] = {}
        for e, block in zip(encoder.encoders_, encoder.blocks):
            kind = e.spec.type
            if kind in ("numeric", "boolean"):
                indicator = None if e.spec.required else block.start + 1
                numeric = _numeric(F, X, block.start, indicator)
                if numeric is not None:
                    fields[e.spec.name] = numeric
            elif kind == "categorical":
                Y = X[:, block.start:block.stop].astype(np.float64)
                fields[e.spec.name] = CategoricalReference(block.start, block.stop, [*e.categories_, OTHER],
                                                   _fit(F, Y), Y.mean(axis=0))
        score = None
        if scores is not None:
            rows, values = scores
            finite = np.isfinite(values) & (values > 0)
            Fs = day_features(encoder, rows[finite])[:, : F.shape[1]]
            logs = np.log(values[finite])[:, None]
            score = _numeric(Fs, logs, 0, None)
        return cls(seasonal, fields, score)

    def z(self, field: str, F: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Standardised distance of each row's value from its hour's baseline; NaN where absent."""
        ref = self.fields[field]
        mean, std = ref.baseline(F)
        z = (X[:, ref.column] - mean) / std
        return np.where(ref.present(X), z, np.nan)

    def score_z(self, F: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The same for log(score)."""
        mean, std = self.score.baseline(F)
        return (np.log(np.maximum(scores, 1e-300)) - mean) / std

    def to_dict(self) -> dict[str, Any]:
        def numeric(n: NumericReference) -> dict[str, Any]:
            return {"kind": "numeric", "column": n.column, "indicator": n.indicator, "mean": n.mean.tolist(),
                    "hourly": n.hourly.tolist(), "var": n.var.tolist(), "quantiles": n.quantiles.tolist(),
                    "var_floor": n.var_floor, "edges": n.edges.tolist(), "shares": n.shares.tolist()}

        def categorical(c: CategoricalReference) -> dict[str, Any]:
            return {"kind": "categorical", "start": c.start, "stop": c.stop, "categories": c.categories,
                    "coef": c.coef.tolist(), "frequencies": c.frequencies.tolist()}

        return {"seasonal": self.seasonal,
                "fields": {name: numeric(r) if isinstance(r, NumericReference) else categorical(r)
                           for name, r in self.fields.items()},
                "score": numeric(self.score) if self.score is not None else None}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Reference:
        def numeric(d: dict[str, Any]) -> NumericReference:
            return NumericReference(d["column"], d["indicator"], np.array(d["mean"]), np.array(d["hourly"]),
                            np.array(d["var"]), np.array(d["quantiles"]), d["var_floor"], np.array(d["edges"]),
                            np.array(d["shares"]))

        fields = {name: numeric(d) if d["kind"] == "numeric" else
                  CategoricalReference(d["start"], d["stop"], d["categories"], np.array(d["coef"]),
                                       np.array(d["frequencies"]))
                  for name, d in state["fields"].items()}
        return cls(state["seasonal"], fields, numeric(state["score"]) if state.get("score") else None)

    @classmethod
    def of(cls, training: dict[str, Any]) -> Reference | None:
        """The reference in a bundle's training summary; None for bundles trained before it existed."""
        state = training.get(REFERENCE_KEY)
        return cls.from_dict(state) if state else None


def _numeric(F: np.ndarray, X: np.ndarray, column: int, indicator: int | None) -> NumericReference | None:
    present = np.ones(len(X), bool) if indicator is None else X[:, indicator] == 0
    if present.sum() < 10:
        return None
    y = X[present, column].astype(np.float64)
    Fp = F[present]
    mean = _fit(Fp, y)
    hourly = _hourly(Fp, y - Fp @ mean) if F.shape[1] > 1 else np.zeros(25)
    residual = y - Fp @ mean - hourly[hour_of_day(Fp)]
    var = _fit(Fp, residual**2)
    floor = max(1e-3 * float(residual.var()), 1e-12)
    edges = np.unique(np.quantile(y, np.linspace(0.1, 0.9, 9)))
    bins = np.searchsorted(edges, y, side="left")
    overall = np.bincount(bins, minlength=len(edges) + 1) / len(y)
    hours = hour_of_day(Fp)
    shares = np.empty((25, len(edges) + 1))
    for h in range(24):
        counts = np.bincount(bins[hours == h], minlength=len(edges) + 1)
        shares[h] = (counts + _SHRINK_SHARES * overall) / (counts.sum() + _SHRINK_SHARES)
    shares[24] = overall
    return NumericReference(column, indicator, mean, hourly, var, np.quantile(residual, _QUANTILES), floor,
                            edges, shares)


# -- the batch report -----------------------------------------------------------------------------


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two sets of bin shares (or counts).

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])), 6), round(psi(np.array([0.5, 0.5]), np.array([0.8, 0.2])), 3)
    (0.0, 0.416)
    """
    expected = np.maximum(expected / expected.sum(), 1e-4)
    actual = np.maximum(actual / actual.sum(), 1e-4)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def wasserstein(reference_quantiles: np.ndarray, values: np.ndarray) -> float:
    """Wasserstein-1 distance between the reference (its quantiles) and `values`: mean |quantile gap|."""
    return float(np.mean(np.abs(np.quantile(values, _QUANTILES) - reference_quantiles)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two distributions.

    >>> js_distance(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    0.0
    >>> round(js_distance(np.array([1.0, 0]), np.array([0, 1.0])), 6)
    1.0
    """
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def drift_report(encoder: Encoder, reference: Reference, chunks: Iterable[list[dict[str, Any]]]) -> dict[str, Any]:
    """Per field: the records of `chunks` against `reference`, de-seasonalised; see the module docstring."""
    numeric = [n for n, r in reference.fields.items() if isinstance(r, NumericReference)]
    residuals: dict[str, list[np.ndarray]] = {n: [] for n in numeric}
    observed = {n: np.zeros(len(r.shares[0]) if n in numeric else len(r.categories))
                for n, r in reference.fields.items()}
    expected = {n: np.zeros_like(counts) for n, counts in observed.items()}
    n_records = 0
    for chunk in chunks:
        encoded = encoder.transform(chunk)
        X = encoded.X[encoded.valid]
        F = day_features(encoder, X)[:, : reference.seasonal]
        n_records += len(X)
        for name, ref in reference.fields.items():
            if name in residuals:
                present = ref.present(X)
                values = X[present, ref.column]
                residuals[name].append(values - ref.baseline(F[present])[0])
                observed[name] += np.bincount(ref.bins(values), minlength=len(observed[name]))
                expected[name] += ref.shares[hour_of_day(F[present])].sum(axis=0)
            else:
                observed[name] += X[:, ref.start:ref.stop].sum(axis=0)
                expected[name] += ref.probabilities(F).sum(axis=0)
    fields: dict[str, Any] = {}
    for name, parts in residuals.items():
        ref = reference.fields[name]
        values = np.concatenate(parts) if parts else np.zeros(0)
        if values.size == 0:
            fields[name] = {"type": "numeric", "records": 0, "drift": False}
            continue
        value = psi(expected[name], observed[name])
        fields[name] = {
            "type": "numeric", "records": int(values.size), "psi": round(value, 4),
            "wasserstein": round(wasserstein(ref.quantiles, values), 4),
            "reference_median": _raw(encoder, name, ref, float(ref.quantiles[50])),
            "current_median": _raw(encoder, name, ref, float(np.median(values))),
            "drift": value >= PSI_DRIFT,
            "reference_quantiles": ref.quantiles.tolist(),
            "current_quantiles": np.quantile(values, _QUANTILES).tolist(),
        }
    for name, counts in observed.items():
        ref = reference.fields[name]
        if name in residuals:
            continue
        if counts.sum() == 0:
            fields[name] = {"type": "categorical", "records": 0, "drift": False}
            continue
        distance = js_distance(expected[name], counts)
        fields[name] = {
            "type": "categorical", "records": int(counts.sum()), "jensen_shannon": round(distance, 4),
            "drift": distance >= JS_DRIFT,
            "reference": dict(zip(ref.categories, np.round(expected[name] / expected[name].sum(), 4).tolist())),
            "current": dict(zip(ref.categories, np.round(counts / counts.sum(), 4).tolist())),
        }
    return {"records": n_records, "seasonal": reference.seasonal,
            "thresholds": {"psi": PSI_DRIFT, "jensen_shannon": JS_DRIFT}, "fields": fields,
            "drifted": sorted(n for n, f in fields.items() if f["drift"])}


def _raw(encoder: Encoder, name: str, ref: NumericReference, residual: float) -> float:
    """A de-seasonalised encoded value in the field's own units, at the day's average baseline."""
    e = encoder.encoder_for(name)
    t = residual + float(ref.mean[0])
    return round(float(e.unscaled(np.array([t]))[0]) if hasattr(e, "unscaled") else t, 6)


def format_report(report: dict[str, Any]) -> str:
    """The terminal summary table of a `drift_report`."""
    lines = [f"{'field':<20} {'type':<12} {'records':>9} {'statistic':>22} {'reference':>12} {'current':>12}  verdict"]
    for name, f in report["fields"].items():
        if f["records"] == 0:
            stat, before, after = "-", "-", "-"
        elif f["type"] == "numeric":
            stat, before, after = f"PSI {f['psi']:.3f} W1 {f['wasserstein']:.3f}", f"{f['reference_median']:.4g}", \
                f"{f['current_median']:.4g}"
        else:
            stat = f"JS {f['jensen_shannon']:.3f}"
            before, after = (max(f[k], key=f[k].get) for k in ("reference", "current"))
        lines.append(f"{name:<20} {f['type']:<12} {f['records']:>9} {stat:>22} {before:>12.12} {after:>12.12}  "
                     f"{'DRIFT' if f['drift'] else 'ok'}")
    lines.append(f"{len(report['drifted'])} of {len(report['fields'])} fields drifted"
                 + (f": {', '.join(report['drifted'])}" if report["drifted"] else ""))
    return "\n".join(lines)


def write_drift_report(report: dict[str, Any], directory: str | Path) -> list[Path]:
    """`drift.json` and one PNG per drifted field (reference against current distribution)."""
    from trainer.report import _figure, _save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "drift.json"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    for name in report["drifted"]:
        f = report["fields"][name]
        fig = _figure(6, 3.5)
        ax = fig.add_subplot()
        if f["type"] == "numeric":
            ax.plot(f["reference_quantiles"], _QUANTILES, label="training reference")
            ax.plot(f["current_quantiles"], _QUANTILES, label="current")
            ax.set_xlabel("encoded value, hour-of-day baseline removed")
            ax.set_ylabel("cumulative share")
            ax.set_title(f"{name}: PSI {f['psi']:.3f}")
        else:
            top = sorted(f["reference"], key=lambda c: -max(f["reference"][c], f["current"][c]))[:12]
            x = np.arange(len(top))
            ax.bar(x - 0.2, [f["reference"][c] for c in top], 0.4, label="training reference")
            ax.bar(x + 0.2, [f["current"][c] for c in top], 0.4, label="current")
            ax.set_xticks(x, top, rotation=45, ha="right")
            ax.set_ylabel("share")
            ax.set_title(f"{name}: Jensen-Shannon {f['jensen_shannon']:.3f}")
        ax.legend()
        written.append(_save(fig, directory / f"drift_{name}.png"))
    return written
