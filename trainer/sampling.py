"""A seeded uniform sample of a stream of unknown length, kept in bounded memory (Algorithm R).

>>> r = Reservoir(capacity=1000, seed=0)
>>> for start in range(0, 10_000, 500):
...     _ = r.add(np.arange(start, start + 500))
>>> r.seen_, len(r.sample_), len(np.unique(r.sample_))
(10000, 1000, 1000)
>>> bool((r.sample_ < 5000).any() and (r.sample_ >= 5000).any())  # from both halves of the stream
True
"""

from __future__ import annotations

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
