"""The training matrix: a window of records encoded in bounded memory, split for `trainer.fit.fit`.

>>> from trainer.config import FieldSpec
>>> records = [{"x": i % 17, "c": "ab"[i % 2]} for i in range(1000)]
>>> sample = TrainingSample([FieldSpec("x", "numeric"), FieldSpec("c", "categorical")],
...                         max_records=300).fit(records)
>>> sample.seen_, sample.encoded_.X.shape, sample.encoded_.X.dtype
(1000, (300, 5), dtype('float32'))
>>> len(sample.train_), len(sample.validation_), len(sample.calibration_)
(250, 24, 26)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np

from trainer.config import EncodingConfig, FieldSpec
from trainer.encoding import Encoded, Encoder, EncodingError
from trainer.sampling import Reservoir

# Records read, split and encoded at a time.  A window of up to this many records is split exactly
# as one seeded permutation of the whole list would be.
CHUNK = 50_000
TRAIN, VALIDATION, CALIBRATION = 0, 1, 2
MIN_SPLIT = 10  # records in the training and in the calibration split, at least


class TrainingSample:
    """Encodes a window of records into one float32 matrix and its train/validation/calibration split.

    Each chunk of `chunk_size` records is split by a seeded permutation: `holdout_fraction` of it
    held out, half of that for validation (early stopping), the rest for calibration (the
    threshold).  The encoder is fitted on the training split only, so that calibration records
    keep their realistic range excess.  Two passes over `records`:

    1. every training record goes into the encoder's statistics (`Encoder.partial_fit`), and a
       seeded reservoir (`Reservoir`, Algorithm R) picks at most `max_records` rows, a uniform
       sample of the window;
    2. the picked rows are encoded into one preallocated float32 matrix, in window order.

    `records` should be re-iterable (a list, `trainer.data.RecordFile`: each ``iter()``
    starts over): then only the encoder's statistics, the row sample and the matrix are held.  A one-shot
    iterator (a generator) is read once into a reservoir of at most `max_records` raw records,
    which the two passes then read.  Either way a list and a generator of the same records give
    the same sample.

    Learned: `encoder_`, `encoded_` (`Encoded`: ``X`` (kept, width) float32, ``excess``,
    ``invalid``), the row indices `train_`, `validation_`, `calibration_`, `seen_` (records in
    the window) and `kept_` (rows in the matrix).
    """

    def __init__(self, fields: Iterable[FieldSpec], encoding: EncodingConfig = EncodingConfig(),  # noqa: B008
                 holdout_fraction: float = 0.2, max_records: int | None = None, seed: int = 0,
                 chunk_size: int = CHUNK) -> None:
        self.fields = tuple(fields)
        self.encoding = encoding
        self.holdout_fraction = holdout_fraction
        self.max_records = max_records
        self.seed = seed
        self.chunk_size = chunk_size

    def fit(self, records: Iterable[dict[str, Any]]) -> TrainingSample:
        if iter(records) is records:  # one shot: keep a bounded sample of the records themselves
            raw = Reservoir(self.max_records, self.seed + 1)
            for chunk in self._chunks(records):
                raw.add(_objects(chunk))
            seen = raw.seen_
            records = list(raw.sample_)
        else:
            seen = None
        rows = self._assign(records)
        self.seen_ = seen if seen is not None else rows.seen_
        self.kept_ = len(rows.sample_)
        self._encode(records, rows)
        return self

    def _assign(self, records: Iterable[dict[str, Any]]) -> Reservoir:
        """Pass 1: split every chunk, fit the encoder on the training records, sample the rows.

        A row of the reservoir is (record index, order in its split, split).
        """
        rng = np.random.default_rng(self.seed)
        rows = Reservoir(self.max_records, self.seed + 2)
        self.encoder_ = Encoder(self.fields, self.encoding)
        for chunk in self._chunks(records):
            n = len(chunk)
            order = rng.permutation(n)
            n_holdout = int(round(n * self.holdout_fraction))
            split = np.empty(n, dtype=np.int64)
            split[order[: n - n_holdout]] = TRAIN
            split[order[n - n_holdout : n - n_holdout // 2]] = VALIDATION
            split[order[n - n_holdout // 2 :]] = CALIBRATION
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            start = rows.seen_
            rows.add(np.column_stack([start + np.arange(n), start + rank, split]))
            self.encoder_.partial_fit([chunk[i] for i in np.flatnonzero(split == TRAIN)])
        kept = rows.sample_
        counts = np.bincount(kept[:, 2], minlength=3) if len(kept) else np.zeros(3, dtype=np.int64)
        if counts[TRAIN] < MIN_SPLIT or counts[CALIBRATION] < MIN_SPLIT:
            sampled = f" of {rows.seen_} (model.max_records)" if len(kept) < rows.seen_ else ""
            raise EncodingError(f"training: {len(kept)}{sampled} records are too few "
                                f"(need at least {MIN_SPLIT} per split)")
        self.encoder_.finish()
        return rows

    def _encode(self, records: Iterable[dict[str, Any]], rows: Reservoir) -> None:
        """Pass 2: encode the kept rows, in window order, into one matrix."""
        kept = rows.sample_[np.argsort(rows.sample_[:, 0])]
        index, order, split = kept.T
        X = np.zeros((len(kept), self.encoder_.width), dtype=np.float32)
        excess = np.zeros((len(kept), len(self.encoder_.encoders_)))
        invalid: list[tuple[str, str] | None] = []
        start = 0
        for chunk in self._chunks(records):
            lo, hi = np.searchsorted(index, [start, start + len(chunk)])
            if hi > lo:
                encoded = self.encoder_.transform([chunk[i] for i in index[lo:hi] - start])
                X[lo:hi], excess[lo:hi] = encoded.X, encoded.excess
                invalid.extend(encoded.invalid)
            start += len(chunk)
        if start != rows.seen_:
            raise EncodingError(f"training: the records changed between two readings ({rows.seen_} records, "
                                f"then {start})")
        self.encoded_ = Encoded(X, invalid, excess=excess)
        # Each split in the order of its chunk's permutation (as one permutation of a short list).
        self.train_, self.validation_, self.calibration_ = (
            _in_order(np.flatnonzero(split == s), order) for s in (TRAIN, VALIDATION, CALIBRATION))

    def _chunks(self, records: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        records = iter(records)
        while chunk := list(islice(records, self.chunk_size)):
            yield chunk


def _objects(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _in_order(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    return rows[np.argsort(order[rows], kind="stable")]
