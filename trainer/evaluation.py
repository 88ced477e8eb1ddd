"""Evaluation metrics for anomaly scores.

Pure numpy functions over anomaly scores (higher = more anomalous) and binary
ground truth (``True`` = anomaly). A record is *flagged* when
``score >= threshold``; the curves use the same convention, so a threshold
returned by :func:`roc_curve`, :func:`pr_curve` or :func:`best_f1_threshold`
reproduces its point exactly when passed to :func:`precision_recall_f1`.

:func:`roc_auc` and :func:`pr_auc` follow scikit-learn's ``roc_auc_score`` and
``average_precision_score``: tied scores are flagged together, so they form a
single curve point.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "best_f1_threshold",
    "evaluate",
    "is_anomaly",
    "per_label_table",
    "pr_auc",
    "pr_curve",
    "precision_recall_f1",
    "roc_auc",
    "roc_curve",
]


def _as_binary(y: ArrayLike, name: str) -> np.ndarray:
    """Return ``y`` as a 1-D bool array, rejecting anything but bool or 0/1 values."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.dtype != bool and (y.dtype.kind not in "iuf" or not np.isin(y, (0, 1)).all()):
        raise ValueError(f"{name} must be binary (bool or 0/1), got values such as {np.unique(y)[:5]}")
    return y.astype(bool)


def _check_scores(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate aligned, non-empty ground truth and finite scores."""
    y = _as_binary(y_true, "y_true")
    s = np.asarray(scores, dtype=float)
    if s.shape != y.shape:
        raise ValueError(f"scores has shape {s.shape} but y_true has shape {y.shape}")
    if y.size == 0:
        raise ValueError("y_true and scores are empty")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return y, s


def _safe_div(num: ArrayLike, den: ArrayLike, empty: float = 0.0) -> np.ndarray:
    """``num / den`` with ``empty`` where ``den == 0`` (e.g. precision when nothing is flagged)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, empty)
    return np.divide(num, den, out=out, where=den > 0)


def _f1(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike) -> np.ndarray:
    """F1 from counts; equals 2PR / (P + R) and is 0 when there is no true positive."""
    tp = np.asarray(tp, dtype=float)
    return _safe_div(2 * tp, 2 * tp + fp + fn)


