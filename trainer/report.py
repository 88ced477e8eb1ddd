"""Report plots and files for an evaluated anomaly-score run.

matplotlib is an optional dependency (the ``report`` extra): it is imported
only when a plot is drawn, so ``import trainer.report`` always works. Figures
are drawn on a private Agg canvas rather than through ``pyplot``, so no global
backend is switched and no figure is left open.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from trainer.evaluation import is_anomaly, pr_auc, pr_curve, roc_auc, roc_curve
from trainer.files import atomic_write, atomic_write_text

__all__ = [
    "plot_image_grid",
    "plot_roc_pr",
    "plot_score_histogram",
    "plot_scores_by_index",
    "write_report",
]

#: Most legend entries per plot; rarer labels are merged into :data:`OTHER`.
MAX_GROUPS = 8
OTHER = "other"
_MISSING_MATPLOTLIB = "plots need the 'report' extra: pip install 'anomon[report]'"
_THRESHOLD_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1}


def _figure(width: float, height: float):
    """A new matplotlib Figure attached to an Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError(_MISSING_MATPLOTLIB) from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as stream:  # a reader never sees half an image
        fig.savefig(stream, format=path.suffix.lstrip(".") or "png", dpi=100)
    return path


def _check_scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels).astype(str)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels has shape {labels.shape} but scores has shape {scores.shape}")
    return scores, labels


def _group_labels(labels: np.ndarray, max_groups: int = MAX_GROUPS) -> tuple[np.ndarray, list[str]]:
    """Keep the most frequent labels and merge the rest into ``OTHER``.

    Returns the grouped labels and the group names, most frequent first.

    Examples
    --------
    >>> grouped, names = _group_labels(np.array(["a", "a", "b", "c"]), max_groups=2)
    >>> grouped.tolist(), names
    (['a', 'a', 'other', 'other'], ['a', 'other'])
    """
    values, counts = np.unique(labels, return_counts=True)
    ranked = values[np.argsort(-counts, kind="stable")].tolist()
    if len(ranked) <= max_groups:
        return labels, ranked
    keep = ranked[: max_groups - 1]
    grouped = np.where(np.isin(labels, keep), labels, OTHER)
    return grouped, list(dict.fromkeys([*keep, OTHER]))


def _spans_decades(scores: np.ndarray) -> bool:
    """Whether positive scores cover two or more decades, so a log axis reads better."""
    low, high = scores.min(), scores.max()
    return bool(low > 0 and high / low >= 100)


def _bin_edges(scores: np.ndarray, bins: int) -> np.ndarray | int:
    low, high = scores.min(), scores.max()
    if low == high:
        return bins  # numpy widens a degenerate range itself
    if _spans_decades(scores):
        return np.geomspace(low, high, bins + 1)
    return np.linspace(low, high, bins + 1)


