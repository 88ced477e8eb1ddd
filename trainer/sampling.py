"""Seeded uniform samples of a stream read in chunks, in bounded memory, whatever the chunking.

Two samplers for two kinds of stream:

- `Reservoir` (Algorithm R) keeps rows of numpy arrays as they come, for a stream of unknown
  length whose items are already built (the training matrix's rows, encoder values);
- `Sample` (bottom-k over hashed record indices) builds the columns of a record only once it is
  known to enter the sample, for streams where building a row costs (the evaluation report's
  codes and contributions).

>>> r = Reservoir(capacity=1000, seed=0)
>>> for start in range(0, 10_000, 500):
...     _ = r.add(np.arange(start, start + 500))
>>> r.seen_, len(r.sample_), len(np.unique(r.sample_))
(10000, 1000, 1000)
>>> bool((r.sample_ < 5000).any() and (r.sample_ >= 5000).any())  # from both halves of the stream
True

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


class Reservoir:
    """At most `capacity` items of a stream offered chunk by chunk, each item equally likely to stay.

    Algorithm R: the first `capacity` items fill the sample; item ``i`` (0-based) after that
    replaces a slot drawn uniformly from ``0..i`` when that slot exists.  One uniform draw per item
    past `capacity`, from a generator seeded with `seed`, so the sample depends on the items and
    the seed only, not on how the stream was cut into chunks.  `capacity` None keeps every item.
    Items are rows of numpy arrays (the first axis); the sample grows by doubling, up to `capacity`.

    >>> r = Reservoir(capacity=None).add(np.array([3, 1])).add(np.array([2]))
    >>> r.sample_.tolist(), r.seen_
    ([3, 1, 2], 3)
    """

    def __init__(self, capacity: int | None, seed: int = 0) -> None:
        self.capacity = capacity
        self.seed = seed
        self.seen_ = 0
        self._items: np.ndarray | None = None
        self._filled = 0
        self._rng = np.random.default_rng(seed)

    @property
    def sample_(self) -> np.ndarray:
        """The sampled items, in no particular order."""
        return self._items[: self._filled] if self._items is not None else np.empty(0)

    def add(self, items: np.ndarray) -> Reservoir:
        """Offer the next `items` of the stream."""
        n = len(items)
        room = n if self.capacity is None else max(0, min(n, self.capacity - self.seen_))
        if room:
            self._grow(items, self._filled + room)
            self._items[self._filled : self._filled + room] = items[:room]
            self._filled += room
        if room < n:
            index = np.arange(self.seen_ + room, self.seen_ + n)
            slots = (self._rng.random(n - room) * (index + 1)).astype(np.int64)
            taken = np.flatnonzero(slots < self.capacity)
            # Within one chunk a later item replaces an earlier one in the same slot, as one by one.
            slots, last = np.unique(slots[taken][::-1], return_index=True)
            self._items[slots] = items[room + taken[::-1][last]]
        self.seen_ += n
        return self

    def _grow(self, items: np.ndarray, size: int) -> None:
        if self._items is not None and len(self._items) >= size:
            return
        capacity = max(size, 2 * len(self._items) if self._items is not None else 1024)
        if self.capacity is not None:
            capacity = min(capacity, self.capacity)
        grown = np.empty((capacity, *items.shape[1:]), dtype=items.dtype)
        if self._items is not None:
            grown[: self._filled] = self._items[: self._filled]
        self._items = grown



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
