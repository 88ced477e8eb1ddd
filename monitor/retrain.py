"""Retraining from the input topic: `anomon retrain`, and the automatic retraining a drift triggers.

Kafka is the durable log, so the records to train on are read back from ``kafka.input_topic``:
per partition from ``--from-offset P:O`` (or the first offset at ``--since``, or the beginning)
up to ``--to-offset P:O`` (exclusive; or the first offset at ``--until``, or the end at start).
The current bundle scores every record, and only the records it scores below its threshold are
kept (anomalies are not learnt as normal), with the contributions of the ``--ignore-field``
fields left out of that score: after a shift in those fields most records score high *because*
of the shift, which is what the new version must learn.  The kept records train and calibrate a
new version under ``models/NAME/versions/`` (fewer than ``retrain.cross_fit_below``: calibrated
by cross-fitting, since a window that small leaves too few held-out scores above the threshold);
CURRENT switches atomically (temporary name, fsync, rename: `trainer.bundle.set_current`), and all
but the newest ``retrain.keep_versions`` are deleted.

On the embedded test broker ``offsets_for_times`` answers with the current time, and end offsets
are approximate: there, pass offset windows (``--from-offset``/``--to-offset``).

`AutoRetrainer` (``retrain: {mode: auto}``) watches a monitor's drift detections: once
``retrain.min_records`` events have been scored below the threshold since a detection, and ``retrain.cooldown_s``
has passed since the last retraining, it runs `anomon retrain` in a separate process over the
monitor's partitions from the detection's offsets, so scoring never pauses.  The monitor's
`ModelWatcher` then takes the new version up.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from monitor.alerts import iso_time
from monitor.lifecycle import prune_versions
from monitor.pipeline import BatchResult
from monitor.service import Monitor, check_fields, kafka_security
from monitor.transport import TopicReader, client
from trainer.bundle import Bundle
from trainer.config import Config
from trainer.drift import SCORE
from trainer.errors import AnomonError
from trainer.fit import fit
from trainer.progress import log as progress_log
from trainer.progress import progress

log = logging.getLogger(__name__)

CHUNK = 5000
IDLE_TIMEOUT_S = 10.0


class RetrainError(AnomonError):
    """Retraining cannot proceed (too few records kept, an unknown field, no such partition)."""


@dataclass(frozen=True)
class Window:
    """Per partition: the first offset to read and the first not to read (None: from the beginning / to the end)."""

    start: dict[int, int]
    end: dict[int, int]
    since: datetime | None = None
    until: datetime | None = None


def parse_offsets(values: Sequence[str] | None) -> dict[int, int]:
    """``["0:120", "1:98"]`` → ``{0: 120, 1: 98}``.

    >>> parse_offsets(["0:120", "1:98"])
    {0: 120, 1: 98}
    """
    offsets = {}
    for value in values or ():
        partition, sep, offset = value.partition(":")
        if not sep or not partition.strip().isdigit() or not offset.strip().isdigit():
            raise RetrainError(f"retrain: '{value}' is not PARTITION:OFFSET")
        offsets[int(partition)] = int(offset)
    return offsets


def read_window(config: Config, window: Window, *, verbose: bool = True) -> Iterator[bytes | None]:
    """The values of the input topic's records in `window`, partition by partition, with a progress bar.

    Read with the configured client library (``kafka.client``), outside the monitor's group.
    """
    k = config.kafka
    reader = client(k.client).reader(bootstrap_servers=k.bootstrap_servers, client_id=f"{k.client_id}-retrain",
                                     max_records=CHUNK, **kafka_security(k))
    try:
        partitions = reader.partitions(k.input_topic)
        if not partitions:
            raise RetrainError(f"retrain: topic {k.input_topic} does not exist")
        unknown = sorted((set(window.start) | set(window.end)) - partitions)
        if unknown:
            raise RetrainError(f"retrain: topic {k.input_topic} has no partition {unknown[0]}")
        held = reader.offsets(k.input_topic, partitions)
        starts = _at_time(reader, k.input_topic, held, window.since) if window.since else {
            p: first for p, (first, _) in held.items()}
        ends = _at_time(reader, k.input_topic, held, window.until) if window.until else {
            p: last for p, (_, last) in held.items()}
        bounds = {p: (window.start.get(p, starts[p]), window.end.get(p, ends[p])) for p in sorted(partitions)}
        total = sum(max(0, end - start) for start, end in bounds.values())
        bar = progress(None, total=total, desc="reading the topic", unit="rec", enabled=verbose)
        try:
            for partition, (start, end) in bounds.items():
                if end <= start:
                    continue
                position = start
                for message in reader.read(k.input_topic, partition, start, end, idle_timeout_s=IDLE_TIMEOUT_S):
                    position = message.offset + 1
                    bar.update(1)
                    yield message.value
                if position < end:
                    log.warning("retrain: partition %d ended at offset %d, before %d", partition, position, end)
        finally:
            bar.close()
    finally:
        reader.close()


def _at_time(reader: TopicReader, topic: str, held: dict[int, tuple[int, int]], when: datetime) -> dict[int, int]:
    """Per partition, the first offset at or after `when`; past the end where no record is that late."""
    found = reader.offsets_at(topic, held, int(when.timestamp() * 1000))
    return {p: found[p] if found.get(p) is not None else last for p, (_, last) in held.items()}


def kept_records(bundle: Bundle, values: Iterable[bytes | None], ignore: Sequence[str],
                 counts: Counter[str]) -> Iterator[dict[str, Any]]:
    """The records of `values` that `bundle` scores below its threshold, leaving out the `ignore` fields.

    `counts` receives ``read``, ``unreadable`` (not a JSON object), ``invalid`` (not scorable),
    ``scored``, ``alerted`` (at or above the threshold, all fields counted) and ``kept``.
    """
    threshold = bundle.threshold.value
    values = iter(values)
    while chunk := list(islice(values, CHUNK)):
        records = []
        for value in chunk:
            try:
                record = orjson.loads(value) if value else None
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
        counts.update(read=len(chunk), unreadable=len(chunk) - len(records))
        if not records:
            continue
        batch = bundle.score(records, strict=True)
        valid = batch.valid & np.isfinite(batch.scores)
        filtered = bundle.score(records, strict=True, ignore=ignore).scores if ignore else batch.scores
        keep = valid & (filtered < threshold)
        counts.update(invalid=int((~valid).sum()), scored=int(valid.sum()),
                      alerted=int((valid & (batch.scores >= threshold)).sum()), kept=int(keep.sum()))
        yield from (records[i] for i in np.flatnonzero(keep))


def retrain(config: Config, model_dir: str | Path, window: Window, *, ignore_fields: Sequence[str] = (),
            verbose: bool = True) -> Bundle:
    """Train a new version of `model_dir` on the topic's records in `window`; see the module docstring."""
    current = Bundle.load(model_dir)
    check_fields(config, current)
    unknown = [name for name in ignore_fields if name not in current.field_names]
    if unknown:
        raise RetrainError(f"retrain: --ignore-field {unknown[0]} is not a field of model {current.version}")
    counts: Counter[str] = Counter()
    records = kept_records(current, read_window(config, window, verbose=verbose), ignore_fields, counts)
    # A generator: fit reads it once, keeping at most model.max_records of it (reading the topic
    # twice would score it twice), and the whole window is read before training starts.
    bundle = fit(_enough(records, counts, config, current.version, verbose), retraining_config(config),
                 verbose=verbose)
    bundle.training["retrained_from"] = {"model_version": current.version, "counts": dict(counts),
                                         "ignore_fields": list(ignore_fields),
                                         "window": {"start": window.start, "end": window.end,
                                                    "since": window.since and window.since.isoformat(),
                                                    "until": window.until and window.until.isoformat()}}
    target = bundle.save(model_dir)
    prune_versions(model_dir, config.retrain.keep_versions)
    progress_log(f"wrote {target} (threshold {bundle.threshold.value:.6g}); CURRENT is {bundle.version}", verbose)
    return bundle


