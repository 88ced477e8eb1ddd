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
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from trainer.evaluation import is_anomaly, pr_auc, pr_curve, roc_auc, roc_curve
from trainer.files import atomic_write, atomic_write_text

__all__ = [
    "Projection",
    "RecordSample",
    "plot_field_errors",
    "plot_image_grid",
    "plot_latent_map",
    "plot_roc_pr",
    "plot_score_histogram",
    "plot_scores_by_index",
    "principal_components",
    "rank_fields",
    "write_report",
]

#: Most legend entries per plot; rarer labels are merged into :data:`OTHER`.
MAX_GROUPS = 8
OTHER = "other"
#: Most fields in the field-error plot: the highest ranked by :func:`rank_fields`.
MAX_FIELDS = 12
_MISSING_MATPLOTLIB = "plots need the 'report' extra: pip install 'anomon[report]'"
_THRESHOLD_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1}
_NORMAL_STYLE = {"color": "0.6", "alpha": 0.3}  # normal records faint and first, so anomalies show on top
_ANOMALY_COLOR = "tab:red"


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


class Projection(NamedTuple):
    """Rows projected on their principal components (see :func:`principal_components`)."""

    points: np.ndarray  # (n, k) coordinates of the rows on the components
    components: np.ndarray  # (k, d) unit directions, largest variance first
    explained: np.ndarray  # (k,) share of the total variance along each component