def _curve_counts(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when flagging ``score >= t`` for each curve threshold ``t``.

    Thresholds are ``inf`` (nothing flagged) followed by the distinct scores in
    decreasing order.
    """
    y, s = _check_scores(y_true, scores)
    n_pos = int(y.sum())
    if n_pos in (0, y.size):
        only = "anomalies" if n_pos else "normal records"
        raise ValueError(f"y_true holds only {only}; ROC and PR metrics need both classes")
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    # Last index of each run of tied scores: a tie is flagged all at once.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    return np.r_[0, tps], np.r_[0, fps], np.r_[np.inf, s[last]]


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve points, one per distinct score.

    Parameters
    ----------
    y_true
        Binary ground truth, ``True`` (or 1) for anomalies.
    scores
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    fpr, tpr, thresholds
        False and true positive rates when flagging ``score >= thresholds[i]``.
        Thresholds decrease, starting at ``inf`` so the curve starts at (0, 0).

    Raises
    ------
    ValueError
        If ``y_true`` holds a single class.

    Examples
    --------
    >>> fpr, tpr, thresholds = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr
    array([0. , 0. , 0.5, 0.5, 1. ])
    >>> tpr
    array([0. , 0.5, 0.5, 1. , 1. ])
    >>> thresholds
    array([ inf, 0.8 , 0.4 , 0.35, 0.1 ])
    """
    tps, fps, thresholds = _curve_counts(y_true, scores)
    return fps / fps[-1], tps / tps[-1], thresholds


def pr_curve(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve points, one per distinct score.

    Parameters
    ----------
    y_true
        Binary ground truth, ``True`` (or 1) for anomalies.
    scores
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    precision, recall, thresholds
        Precision and recall when flagging ``score >= thresholds[i]``.
        Thresholds decrease, starting at ``inf`` with the conventional point
        precision 1, recall 0 (as scikit-learn's ``precision_recall_curve``).

    Raises
    ------
    ValueError
        If ``y_true`` holds a single class.

    Examples
    --------
    >>> precision, recall, thresholds = pr_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> precision.round(3)
    array([1.   , 1.   , 0.5  , 0.667, 0.5  ])
    >>> recall
    array([0. , 0.5, 0.5, 1. , 1. ])
    """
    tps, fps, thresholds = _curve_counts(y_true, scores)
    return _safe_div(tps, tps + fps, empty=1.0), tps / tps[-1], thresholds


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (trapezoidal, so a tie counts one half).

    Agrees with scikit-learn's ``roc_auc_score``.

    Parameters
    ----------
    y_true
        Binary ground truth, ``True`` (or 1) for anomalies.
    scores
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    float
        Probability that a random anomaly scores above a random normal record.

    Raises
    ------
    ValueError
        If ``y_true`` holds a single class.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Average precision: ``sum_k (R_k - R_{k-1}) * P_k`` over the PR curve points.

    Exactly scikit-learn's ``average_precision_score`` (no interpolation; tied
    scores form one point).

    Parameters
    ----------
    y_true
        Binary ground truth, ``True`` (or 1) for anomalies.
    scores
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    float
        Average precision in [0, 1].

    Raises
    ------
    ValueError
        If ``y_true`` holds a single class.

    Examples
    --------
    >>> round(pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    precision, recall, _ = pr_curve(y_true, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def precision_recall_f1(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float | int]:
    """Precision, recall, F1 and confusion counts of binary predictions.

    A ratio whose denominator is zero is reported as 0 (scikit-learn's
    ``zero_division=0``), so the result is defined for any input.

    Parameters
    ----------
    y_true
        Binary ground truth, ``True`` (or 1) for anomalies.
    y_pred
        Binary predictions, ``True`` (or 1) for flagged records.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (floats) and ``tp``, ``fp``, ``tn``, ``fn`` (ints).

    Examples
    --------
    >>> precision_recall_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    {'precision': 0.666..., 'recall': 0.666..., 'f1': 0.666...,
     'tp': 2, 'fp': 1, 'tn': 1, 'fn': 1}
    """
    y = _as_binary(y_true, "y_true")
    pred = _as_binary(y_pred, "y_pred")
    if pred.shape != y.shape:
        raise ValueError(f"y_pred has shape {pred.shape} but y_true has shape {y.shape}")
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    return {
        "precision": float(_safe_div(tp, tp + fp)),
        "recall": float(_safe_div(tp, tp + fn)),
        "f1": float(_f1(tp, fp, fn)),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def best_f1_threshold(y_true: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Threshold maximising F1 when flagging ``score >= threshold``.

    Parameters
    ----------
    y_true
        Binary ground truth, ``True`` (or 1) for anomalies.
    scores
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    threshold, f1
        The threshold is one of the scores; among equal F1 values the highest
        threshold (fewest alerts) wins.

    Raises
    ------
    ValueError
        If ``y_true`` holds a single class.

    Examples
    --------
    >>> threshold, f1 = best_f1_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> threshold, round(f1, 3)
    (0.35, 0.8)
    """
    tps, fps, thresholds = _curve_counts(y_true, scores)
    f1 = _f1(tps, fps, tps[-1] - tps)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def is_anomaly(labels: ArrayLike, normal_value: object) -> np.ndarray:
    """Ground truth from labels: every label other than ``normal_value`` is an anomaly.

    Examples
    --------
    >>> is_anomaly(["normal", "dos", "normal", "probe"], "normal")
    array([False,  True, False,  True])
    """
    return np.asarray(labels) != normal_value


def per_label_table(labels: ArrayLike, flagged: ArrayLike) -> list[dict[str, str | int | float]]:
    """Share of records flagged for each label value.

    For anomaly labels this is the detection rate (recall of that label); for
    the normal label it is the false alarm rate, i.e. ``1 - accuracy(normal)``.

    Parameters
    ----------
    labels
        One label per record (compared as strings).
    flagged
        Bool, ``True`` where the record was flagged.

    Returns
    -------
    list of dict
        ``label``, ``count``, ``flagged`` and ``detection_rate`` per label,
        most frequent label first (ties alphabetically).

    Examples
    --------
    >>> for row in per_label_table(["normal", "dos", "normal"], [False, True, True]):
    ...     print(row)
    {'label': 'normal', 'count': 2, 'flagged': 1, 'detection_rate': 0.5}
    {'label': 'dos', 'count': 1, 'flagged': 1, 'detection_rate': 1.0}
    """
    labels = np.asarray(labels).astype(str)
    hit = _as_binary(flagged, "flagged")
    if labels.shape != hit.shape:
        raise ValueError(f"flagged has shape {hit.shape} but labels has shape {labels.shape}")
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=hit, minlength=values.size).astype(int)
    # np.unique sorted the values, so a stable sort on count keeps ties alphabetical.
    return [
        {
            "label": str(values[i]),
            "count": int(counts[i]),
            "flagged": int(hits[i]),
            "detection_rate": float(hits[i] / counts[i]),
        }
        for i in np.argsort(-counts, kind="stable")
    ]


def _at_threshold(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Metrics when flagging ``score >= threshold``, the threshold included."""
    return {"threshold": float(threshold), **precision_recall_f1(y, scores >= threshold)}


def evaluate(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    normal_value: object,
    threshold: float,
    bands: dict[str, float] | None = None,
) -> dict:
    """All metrics of a scored, labelled data set as a JSON-serialisable dict.

    Parameters
    ----------
    scores
        Anomaly scores, higher = more anomalous.
    labels
        One label per record; anomalies are labels other than ``normal_value``.
    normal_value
        The label of normal records.
    threshold
        The alerting threshold; records with ``score >= threshold`` are flagged.
    bands
        Severity band name -> lower score edge. Each edge is evaluated as if it
        were the threshold.

    Returns
    -------
    dict
        ``n``, ``n_positive``, ``roc_auc``, ``pr_auc``, ``at_threshold``,
        ``at_bands`` (band -> metrics), ``best_f1`` and ``per_label``. Each
        metrics entry holds ``threshold``, ``precision``, ``recall``, ``f1``,
        ``tp``, ``fp``, ``tn``, ``fn``. When the labels hold a single class,
        ``roc_auc``, ``pr_auc`` and ``best_f1`` are ``None`` since they are
        undefined, while the threshold metrics and per-label table remain.

    Examples
    --------
    >>> report = evaluate(
    ...     [0.1, 0.4, 0.35, 0.8], ["ok", "ok", "bad", "bad"],
    ...     normal_value="ok", threshold=0.5, bands={"high": 0.3},
    ... )
    >>> report["roc_auc"], report["at_threshold"]["recall"], report["at_bands"]["high"]["fp"]
    (0.75, 0.5, 1)
    >>> report["best_f1"]["threshold"], report["per_label"][0]["label"]
    (0.35, 'bad')
    """
    y = is_anomaly(labels, normal_value)
    y, s = _check_scores(y, scores)
    n_positive = int(y.sum())
    both_classes = 0 < n_positive < y.size
    best = _at_threshold(y, s, best_f1_threshold(y, s)[0]) if both_classes else None
    return {
        "n": int(y.size),
        "n_positive": n_positive,
        "roc_auc": roc_auc(y, s) if both_classes else None,
        "pr_auc": pr_auc(y, s) if both_classes else None,
        "at_threshold": _at_threshold(y, s, threshold),
        "at_bands": {band: _at_threshold(y, s, edge) for band, edge in (bands or {}).items()},
        "best_f1": best,
        "per_label": per_label_table(labels, s >= threshold),
    }