def retraining_config(config: Config) -> Config:
    """`config` with ``model.cross_fit_below`` raised to ``retrain.cross_fit_below``: a window that small
    is calibrated on out-of-fold scores of all its records (see `trainer.config.RetrainConfig`)."""
    below = max(config.model.cross_fit_below, config.retrain.cross_fit_below)
    return replace(config, model=replace(config.model, cross_fit_below=below))


def _enough(records: Iterable[dict[str, Any]], counts: Counter[str], config: Config, version: str,
            verbose: bool) -> Iterator[dict[str, Any]]:
    """`records`, then the reading's summary, and a `RetrainError` if fewer than retrain.min_records were kept."""
    yield from records
    progress_log(f"read {counts['read']:,} records: {counts['kept']:,} kept; model {version} alerted on "
                 f"{counts['alerted']:,} ({_rate(counts['alerted'], counts['scored'])}), "
                 f"{counts['unreadable'] + counts['invalid']:,} not scorable", verbose)
    if counts["kept"] < config.retrain.min_records:
        raise RetrainError(f"retrain: {counts['kept']:,} records kept, fewer than retrain.min_records "
                           f"{config.retrain.min_records:,}; nothing trained")


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "-"


class AutoRetrainer:
    """A batch observer that retrains in a separate process after a drift; see the module docstring.

    Parameters
    ----------
    config, config_path
        The monitor's config, and its file (handed to the `anomon retrain` process).
    model_dir
        The model directory the monitor watches.
    monitor
        Whose drift detections start a retraining, and where its control events go.
    launch
        Starts the retraining process from its argument list; default `subprocess.Popen`.
    clock
        Monotonic seconds, for ``retrain.cooldown_s``.
    """

    def __init__(self, config: Config, config_path: str | Path, model_dir: str | Path, monitor: Monitor, *,
                 launch: Callable[[list[str]], subprocess.Popen] = subprocess.Popen,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.config_path, self.model_dir = config, Path(config_path), Path(model_dir)
        self.monitor, self.launch, self.clock = monitor, launch, clock
        self.process: subprocess.Popen | None = None
        self._seen = len(monitor.drift.detections)
        self._since: dict[str, Any] | None = None  # the drift being waited on: offsets, fields, events since
        self._end: dict[str, int] = {}  # next offsets of the last batch seen, by partition
        self._last_start = -float("inf")

    def on_batch(self, result: BatchResult) -> None:
        waiting = self._since is not None
        self._end.update({str(p): o for (_, p), o in result.offsets.items()})
        for detection in list(self.monitor.drift.detections)[self._seen:]:
            if self._since is None:  # counted from the next batch on: this one ends at the detection's offsets
                # Partitions not in the detection's batch start where their last batch ended.
                self._since = {"offsets": {**self._end, **detection["offsets"]}, "fields": set(), "events": 0}
            if detection["field"] != SCORE:
                self._since["fields"].add(detection["field"])
        self._seen = len(self.monitor.drift.detections)
        if self.process is not None and self.process.poll() is not None:
            self.monitor.emit({"type": "retrain_finished", "returncode": self.process.returncode,
                               "at": iso_time(self.monitor.clock())})
            log.info("retraining finished with status %d", self.process.returncode)
            self.process = None
        if not waiting:
            return
        # Events below the threshold: retraining keeps at least these (it leaves the drifted fields out).
        self._since["events"] += result.scored - len(result.alerts)
        r = self.config.retrain
        if (self.process is None and self._since["events"] >= r.min_records
                and self.clock() - self._last_start >= r.cooldown_s):
            self._start()

    def _start(self) -> None:
        since, self._since = self._since, None
        end = {**since["offsets"], **self._end}
        args = [sys.executable, "-m", "monitor.cli", "retrain", "--config", str(self.config_path),
                "--model-dir", str(self.model_dir), "--quiet",
                *(f"--from-offset={p}:{o}" for p, o in sorted(since["offsets"].items())),
                *(f"--to-offset={p}:{o}" for p, o in sorted(end.items())),
                *(f"--ignore-field={name}" for name in sorted(since["fields"]))]
        self._last_start = self.clock()
        self.process = self.launch(args)
        log.warning("drift: retraining on %d events in a separate process (pid %s)", since["events"],
                    getattr(self.process, "pid", "?"))
        self.monitor.emit({"type": "retrain_started", "model_version": self.monitor.bundle.version,
                           "from_offsets": since["offsets"], "to_offsets": end, "ignore_fields": sorted(since["fields"]),
                           "at": iso_time(self.monitor.clock())})