def principal_components(rows: ArrayLike, k: int = 2) -> Projection:
    """PCA of ``rows`` (n, d) by SVD of the centred rows: the ``k`` directions of largest variance.

    Each component's sign is fixed so that its largest loading is positive, so the same
    rows always give the same picture. Fewer than ``k`` components come back when
    ``min(n, d) < k``; constant rows explain a share of 0.

    Examples
    --------
    >>> p = principal_components([[0, 0], [1, 1], [2, 2], [3, 3]], k=1)
    >>> np.round(p.components, 4).tolist(), np.round(p.explained, 4).tolist()
    ([[0.7071, 0.7071]], [1.0])
    >>> np.round(p.points[:, 0], 3).tolist()
    [-2.121, -0.707, 0.707, 2.121]
    """
    rows = np.asarray(rows, dtype=float)
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"rows must be a non-empty 2-D array, got shape {rows.shape}")
    centred = rows - rows.mean(axis=0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    directions = directions[:k]
    largest = np.abs(directions).argmax(axis=1)
    directions = directions * np.sign(directions[np.arange(len(directions)), largest])[:, None]
    variance = singular**2
    total = variance.sum()
    explained = variance[: len(directions)] / total if total > 0 else np.zeros(len(directions))
    return Projection(centred @ directions.T, directions, explained)


def plot_latent_map(codes: ArrayLike, labels: ArrayLike, path: str | Path, *, normal_value: object = "normal") -> Path:
    """The bottleneck codes on their first two principal components, coloured by label.

    Normal records are drawn first and faint, so anomalies show on top; the axis labels give
    each component's share of the codes' variance. A 1-wide bottleneck has nothing to
    project: the plot is then a histogram of the code per label, each normalised to sum to 1.

    Parameters
    ----------
    codes
        Bottleneck codes, one row per record (``n, width``).
    labels
        One label per record; rare labels are grouped as ``"other"``.
    path
        Where to write the PNG.
    normal_value
        The label of normal records.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "latent.png"
    >>> codes = np.random.default_rng(0).normal(size=(30, 3))
    >>> plot_latent_map(codes, ["normal"] * 25 + ["dos"] * 5, out).exists()
    True
    """
    codes = np.asarray(codes, dtype=float)
    labels = np.asarray(labels).astype(str)
    if codes.ndim != 2 or codes.shape[1] == 0 or len(codes) != len(labels) or len(codes) == 0:
        raise ValueError(f"need non-empty codes (n, width) and n labels, got {codes.shape} and {labels.shape}")
    grouped, names = _group_labels(labels)
    names.sort(key=lambda name: name != str(normal_value))  # stable: the normal group first
    fig = _figure(7, 5.5)
    ax = fig.subplots()
    if codes.shape[1] == 1:
        edges = np.histogram_bin_edges(codes[:, 0], bins=50)
        for name in names:
            group = codes[grouped == name, 0]
            style = {"histtype": "stepfilled", **_NORMAL_STYLE} if name == str(normal_value) else {"histtype": "step"}
            ax.hist(group, bins=edges, weights=np.full(group.size, 1 / group.size), label=f"{name} ({group.size})",
                    linewidth=1.5, **style)
        ax.set(xlabel="code (the bottleneck is 1 wide)", ylabel="fraction of label")
    else:
        projection = principal_components(codes)
        missing = 2 - len(projection.explained)  # a single record has one component: drawn at PC2 = 0
        points = np.pad(projection.points, ((0, 0), (0, missing)))
        for name in names:
            mask = grouped == name
            style = _NORMAL_STYLE if name == str(normal_value) else {"alpha": 0.8}
            ax.scatter(points[mask, 0], points[mask, 1], s=4, rasterized=True, label=f"{name} ({mask.sum()})",
                       **style)
        first, second = np.pad(projection.explained, (0, missing))
        ax.set(xlabel=f"PC1 ({first:.0%} of variance)", ylabel=f"PC2 ({second:.0%} of variance)")
    ax.set_title(f"Bottleneck codes of {len(codes)} records (width {codes.shape[1]})")
    ax.legend(fontsize="small", markerscale=3)
    return _save(fig, path)


def _finite_rows(contributions: np.ndarray) -> np.ndarray:
    """Rows without NaN: a refused record's contributions are all NaN."""
    return np.isfinite(contributions).all(axis=1)


def _both_classes(y_true: np.ndarray) -> bool:
    return bool(0 < y_true.sum() < y_true.size)


def _check_contributions(contributions: ArrayLike, y_true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Finite rows of ``contributions`` (n, fields) and their classes; both classes needed."""
    contributions = np.asarray(contributions, dtype=float)
    y_true = np.asarray(y_true, dtype=bool)
    if contributions.ndim != 2 or y_true.shape != contributions.shape[:1]:
        raise ValueError(f"need contributions (n, fields) and n classes, got {contributions.shape} and {y_true.shape}")
    finite = _finite_rows(contributions)
    if not _both_classes(y_true[finite]):
        raise ValueError("need both normal and anomalous records with finite contributions")
    return contributions[finite], y_true[finite]


def rank_fields(contributions: ArrayLike, y_true: ArrayLike) -> np.ndarray:
    """Field columns by median contribution among anomalies minus that among normal records, largest first.

    Rows holding NaN (refused records) are left out; ties keep the column order.

    Examples
    --------
    >>> contributions = np.array([[1.0, 0.1], [1.0, 0.2], [1.0, 5.0], [np.nan, np.nan]])
    >>> rank_fields(contributions, [False, False, True, True]).tolist()
    [1, 0]
    """
    contributions, y_true = _check_contributions(contributions, y_true)
    difference = np.median(contributions[y_true], axis=0) - np.median(contributions[~y_true], axis=0)
    return np.argsort(-difference, kind="stable")


def plot_field_errors(
    contributions: ArrayLike,
    y_true: ArrayLike,
    field_names: Sequence[str],
    path: str | Path,
    *,
    top: int = MAX_FIELDS,
) -> Path:
    """Box plots of each field's contribution to the score, normal beside anomalous records.

    Shows the ``top`` fields of :func:`rank_fields` (the largest difference of medians,
    anomalous minus normal), ranked left to right. Boxes span the quartiles, whiskers the 5th
    to 95th percentiles (no outlier points: there may be thousands). The axis is logarithmic
    when the contributions span two decades or more; contributions of 0 are then drawn at
    the smallest positive one. Rows holding NaN (refused records) are left out.

    Parameters
    ----------
    contributions
        Per-field parts of the score, one row per record (``n, fields``).
    y_true
        ``True`` for anomalous records; both classes needed.
    field_names
        The name of each column of ``contributions``.
    path
        Where to write the PNG.
    top
        Most fields shown.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "fields.png"
    >>> contributions = np.random.default_rng(0).exponential(size=(40, 3))
    >>> plot_field_errors(contributions, np.arange(40) < 5, ["a", "b", "c"], out).exists()
    True
    """
    if len(field_names) != np.shape(contributions)[-1]:
        raise ValueError(f"{len(field_names)} field names for {np.shape(contributions)[-1]} contribution columns")
    order = rank_fields(contributions, y_true)[:top]
    contributions, y_true = _check_contributions(contributions, y_true)
    shown = contributions[:, order]
    positive = shown[shown > 0]
    log_axis = positive.size > 0 and _spans_decades(positive)
    if log_axis:
        shown = np.maximum(shown, positive.min())  # a log axis has no 0
    fig = _figure(max(7.0, 0.8 * len(order) + 2), 5)
    ax = fig.subplots()
    positions = np.arange(len(order))
    handles, names = [], []
    for offset, mask, color, name in ((-0.2, ~y_true, _NORMAL_STYLE["color"], "normal"),
                                      (0.2, y_true, _ANOMALY_COLOR, "anomalous")):
        boxes = ax.boxplot(list(shown[mask].T), positions=positions + offset, widths=0.35, whis=(5, 95),
                           showfliers=False, patch_artist=True, manage_ticks=False,
                           medianprops={"color": "black"})
        for box in boxes["boxes"]:
            box.set(facecolor=color, alpha=0.7)
        handles.append(boxes["boxes"][0])
        names.append(f"{name} ({mask.sum()})")
    ax.set_xticks(positions, [field_names[j] for j in order], rotation=30, ha="right")
    if log_axis:
        ax.set_yscale("log")
    ax.set(ylabel="contribution to the score",
           title=f"Top {len(order)} of {len(field_names)} fields by median contribution, anomalous - normal")
    ax.legend(handles, names, fontsize="small")
    return _save(fig, path)


@dataclass(frozen=True)
class RecordSample:
    """Model internals of the evaluated records (or a sample of them): the latent map's and field plot's input.

    ``codes`` (n, width) are the bottleneck codes, ``contributions`` (n, fields) the per-field
    parts of the scores, in the order of ``field_names``; ``labels`` one label per row.
    """

    codes: ArrayLike
    contributions: ArrayLike
    labels: ArrayLike
    field_names: Sequence[str]


def _plot_sample(report_dir: Path, sample: RecordSample, normal_value: object) -> list[Path]:
    """The latent map, and the field-error plot when the sample's finite rows hold both classes."""
    paths = [plot_latent_map(sample.codes, sample.labels, report_dir / "latent_map.png",
                             normal_value=normal_value)]
    contributions = np.asarray(sample.contributions, dtype=float)
    y_true = is_anomaly(sample.labels, normal_value)
    if _both_classes(y_true[_finite_rows(contributions)]):
        paths.append(plot_field_errors(contributions, y_true, sample.field_names, report_dir / "field_errors.png"))
    return paths


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
    sample: RecordSample | None = None,
    n_top: int = 10,
    image_shape: tuple[int, int] = (28, 28),
) -> list[Path]:
    """Write ``metrics.json`` and the report plots into ``report_dir``.

    Files: ``metrics.json``, ``score_histogram.png``, ``scores_by_index.png``,
    ``roc_pr.png`` (only when the labels hold both classes), with a ``sample``
    ``latent_map.png`` (:func:`plot_latent_map`) and ``field_errors.png``
    (:func:`plot_field_errors`, only when the sample holds both classes), and
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
    sample
        Codes and per-field contributions of the records, or of a sample of them.
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
    if _both_classes(y_true):  # ROC and PR are undefined for a single class
        paths.append(plot_roc_pr(y_true, scores, report_dir / "roc_pr.png"))
    if sample is not None:
        paths += _plot_sample(report_dir, sample, normal_value)
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
