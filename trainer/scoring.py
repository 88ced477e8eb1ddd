"""Batch scoring and evaluation of a data file against a model bundle (`anomon score`, `anomon evaluate`).

Files are read in chunks (`trainer.data.iter_chunks`): each chunk is scored, written out and
dropped, so scoring runs in constant memory whatever the file size.  Only the N most anomalous
records are kept, for the ``--top`` table and the report's image grid.  Evaluation keeps one
score and one label per record, which the ROC and PR curves need; with a report, also the
bottleneck codes and per-field contributions of a seeded uniform sample of at most
`REPORT_SAMPLE` valid records (`trainer.sampling.Sample`: the same records whatever the chunk
size), for the latent map and the field-error plot.

Record indices are 0-based positions in the file (blank lines and a CSV header not counted).

>>> import tempfile, pathlib
>>> from trainer import config_from_dict, fit
>>> from trainer.datasets import write_jsonl
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> records = [{"x": float(i % 10), "kind": "normal"} for i in range(200)] + [{"x": 50.0, "kind": "odd"}]
>>> _ = write_jsonl(records, tmp / "events.jsonl")
>>> cfg = config_from_dict({"fields": {"x": "numeric", "kind": "ignore"}, "model": {"epochs": 2},
...                         "threshold": {"method": "max"}}, environ={})
>>> _ = fit(records[:200], cfg, verbose=False).save(tmp / "model")
>>> score_file(tmp / "model", tmp / "events.jsonl", out=tmp / "scores.jsonl", verbose=False)
0
>>> sorted(json.loads((tmp / "scores.jsonl").read_text().splitlines()[-1]))
['anomaly', 'contributions', 'index', 'record_score', 'score', 'severity', 'threshold']
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from trainer.bundle import Bundle, ScoredBatch
from trainer.data import count_lines, iter_chunks
from trainer.errors import AnomonError
from trainer.evaluation import evaluate
from trainer.files import atomic_write
from trainer.progress import log, progress
from trainer.report import RecordSample, plot_image_grid, write_report
from trainer.sampling import Sample
from trainer.threshold import BANDS

__all__ = ["FieldMismatchError", "LabelError", "TopN", "evaluate_file", "format_metrics", "score_file", "short_value",
           "score_lines", "scored_chunks"]

CHUNK_SIZE = 5_000
TABLE_FIELDS = 3  # contributions shown per row of the --top table (the JSON lines hold all requested)
REPORT_SAMPLE = 20_000  # records behind the report's latent map and field-error plot: ~2 MB at 32 codes, 64 fields


class FieldMismatchError(AnomonError):
    """The data lacks fields the model was trained on."""


class LabelError(AnomonError):
    """A missing label field or label value, or no record left to evaluate."""


@dataclass
class Chunk:
    """A scored chunk of a file: `start` is the file index of its first record."""

    start: int
    records: list[dict[str, Any]]
    batch: ScoredBatch

    @property
    def valid(self) -> np.ndarray:
        return self.batch.valid


def scored_chunks(bundle: Bundle, path: str | Path, chunk_size: int = CHUNK_SIZE,
                  verbose: bool = True) -> Iterator[Chunk]:
    """Score `path` chunk by chunk, with a progress bar; the first chunk is checked against the model."""
    path = Path(path)
    chunks = iter_chunks(path, chunk_size)
    first = next(chunks, None)  # reading starts here, so a bad path fails before the line count
    if first is None:
        return
    check_fields(bundle, first, path)
    total = math.ceil(count_lines(path) / chunk_size)
    start = 0
    for records in progress(itertools.chain([first], chunks), total=total, desc=f"scoring {path.name}",
                            unit="chunk", enabled=verbose):
        yield Chunk(start, records, bundle.score(records))
        start += len(records)


def check_fields(bundle: Bundle, records: list[dict[str, Any]], path: Path) -> None:
    """Raise `FieldMismatchError` naming the model's fields that no record of `records` has."""
    present = set().union(*records)
    missing = [name for name in bundle.field_names if name not in present]
    if missing:
        raise FieldMismatchError(
            f"data: {path} does not match model {bundle.version}: missing field"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def score_lines(bundle: Bundle, chunk: Chunk, contributions: int = 5) -> list[dict[str, Any]]:
    """One output object per record of `chunk`, in order; refused records get an ``error`` line.

    ``score`` is the anomaly score (higher is more anomalous, ≥ 0, in units of the training loss).
    A record with unreadable values is scored with them as missing; its line lists them under
    ``invalid`` ([{"field", "detail"}]), and its contributions mark them ``"invalid": true``.
    """
    scores = chunk.batch.scores
    t = bundle.threshold
    severity, record_score, anomaly = t.severity(scores), t.record_score(scores), t.is_anomaly(scores)
    valid = np.flatnonzero(chunk.valid).tolist()
    explanations = dict(zip(valid, bundle.explain(chunk.records, chunk.batch, valid, contributions)))
    lines = []
    for row, problem in enumerate(chunk.batch.invalid):
        index = chunk.start + row
        if problem is not None:
            lines.append({"index": index, "error": problem[0], "detail": problem[1]})
            continue
        lines.append({
            "index": index,
            "score": float(scores[row]),
            "record_score": float(record_score[row]),
            "severity": severity[row],
            "anomaly": bool(anomaly[row]),
            "threshold": t.value,
            "contributions": explanations[row],
        })
        if row in chunk.batch.unreadable:
            lines[-1]["invalid"] = [{"field": name, "detail": detail} for name, detail in chunk.batch.unreadable[row]]
    return lines


class TopN:
    """The `n` highest-scoring records seen so far, in memory bounded by `n` (ties: earlier first).

    >>> best = TopN(2)
    >>> best.offer(np.array([0.5, 3.0, np.nan]), start=0, item=lambda row: f"record {row}")
    >>> best.offer(np.array([1.0, 0.1]), start=3, item=lambda row: f"record {3 + row}")
    >>> best.items()
    ['record 1', 'record 3']
    """

    def __init__(self, n: int):
        self.n = n
        self._heap: list[tuple[tuple[float, int], Any]] = []

    def offer(self, scores: np.ndarray, start: int, item: Callable[[int], Any]) -> None:
        """Consider a chunk's scores (NaN = invalid, skipped); `item(row)` builds what is kept."""
        finite = np.flatnonzero(np.isfinite(scores))
        for row in finite[np.argsort(-scores[finite], kind="stable")[: self.n]]:
            key = (float(scores[row]), -(start + int(row)))  # unique, so items are never compared
            if len(self._heap) < self.n:
                heapq.heappush(self._heap, (key, item(int(row))))
            elif key > self._heap[0][0]:
                heapq.heapreplace(self._heap, (key, item(int(row))))
            else:
                break  # the rest of this chunk scores lower still

    def items(self) -> list[Any]:
        """Kept items, most anomalous first."""
        return [item for _, item in sorted(self._heap, key=lambda entry: entry[0], reverse=True)]


def score_file(model: str | Path, data: str | Path, out: str | Path | None = None, top: int = 0,
               contributions: int = 5, chunk_size: int = CHUNK_SIZE, verbose: bool = True) -> int:
    """`anomon score`: JSON Lines to `out` (stdout when neither `out` nor `top` is given), top-N table.

    Returns the exit status (0).
    """
    bundle = Bundle.load(model)
    started = time.perf_counter()
    best = TopN(top)
    n = n_invalid = n_anomalies = 0
    with _output(out, default_stdout=not top) as stream:
        for chunk in scored_chunks(bundle, data, chunk_size, verbose):
            lines = score_lines(bundle, chunk, contributions)
            if stream is not None:
                stream.writelines(json.dumps(line) + "\n" for line in lines)
            best.offer(chunk.batch.scores, chunk.start, lambda row: (lines[row], _context(bundle, chunk.records[row])))
            n += len(lines)
            n_invalid += int((~chunk.valid).sum())
            n_anomalies += int(bundle.threshold.is_anomaly(chunk.batch.scores).sum())
    if top:
        print(format_top_table(best.items()), flush=True)
    log(f"scored {n} records of {data} in {time.perf_counter() - started:.1f} s: {n_anomalies} anomalies "
        f"({n_anomalies / max(n, 1):.2%}), {n_invalid} invalid" + (f"; wrote {out}" if out else ""), verbose)
    return 0


def _output(out: str | Path | None, default_stdout: bool) -> AbstractContextManager[IO[str] | None]:
    """The JSON Lines stream as a context manager: the file, stdout, or None (no output)."""
    if out is not None:
        return atomic_write(out)  # renamed into place once complete: never a half-written file
    return nullcontext(sys.stdout if default_stdout else None)


def _context(bundle: Bundle, record: dict[str, Any]) -> dict[str, Any]:
    """Values that identify a record without being modelled: the config's key and `ignore` fields."""
    names = [f.name for f in bundle.config.fields if f.type == "ignore" or f.name == bundle.config.key]
    return {name: record[name] for name in names if name in record}


def format_top_table(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The `--top` table: rank, index, score, record score, severity, context, top fields."""
    header = f"{'rank':>4} {'index':>8} {'score':>10} {'record':>6}  {'severity':<8}  {'context':<24}  top fields"
    body = [
        f"{rank:>4} {line['index']:>8} {line['score']:>10.4g} {line['record_score']:>6.1f}  "
        f"{line['severity'] or '-':<8}  {_format_context(context):<24}  "
        + ", ".join(_format_contribution(c) for c in line["contributions"][:TABLE_FIELDS])
        for rank, (line, context) in enumerate(rows, start=1)
    ]
    return "\n".join([header, *body])


def _format_context(context: dict[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in context.items()) or "-"


def _format_contribution(c: dict[str, Any]) -> str:
    text = f"{c['field']} {c['share']:.0%}"
    if c["expected"] is None:  # vectors: the picture shows the reconstruction
        return text
    return f"{text} ({short_value(c['actual'])}, expected {short_value(c['expected'])})"


def short_value(value: Any) -> str:
    """A value for a one-line table: floats to 4 significant digits, anything else as text."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def evaluate_file(model: str | Path, data: str | Path, label_field: str, normal_value: str = "normal",
                  report: str | Path | None = None, top: int = 10, chunk_size: int = CHUNK_SIZE,
                  verbose: bool = True) -> int:
    """`anomon evaluate`: metrics of a labelled file, printed and (with `report`) written with plots.

    Labels are compared as strings, so ``--normal-value 0`` matches a numeric label 0.  Invalid
    records are left out of the metrics and counted in ``invalid``.  The report's latent map and
    field-error plot show a uniform sample of at most `REPORT_SAMPLE` valid records (all of them
    in a smaller file).  Returns the exit status (0).
    """
    bundle = Bundle.load(model)
    data = Path(data)
    images = _image_fields(bundle) if report is not None else {}
    best = TopN(top)
    sample = Sample(REPORT_SAMPLE)
    scores, labels, n_invalid = [], [], 0
    for chunk in scored_chunks(bundle, data, chunk_size, verbose):
        chunk_labels = _labels(chunk, label_field, data)
        valid = chunk.valid
        scores.append(chunk.batch.scores[valid])
        labels.append(chunk_labels[valid])
        n_invalid += int((~valid).sum())
        best.offer(chunk.batch.scores, chunk.start, lambda row: _top_item(bundle, chunk, row, chunk_labels, images))
        if report is not None:
            rows = np.flatnonzero(valid)
            sample.offer(chunk.start + rows, lambda kept: _sample_columns(bundle, chunk, rows[kept], chunk_labels))
    scores, labels = np.concatenate(scores or [[]]), np.concatenate(labels or [[]]).astype(str)
    _check_labels(labels, label_field, str(normal_value), data)
    t = bundle.threshold
    metrics = {
        "model": bundle.version,
        "data": str(data),
        "label_field": label_field,
        "normal_value": str(normal_value),
        "invalid": n_invalid,
        **evaluate(scores, labels, normal_value=str(normal_value), threshold=t.value,
                   bands={band: t.bands[band] for band in BANDS}),  # lowest edge first
        "top_anomalies": [{k: v for k, v in item.items() if k != "images"} for item in best.items()],
    }
    print(format_metrics(metrics), flush=True)
    if report is not None:
        record_sample = RecordSample(**sample.columns(), field_names=bundle.field_names)
        for path in _write_report(Path(report), scores, labels, metrics, best.items(), images, record_sample):
            log(f"wrote {path}", verbose)
    return 0


def _labels(chunk: Chunk, field: str, path: Path) -> np.ndarray:
    """The chunk's labels as strings; a record without one is an error (its class is unknown)."""
    labels = [record.get(field) for record in chunk.records]
    if None in labels:
        if chunk.start == 0 and all(label is None for label in labels):
            fields = ", ".join(sorted(set().union(*chunk.records))[:20])
            raise LabelError(f"evaluate: {path} has no label field '{field}' (its fields: {fields})")
        raise LabelError(f"evaluate: {path} record {chunk.start + labels.index(None)} has no '{field}' label")
    return np.array([str(label) for label in labels])


def _check_labels(labels: np.ndarray, field: str, normal_value: str, path: Path) -> None:
    if labels.size == 0:
        raise LabelError(f"evaluate: {path} has no valid record to evaluate")
    if not (labels == normal_value).any():
        values = ", ".join(np.unique(labels)[:20])
        raise LabelError(f"evaluate: normal value '{normal_value}' never occurs in field '{field}' of {path} "
                         f"(values: {values})")


def _image_fields(bundle: Bundle) -> dict[str, tuple[int, int]]:
    """Vector fields that are square images (e.g. 784 = 28 x 28), with their shapes."""
    shapes = {}
    for spec in bundle.config.fields:
        side = math.isqrt(spec.size or 0)
        if spec.type == "vector" and side >= 4 and side * side == spec.size:
            shapes[spec.name] = (side, side)
    return shapes


def _top_item(bundle: Bundle, chunk: Chunk, row: int, labels: np.ndarray,
              images: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """What evaluation keeps of a top record: index, label, score and each image with its reconstruction."""
    return {
        "index": chunk.start + row,
        "label": str(labels[row]),
        "score": float(chunk.batch.scores[row]),
        "images": {
            field: (np.asarray(chunk.records[row][field], dtype=float),
                    bundle.reconstruct_vectors(field, chunk.batch, np.array([row]))[0])
            for field in images
        },
    }


def _sample_columns(bundle: Bundle, chunk: Chunk, rows: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """What the report's sample keeps of `rows`: bottleneck codes, per-field contributions and labels."""
    return {"codes": bundle.codes(chunk.batch, rows), "contributions": chunk.batch.contributions[rows],
            "labels": labels[rows]}


def _write_report(report: Path, scores: np.ndarray, labels: np.ndarray, metrics: dict[str, Any],
                  top: list[dict[str, Any]], images: dict[str, tuple[int, int]], sample: RecordSample) -> list[Path]:
    """metrics.json and the plots of `trainer.report`, plus one top-anomalies grid per image field."""
    threshold = metrics["at_threshold"]["threshold"]
    try:
        paths = write_report(report, scores, labels, metrics["normal_value"], threshold, metrics, sample=sample)
        titles = [f"#{item['index']} {item['label']}\n{item['score']:.3g}" for item in top]
        for field, shape in images.items():
            pairs = [item["images"][field] for item in top]
            paths.append(plot_image_grid([p[0] for p in pairs], [p[1] for p in pairs], titles,
                                         report / f"top_anomalies_{field}.png", shape))
    except RuntimeError as exc:
        if isinstance(exc.__cause__, ImportError):  # matplotlib missing: metrics.json is already written
            raise AnomonError(f"evaluate: {exc}") from None
        raise
    return paths


def format_metrics(metrics: dict[str, Any]) -> str:
    """A readable summary of `evaluate_file`'s metrics: AUCs, threshold and band table, per-label table."""
    lines = [
        f"{metrics['n']} records of {metrics['data']} ({metrics['n_positive']} with {metrics['label_field']} "
        f"!= {metrics['normal_value']}, {metrics['invalid']} invalid left out), model {metrics['model']}",
        f"ROC-AUC {_auc(metrics['roc_auc'])}   PR-AUC {_auc(metrics['pr_auc'])}",
        "",
        f"{'flagging score >=':<20} {'threshold':>10} {'precision':>9} {'recall':>7} {'F1':>7} "
        f"{'TP':>7} {'FP':>7} {'FN':>7}",
    ]
    rows = [("bundle threshold", metrics["at_threshold"]),
            *((f"  band {band}", m) for band, m in metrics["at_bands"].items()),
            ("best F1 (reference)", metrics["best_f1"])]
    for name, m in rows:
        if m is not None:
            lines.append(f"{name:<20} {m['threshold']:>10.4g} {m['precision']:>9.4f} {m['recall']:>7.4f} "
                         f"{m['f1']:>7.4f} {m['tp']:>7} {m['fp']:>7} {m['fn']:>7}")
    lines += ["", f"{'label':<20} {'count':>7} {'flagged':>8} {'detection rate':>15}"]
    lines += [f"{row['label']:<20} {row['count']:>7} {row['flagged']:>8} {row['detection_rate']:>15.4f}"
              for row in metrics["per_label"]]
    return "\n".join(lines)


def _auc(value: float | None) -> str:
    return "n/a (one class)" if value is None else f"{value:.4f}"