def plot_score_histogram(
    scores: ArrayLike, labels: ArrayLike, threshold: float, path: str | Path, *, bins: int = 50
) -> Path:
    """Histogram of scores per label with the threshold as a vertical line.

    Each label's histogram is normalised to sum to 1, so rare attack labels stay
    visible next to the normal majority. Bins are log-spaced when the scores
    span two or more decades.

    Parameters
    ----------
    scores
        Anomaly scores, higher = more anomalous.
    labels
        One label per record; rare labels are grouped as ``"other"``.
    threshold
        The alerting threshold.
    path
        Where to write the PNG.
    bins
        Number of bins.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "hist.png"
    >>> plot_score_histogram([0.1, 0.2, 3.0], ["normal", "normal", "dos"], 1.0, out).exists()
    True
    """
    scores, labels = _check_scores_labels(scores, labels)
    grouped, names = _group_labels(labels)
    edges = _bin_edges(scores, bins)
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    for name in names:
        group = scores[grouped == name]
        weights = np.full(group.size, 1 / group.size)
        ax.hist(group, bins=edges, weights=weights, histtype="step", linewidth=1.5, label=f"{name} ({group.size})")
    ax.axvline(threshold, label=f"threshold {threshold:.3g}", **_THRESHOLD_STYLE)
    if _spans_decades(scores):
        ax.set_xscale("log")
    ax.set(xlabel="anomaly score", ylabel="fraction of label", title="Score distribution by label")
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_scores_by_index(scores: ArrayLike, labels: ArrayLike, threshold: float, path: str | Path) -> Path:
    """Scatter of score against record index, coloured by label, with the threshold line.

    Parameters
    ----------
    scores
        Anomaly scores in record order.
    labels
        One label per record; rare labels are grouped as ``"other"``.
    threshold
        The alerting threshold.
    path
        Where to write the PNG.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "index.png"
    >>> plot_scores_by_index([0.1, 0.2, 3.0], ["normal", "normal", "dos"], 1.0, out).exists()
    True
    """
    scores, labels = _check_scores_labels(scores, labels)
    grouped, names = _group_labels(labels)
    index = np.arange(scores.size)
    fig = _figure(9, 4.5)
    ax = fig.subplots()
    for name in names:
        mask = grouped == name
        # Rasterised points keep the PNG small for hundreds of thousands of records.
        ax.scatter(index[mask], scores[mask], s=4, rasterized=True, label=f"{name} ({mask.sum()})")
    ax.axhline(threshold, label=f"threshold {threshold:.3g}", **_THRESHOLD_STYLE)
    if _spans_decades(scores):
        ax.set_yscale("log")
    ax.set(xlabel="record index", ylabel="anomaly score", title="Scores by record")
    ax.legend(fontsize="small", markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def plot_roc_pr(y_true: ArrayLike, scores: ArrayLike, path: str | Path) -> Path:
    """ROC and precision-recall curves side by side, AUCs in the legends.

    Parameters
    ----------
    y_true
        Binary ground truth, ``True`` (or 1) for anomalies; both classes needed.
    scores
        Anomaly scores, higher = more anomalous.
    path
        Where to write the PNG.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "roc_pr.png"
    >>> plot_roc_pr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], out).exists()
    True
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    precision, recall, _ = pr_curve(y_true, scores)
    fig = _figure(11, 4.5)
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc_ax.plot(fpr, tpr, label=f"ROC AUC = {roc_auc(y_true, scores):.4f}")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    # Average precision holds each point's precision back to the previous recall: a 'pre' step.
    pr_ax.step(recall, precision, where="pre", label=f"PR AUC (AP) = {pr_auc(y_true, scores):.4f}")
    pr_ax.axhline(np.mean(np.asarray(y_true, dtype=bool)), color="grey", linestyle=":", label="chance")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower right" if ax is roc_ax else "lower left")
    return _save(fig, path)


def plot_image_grid(
    images: ArrayLike,
    reconstructions: ArrayLike,
    titles: Sequence[str],
    path: str | Path,
    shape: tuple[int, int] = (28, 28),
    *,
    max_columns: int = 10,
) -> Path:
    """Items in a grid, each with its reconstruction directly beneath.

    Parameters
    ----------
    images
        ``n`` items, flat (``n, h*w``) or already shaped (``n, h, w``).
    reconstructions
        The model's reconstruction of each item, same size as ``images``.
    titles
        One title per item, e.g. label and score.
    path
        Where to write the PNG.
    shape
        ``(h, w)`` of one image.
    max_columns
        Items per row before wrapping to a new pair of rows.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "grid.png"
    >>> rng = np.random.default_rng(0)
    >>> plot_image_grid(rng.random((3, 16)), rng.random((3, 16)), ["a", "b", "c"], out, shape=(4, 4)).exists()
    True
    """
    images = np.asarray(images, dtype=float).reshape(-1, *shape)
    reconstructions = np.asarray(reconstructions, dtype=float).reshape(-1, *shape)
    if len(images) == 0 or reconstructions.shape != images.shape or len(titles) != len(images):
        raise ValueError(
            f"need matching, non-empty images ({len(images)}), reconstructions ({len(reconstructions)}) "
            f"and titles ({len(titles)})"
        )
    columns = min(len(images), max_columns)
    blocks = math.ceil(len(images) / columns)
    fig = _figure(1.4 * columns, 3.0 * blocks)
    axes = fig.subplots(2 * blocks, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (image, reconstruction, title) in enumerate(zip(images, reconstructions, titles)):
        block, column = divmod(i, columns)
        # One grey scale per pair, so the reconstruction error is visible as a contrast difference.
        scale = {"vmin": min(image.min(), reconstruction.min()), "vmax": max(image.max(), reconstruction.max())}
        axes[2 * block, column].imshow(image, cmap="gray", **scale)
        axes[2 * block, column].set_title(title, fontsize=7)
        axes[2 * block + 1, column].imshow(reconstruction, cmap="gray", **scale)
    fig.suptitle("input (top) and reconstruction (below)", fontsize=9)
    return _save(fig, path)


def write_report(
    report_dir: str | Path,
    scores: ArrayLike,
    labels: ArrayLike,
    normal_value: object,
    threshold: float,
    metrics: dict,
    images: ArrayLike | None = None,
    reconstructions: ArrayLike | None = None,
    titles: Sequence[str] | None = None,
    *,
    n_top: int = 10,
    image_shape: tuple[int, int] = (28, 28),
) -> list[Path]:
    """Write ``metrics.json`` and the report plots into ``report_dir``.

    Files: ``metrics.json``, ``score_histogram.png``, ``scores_by_index.png``,
    ``roc_pr.png`` (only when the labels hold both classes) and
    ``top_anomalies.png`` (only when ``images`` are given). ``metrics.json``
    is written first, so it exists even if matplotlib is missing.

    Parameters
    ----------
    report_dir
        Output directory, created if needed.
    scores
        Anomaly scores, higher = more anomalous.
    labels
        One label per record.
    normal_value
        The label of normal records; all others are anomalies.
    threshold
        The alerting threshold.
    metrics
        JSON-serialisable metrics, typically from :func:`trainer.evaluation.evaluate`.
    images, reconstructions
        One input and its reconstruction per record, aligned with ``scores``;
        the ``n_top`` highest-scoring records are plotted.
    titles
        One title per record; defaults to label and score.
    n_top
        How many of the most anomalous records to plot.
    image_shape
        ``(h, w)`` of one image.

    Returns
    -------
    list of Path
        The files written, ``metrics.json`` first.

    Raises
    ------
    RuntimeError
        If matplotlib is not installed (after ``metrics.json`` is written).

    Examples
    --------
    >>> import tempfile
    >>> paths = write_report(
    ...     tempfile.mkdtemp(), [0.1, 0.4, 0.35, 0.8], ["ok", "ok", "bad", "bad"],
    ...     "ok", 0.5, {"roc_auc": 0.75},
    ... )
    >>> [p.name for p in paths]
    ['metrics.json', 'score_histogram.png', 'scores_by_index.png', 'roc_pr.png']
    """
    if (images is None) != (reconstructions is None):
        raise ValueError("images and reconstructions must be given together")
    scores, str_labels = _check_scores_labels(scores, labels)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = report_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    paths = [
        metrics_path,
        plot_score_histogram(scores, str_labels, threshold, report_dir / "score_histogram.png"),
        plot_scores_by_index(scores, str_labels, threshold, report_dir / "scores_by_index.png"),
    ]
    y_true = is_anomaly(labels, normal_value)
    if 0 < y_true.sum() < y_true.size:  # ROC and PR are undefined for a single class
        paths.append(plot_roc_pr(y_true, scores, report_dir / "roc_pr.png"))
    if images is not None:
        top = np.argsort(-scores, kind="stable")[:n_top]
        top_titles = [titles[i] if titles is not None else f"{str_labels[i]}\n{scores[i]:.3g}" for i in top]
        paths.append(
            plot_image_grid(
                np.asarray(images)[top],
                np.asarray(reconstructions)[top],
                top_titles,
                report_dir / "top_anomalies.png",
                image_shape,
            )
        )
    return paths
