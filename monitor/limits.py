"""Size limits checked on the raw bytes of an event, before it is decoded into Python objects.

``monitor.max_message_bytes`` bounds an event's size; within it, a hostile or broken producer
can still send an array of half a million numbers or brackets nested a hundred thousand deep,
which cost memory (and recursion) to decode even though the schema would ignore them.
`ShapeLimits.problem` finds the nesting depth and the longest array of an event's fields with
two ``bytes.count`` calls for the usual event, and a vectorised scan (numpy, no Python loop per
byte) for the rare one that may exceed a limit:

- nesting depth of a field's value: ``1`` is ``[1, 2]`` or ``{"a": 1}``, ``2`` is ``[[1]]``...;
- array length: elements of any one array.

Brackets, commas and quotes inside strings do not count.  What is over a limit is dead-lettered
as ``oversized``, with the limit named.

>>> limits = ShapeLimits(max_nesting_depth=2, max_array_length=3)
>>> limits.problem(b'{"a": [[1, 2, 3]], "s": "[[[[,,,,"}') is None
True
>>> limits.problem(b'{"a": [[[1]]]}')
'a field nests 3 levels deep, more than monitor.max_nesting_depth 2'
>>> limits.problem(b'{"a": [1, 2, [3, 4, 5, 6]]}')
'an array of 4 elements, more than monitor.max_array_length 3'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPEN_ARRAY, _CLOSE_ARRAY, _OPEN_OBJECT, _CLOSE_OBJECT = ord("["), ord("]"), ord("{"), ord("}")


@dataclass(frozen=True)
class ShapeLimits:
    """The deepest a field's value may nest, and the most elements an array may hold."""

    max_nesting_depth: int = 16
    max_array_length: int = 10_000

    def problem(self, value: bytes) -> str | None:
        """Why `value` (a JSON object's bytes) exceeds a limit, or None; never decodes it.

        Invalid JSON is not judged here (the decoder says why it is invalid), only measured.
        """
        # The event's own object is one level: a field's value may open max_nesting_depth more.
        if value.count(b"[") + value.count(b"{") <= self.max_nesting_depth + 1 and (
                len(value) < 2 * self.max_array_length + 3):  # N elements take at least 2N + 1 bytes
            return None
        return self._scan(np.frombuffer(value, dtype=np.uint8))

    def _scan(self, data: np.ndarray) -> str | None:
        structural = ~_inside_strings(data)
        opens = structural & ((data == _OPEN_ARRAY) | (data == _OPEN_OBJECT))
        closes = structural & ((data == _CLOSE_ARRAY) | (data == _CLOSE_OBJECT))
        depth = np.cumsum(opens.astype(np.int32) - closes.astype(np.int32))  # after each byte
        deepest = int(depth.max(initial=0)) - 1
        if deepest > self.max_nesting_depth:
            return f"a field nests {deepest} levels deep, more than monitor.max_nesting_depth {self.max_nesting_depth}"
        commas = structural & (data == _COMMA)
        longest = 0
        for level in range(2, deepest + 2):  # arrays inside the event's object
            openers = np.flatnonzero(opens & (depth == level))
            at_level = np.flatnonzero(commas & (depth == level))
            if not at_level.size:
                continue
            # A comma belongs to the last container opened at its level before it.
            owners = np.searchsorted(openers, at_level) - 1
            counts = np.bincount(owners[owners >= 0], minlength=openers.size)
            arrays = data[openers] == _OPEN_ARRAY
            if arrays.any():
                longest = max(longest, int(counts[arrays].max()) + 1)
        if longest > self.max_array_length:
            return f"an array of {longest} elements, more than monitor.max_array_length {self.max_array_length}"
        return None


def _inside_strings(data: np.ndarray) -> np.ndarray:
    """Which bytes lie inside a JSON string (its opening quote included, its closing one not)."""
    backslash = data == _BACKSLASH
    positions = np.arange(data.size)
    # For each byte, the position of the last byte before it that is not a backslash: the run
    # of backslashes right before a quote says whether it is escaped (an odd run) or not.
    last_other = np.maximum.accumulate(np.where(backslash, -1, positions))
    run_before = np.empty(data.size, dtype=np.int64)
    run_before[0] = 0
    run_before[1:] = positions[:-1] - last_other[:-1]
    quotes = (data == _QUOTE) & (run_before % 2 == 0)
    return np.cumsum(quotes) % 2 == 1
