"""A bounded, seeded, uniform sample of the records of a file read in chunks.

`Sample` keeps the `size` records whose keys are smallest, a key being a hash of the record's
file index and a seed (bottom-k sampling): every subset of `size` records is equally likely,
memory stays bounded by `size` plus one chunk, and the sample depends only on the indices
offered, never on how the file was split into chunks.

>>> sample = Sample(3, seed=1)
>>> for start in (0, 4, 8):  # three chunks of four records
...     rows = np.arange(4)
...     sample.offer(start + rows, lambda kept: {"value": (start + kept) * 10})
>>> sample.columns()["value"].tolist()
[10, 30, 50]
>>> whole = Sample(3, seed=1)  # the same records offered in one chunk: the same sample
>>> whole.offer(np.arange(12), lambda kept: {"value": kept * 10})
>>> whole.columns()["value"].tolist()
[10, 30, 50]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["Sample", "uniform_keys"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def uniform_keys(index: np.ndarray, seed: int = 0) -> np.ndarray:
    """A pseudo-random uint64 per index (splitmix64 of index and seed): distinct for distinct indices.

    >>> keys = uniform_keys(np.arange(4))
    >>> bool((keys == uniform_keys(np.arange(4))).all()), len(set(keys.tolist()))
    (True, 4)
    """
    with np.errstate(over="ignore"):  # the arithmetic is modulo 2**64 on purpose
        z = np.uint64(seed) * _GOLDEN + (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class Sample:
    """At most `size` records, uniformly sampled by `uniform_keys`; columns built only for kept records."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.seed = seed
        self._keys = np.zeros(0, dtype=np.uint64)
        self._index = np.zeros(0, dtype=np.int64)
        self._columns: dict[str, np.ndarray] = {}

    def offer(self, index: np.ndarray, build: Callable[[np.ndarray], dict[str, np.ndarray]]) -> None:
        """Consider records with file indices `index`; `build(rows)` gives the columns of `index[rows]`."""
        index = np.asarray(index, dtype=np.int64)
        keys = uniform_keys(index, self.seed)
        if len(self._keys) == self.size:  # full: only keys below the largest kept can enter
            rows = np.flatnonzero(keys < self._keys.max())
        else:
            rows = np.arange(len(index))
        if rows.size == 0:
            return
        new = build(rows)
        keys = np.concatenate([self._keys, keys[rows]])
        keep = np.argsort(keys, kind="stable")[: self.size]
        self._keys = keys[keep]
        self._index = np.concatenate([self._index, index[rows]])[keep]
        kept = self._columns or {name: column[:0] for name, column in new.items()}
        self._columns = {name: np.concatenate([kept[name], column])[keep] for name, column in new.items()}

    def __len__(self) -> int:
        return len(self._index)

    def columns(self) -> dict[str, np.ndarray]:
        """The kept records' columns, in file order (so the result does not depend on the chunking)."""
        order = np.argsort(self._index, kind="stable")
        return {name: column[order] for name, column in self._columns.items()}
