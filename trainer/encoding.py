"""Encoding events into the autoencoder's input matrix, one block of columns per field.

`Encoder` is fitted once on training records and stored in the bundle; the trainer and the
monitor both use it.  Encoding a batch is vectorised: one pass pulls each field's values out
of the records, then numpy does the rest.  Nothing raises for one bad event:

- every value that can be read as its field's type is encoded, however far it lies from what
  training saw.  A number outside the training range (or negative where training never was)
  also gets a *range excess* (`Encoded.excess`), which the bundle turns into score; an attacker
  cannot make an event invisible by sending ``-1`` or ``3``.  So does a category outside a
  vocabulary that training saw whole (`CategoricalEncoder`);
- a value that cannot be read at all (``"lots"`` for a number, an object for a category) is
  encoded as missing and reported in `Encoded.unreadable`; the record is still scored, with a
  range excess of 1 unless training data held unreadable values in that field too;
- only a record that must be refused is reported in `Encoded.invalid`: a `required` field
  absent (or unreadable), or, with ``strict``, NaN or infinity.

>>> from trainer.config import FieldSpec
>>> enc = Encoder([FieldSpec("bytes", "numeric"), FieldSpec("proto", "categorical")])
>>> enc = enc.fit([{"bytes": 10, "proto": "tcp"}, {"bytes": 30, "proto": "tcp"},
...                {"bytes": 20, "proto": "udp"}, {"bytes": 25, "proto": "udp"}])
>>> out = enc.transform([{"bytes": 20, "proto": "icmp"}, {"bytes": "lots", "proto": "tcp"},
...                      {"bytes": 40, "proto": "tcp"}, {"bytes": -1, "proto": "tcp"}])
>>> out.X.shape, out.invalid, out.unreadable
((4, 5), [None, None, None, None], {1: [('bytes', "field 'bytes': cannot read 'lots' as a number")]})
>>> out.excess[:, 0].tolist()  # 40 is half the training range out; "lots" and a sign were never seen
[0.0, 1.0, 0.5, 1.0]
>>> out.excess[:, 1].tolist()  # training saw every value of proto twice: icmp is new
[1.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import repeat
from datetime import datetime, timezone
from typing import Any

import numpy as np

from trainer.config import EncodingConfig, FieldSpec
from trainer.errors import AnomonError
from trainer.sampling import Reservoir

MISSING = "<missing>"
UNREADABLE_KEY = "<unreadable in training>"  # in the encoder state, beside the fields' own
OTHER = "<other>"


# Scaled inputs are clipped here: far outside any training range, yet finite in float32 and squared.
INPUT_LIMIT = 1e4
# Range excess is capped so that a score stays finite whatever number arrives.
EXCESS_LIMIT = 1e6
_FLOAT_MAX = float(np.finfo(np.float64).max)
# A numeric field's quantiles come from a uniform sample of at most this many training values (8 MB).
QUANTILE_SAMPLE = 1_000_000


class Problem(StrEnum):
    """Why a record cannot be scored at all (the monitor dead-letters it with this reason)."""

    MISSING_REQUIRED = "missing_required"  # a `required` field absent, or unreadable
    WRONG_TYPE = "wrong_type"  # an unreadable value, where the caller asked to refuse those
    NON_FINITE = "non_finite"  # NaN or infinity, with ``strict``


class EncodingError(AnomonError):
    """A problem fitting the encoder (e.g. a field absent from every training record)."""


@dataclass(frozen=True)
class Block:
    """Where a field's columns sit in the encoded matrix and how its error is measured."""

    field: str
    start: int
    stop: int
    loss: str  # "squared" (per-column weights) or "categorical" (cross-entropy over the slots)


@dataclass
class Encoded:
    """An encoded batch.

    `X` is (n, width) float32; `invalid` holds per record None or why it is refused
    (`Problem`, detail); `unreadable` maps a record's row to its unreadable values
    [(field, detail)], encoded as missing; `excess` (n, fields) is how far each value lies
    outside the training range, in training ranges (0 inside; see `NumericEncoder`; at least 1
    for an unreadable value where training had none).
    """

    X: np.ndarray
    invalid: list[tuple[str, str] | None]
    event_times: np.ndarray | None = None  # epoch seconds of the first timestamp field, NaN if missing
    unreadable: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    excess: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        return valid_mask(self.invalid)


def valid_mask(invalid: list[tuple[str, str] | None]) -> np.ndarray:
    """True for the records without a problem."""
    return np.array([problem is None for problem in invalid], dtype=bool)


class _Problems:
    """Collects the first refusal of each record of a batch, and every unreadable value."""

    def __init__(self, n: int):
        self.invalid: list[tuple[str, str] | None] = [None] * n
        self.unreadable: dict[int, list[tuple[str, str]]] = {}

    def add(self, mask: np.ndarray, reason: Problem, field: str, values: list[Any], what: str) -> None:
        for i in np.flatnonzero(mask):
            if self.invalid[i] is None:
                self.invalid[i] = (reason, what.format(field=field, value=_short(values[i])))

    def unreadable_values(self, mask: np.ndarray, spec: FieldSpec, values: list[Any], what: str) -> None:
        """Values of `mask` cannot be read: encoded as missing, or the record refused if `required`."""
        if not mask.any():
            return
        if spec.required:
            self.add(mask, Problem.MISSING_REQUIRED, spec.name, values, what + " (the field is required)")
            return
        for i in np.flatnonzero(mask):
            detail = what.format(field=spec.name, value=_short(values[i]))
            self.unreadable.setdefault(int(i), []).append((spec.name, detail))


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_none(values: list[Any]) -> np.ndarray:
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


def _to_float(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Floats of `values` (None → NaN) and a mask of values that are not numbers at all."""
    try:
        # Fast path: numbers, None and numeric strings convert in one C loop.
        x = np.array(values, dtype=np.float64)
        if x.ndim == 1:
            return x, np.zeros(len(values), dtype=bool)
    except (ValueError, TypeError, OverflowError):
        pass
    x = np.empty(len(values))
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        try:
            x[i] = np.nan if v is None else float(v)
            bad[i] = isinstance(v, (list, dict))
        except OverflowError:  # an integer beyond float range: a number, and as extreme as floats go
            x[i] = _FLOAT_MAX if v > 0 else -_FLOAT_MAX
        except (ValueError, TypeError):
            x[i], bad[i] = np.nan, True
    return x, bad


class _FieldEncoder:
    """Shared by every field encoder: fitted chunk by chunk with `partial_fit`, on statistics only.

    `partial_fit` adds a chunk of training values to the statistics; `finish` then settles the
    learned state from all of them, once (settling after every chunk re-read a sample that grows
    to 1M values: 0.5 s per numeric field over 1M training values in `TrainingSample`'s chunks,
    against 0.05 s); `fit` starts afresh and does both.  `unreadable_` says whether training held
    values that cannot be read as the field's type.
    """

    def __init__(self, spec: FieldSpec):
        self.spec = spec
        self._reset()

    def _reset(self) -> None:
        self.unreadable_ = False

    def fit(self, values: list[Any]) -> _FieldEncoder:
        self._reset()
        self.partial_fit(values)
        self.finish()
        return self

    def finish(self) -> None:
        """Settle the learned state; raise `EncodingError` if training held nothing to fit this field on."""


class _SquaredFieldEncoder(_FieldEncoder):
    """Shared by the encoders whose columns are measured by squared error, one weight each."""

    loss = "squared"

    def column_weights(self) -> np.ndarray:
        return np.ones(self.width)


class _ValueWithIndicator(_SquaredFieldEncoder):
    """One value column, plus a missing indicator unless the field is `required`."""

    @property
    def width(self) -> int:
        return 1 if self.spec.required else 2


class NumericEncoder(_ValueWithIndicator):
    """Signed log ``sign(x)·log1p(|x|)`` (heavy tails, either side), then scaling fitted on the training data.

    A field never negative in training is shifted to start at 0 and divided by its 99th
    percentile, so the top 1% of training values cannot squash everyone else; a signed field is
    centred on its median and divided by its 1st-99th percentile range (a robust z-score after
    the signed log).  The log keeps a signed field's tails in proportion as it does a count's: on
    the benchmark (`bench/quality.py`) signed fields scaled linearly lost vertebral (0.470
    ROC-AUC against IsolationForest's 0.624) and Waveform (0.650); with the signed log 0.656 and
    0.698, the mean of the 23 sets 0.816 → 0.828, no set lower by more than 0.004.  Every finite
    number maps to a finite input (clipped at ±`INPUT_LIMIT`).  Columns: the scaled value, and
    (unless the field is `required`) a missing indicator.  A field's ``log: false`` keeps its
    values linear.

    `range_excess` says how far a value lies outside the training range [min, max], in
    multiples of that range: 0 inside, 1 one whole range out.  A sign that training never saw,
    or any other value of a field that was constant in training, counts as at least 1.  The
    log keeps the autoencoder's inputs in proportion; the excess keeps extremes extreme.

    The neighbour distance (`Encoder.distance_inputs`) is a Euclidean distance, so it measures a
    non-negative field on the scale where its training values look most normal: the log or the
    value itself, whichever Box-Cox's profile likelihood prefers (`distance_`, None when that is
    the autoencoder's scale, or when the field's ``log`` setting chooses).  A count that spans
    orders of magnitude keeps its log; a blood-sugar level, whose log squashes the high values
    where diabetics are, does not (Pima: 0.670 → 0.711 ROC-AUC; the autoencoder, whose inputs
    keep the log, loses on NSL-KDD without it: 0.964 → 0.953 over five seeds).  Box-Cox compares
    powers of positive values, so a signed field keeps the signed log.
    """

    def _reset(self) -> None:
        super()._reset()
        # Exact range; quantiles from a uniform sample (every value, up to `QUANTILE_SAMPLE`).
        self._values = Reservoir(QUANTILE_SAMPLE)
        self._low, self._high = math.inf, -math.inf

    def partial_fit(self, values: list[Any]) -> NumericEncoder:
        x, bad = _to_float(values)
        self.unreadable_ |= bool(bad.any())
        x = x[np.isfinite(x)]
        if x.size == 0:
            return self
        self._values.add(x)
        self._low, self._high = min(self._low, float(x.min())), max(self._high, float(x.max()))
        return self

    def finish(self) -> None:
        if not self._values.seen_:
            raise EncodingError(f"encoding: numeric field '{self.spec.name}' has no numeric value in the training data")
        sample = self._values.sample_
        self.log_ = bool(self.spec.log) if self.spec.log is not None else True
        self.center_, self.scale_ = _scaling(sample, self._low, self._high, self.log_)
        self.distance_ = None
        if self.spec.log is None and self._low >= 0 and not _log_is_likelier(sample):
            self.distance_ = (False, *_scaling(sample, self._low, self._high, False))
        self.range_ = [self._low, self._high]

    def transform(self, values: list[Any], out: np.ndarray, problems: _Problems, strict: bool) -> np.ndarray:
        """Encode into `out`; returns the range excess of every value (0 where missing)."""
        x, bad = _to_float(values)  # unreadable values are NaN in `x`
        finite = np.isfinite(x)
        if not finite.all():  # absent (None), NaN/inf, or unreadable
            none = _is_none(values)
            if strict:
                problems.add(~finite & ~none & ~bad, Problem.NON_FINITE, self.spec.name, values,
                             "field '{field}': non-finite value {value}")
            if self.spec.required:
                problems.add(none, Problem.MISSING_REQUIRED, self.spec.name, values, "field '{field}' is required")
            problems.unreadable_values(bad, self.spec, values, "field '{field}': cannot read {value} as a number")
        x = np.where(finite, x, 0.0)
        out[:, 0] = np.where(finite, _scaled(x, self.log_, self.center_, self.scale_), 0.0)
        if not self.spec.required:
            out[:, 1] = ~finite
        return np.where(finite, self.range_excess(x), 0.0)

    def range_excess(self, x: np.ndarray) -> np.ndarray:
        """Distance outside the training range in training ranges (see the class docstring).

        >>> from trainer.config import FieldSpec
        >>> enc = NumericEncoder(FieldSpec("n", "numeric")).fit([0, 1, 0, 1])
        >>> enc.range_excess(np.array([0.5, 3, -1e-6, 100])).tolist()
        [0.0, 2.0, 1.0, 99.0]
        """
        low, high = self.range_
        width = high - low if high > low else max(abs(high), 1.0)
        excess = np.maximum(np.maximum(low - x, x - high), 0.0) / width
        unseen = ((x < 0) & (low >= 0)) | ((high == low) & (x != low))
        return np.minimum(np.where(unseen, np.maximum(excess, 1.0), excess), EXCESS_LIMIT)

    def expected(self, recon: np.ndarray) -> list[Any]:
        """Reconstructed values, kept inside the training range (a rate reads 1.0, never 1.03)."""
        x = np.clip(self.unscaled(recon[:, 0].astype(np.float64)), *self.range_)
        return [round(float(v), 6) for v in x]

    def distance_column(self, column: np.ndarray) -> np.ndarray:
        """The encoded value `column` on the neighbour distance's scale (see the class docstring)."""
        if self.distance_ is None:
            return column
        with np.errstate(over="ignore"):  # a clipped input far out maps to ±inf, clipped again
            x = self.unscaled(column.astype(np.float64))
        return _scaled(x, *self.distance_)

    def unscaled(self, t: np.ndarray) -> np.ndarray:
        """Encoded values `t` back in the field's own units (not clipped to the training range)."""
        return _unscaled(t, self.log_, self.center_, self.scale_)

    def state(self) -> dict[str, Any]:
        return {"log": self.log_, "center": self.center_, "scale": self.scale_, "range": self.range_,
                "distance": self.distance_}

    def load_state(self, state: dict[str, Any]) -> None:
        self.log_, self.center_, self.scale_, self.range_ = state["log"], state["center"], state["scale"], state["range"]
        distance = state.get("distance")  # bundles of earlier releases: one scale
        self.distance_ = (bool(distance[0]), float(distance[1]), float(distance[2])) if distance else None


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _scaling(sample: np.ndarray, low: float, high: float, log: bool) -> tuple[float, float]:
    """(center, scale) of a numeric field's inputs: see `NumericEncoder`."""
    t = _signed_log(sample) if log else sample
    t_low, t_high = _signed_log(np.array([low, high])) if log else (low, high)  # the log is monotonic
    if log and low >= 0:
        center = float(t_low)
        spread = np.quantile(t, 0.99) - center
    else:
        center = float(np.median(t))
        spread = np.subtract(*np.quantile(t, [0.99, 0.01]))
    spread = spread if spread > 0 else t_high - t_low
    return center, float(spread) if spread > 0 else 1.0


def _scaled(x: np.ndarray, log: bool, center: float, scale: float) -> np.ndarray:
    return np.clip(((_signed_log(x) if log else x) - center) / scale, -INPUT_LIMIT, INPUT_LIMIT)


def _unscaled(t: np.ndarray, log: bool, center: float, scale: float) -> np.ndarray:
    u = t * scale + center
    return np.sign(u) * np.expm1(np.abs(u)) if log else u


def _log_is_likelier(x: np.ndarray) -> bool:
    """Whether the signed log of `x` looks likelier normal than `x` (Box-Cox's profile likelihood, λ 0 vs 1)."""
    spread = lambda v: max(float(np.var(v)), 1e-300)  # noqa: E731
    return -0.5 * np.log(spread(_signed_log(x))) - float(np.mean(np.log1p(np.abs(x)))) > -0.5 * np.log(spread(x))


def _tokens(values: list[Any]) -> list[str | None]:
    """String tokens of category values; None for values that are not scalars (lists, objects)."""
    # Strings and integers, the usual values, skip the call: this runs once per value.
    return [v if v.__class__ is str else str(v) if v.__class__ is int else _token(v) for v in values]


def _category_tokens(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """String tokens for category values and a mask of values that are not scalars."""
    tokens = np.array(_tokens(values), dtype=object)
    return tokens, tokens == None  # noqa: E711 - elementwise comparison with the object array


def _token(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return None  # lists and objects are not categories


class CategoricalEncoder(_FieldEncoder):
    """One-hot over the frequent values plus one slot for values unseen or rare in training.

    A missing value is the token ``<missing>``, a category like any other: frequent in
    training, it gets a slot of its own; otherwise it falls into the unseen/rare slot.

    When every training value had a slot of its own (`other_seen_` False: a closed vocabulary,
    such as the countries users live in), a value outside it is something training never saw,
    like a number of a sign never seen: its range excess is 1 and it alerts by itself.  A field
    with rare or too many values in training has seen that slot, and a new value there is only
    as odd as the autoencoder and the neighbour distance find it.  A missing value never counts.

    >>> from trainer.config import FieldSpec
    >>> enc = CategoricalEncoder(FieldSpec("country", "categorical")).fit(["US", "US", "DE", "DE"])
    >>> out = np.zeros((3, enc.width))
    >>> enc.transform(["DE", "KP", None], out, _Problems(3), strict=False).tolist()
    [0.0, 1.0, 0.0]
    """

    loss = "categorical"

    def __init__(self, spec: FieldSpec, max_categories: int = 100, min_count: int = 2):
        self.max_categories = spec.max_categories or max_categories
        self.min_count = spec.min_count or min_count
        super().__init__(spec)

    @property
    def width(self) -> int:
        return len(self.categories_) + 1

    def column_weights(self) -> np.ndarray:
        return np.zeros(self.width)

    def _reset(self) -> None:
        super()._reset()
        self._counts: Counter[str] = Counter()

    def partial_fit(self, values: list[Any]) -> CategoricalEncoder:
        tokens = _tokens(values)
        self.unreadable_ |= None in tokens
        self._counts.update(t for t in tokens if t is not None)
        return self

    def finish(self) -> None:
        # The most frequent first, ties in token order.
        frequent = ((-n, c) for c, n in self._counts.items() if n >= self.min_count)
        self.categories_ = [c for _, c in heapq.nsmallest(self.max_categories, frequent)]
        self._index = {c: i for i, c in enumerate(self.categories_)}
        self.other_seen_ = len(self.categories_) < len(self._counts)

    def transform(self, values: list[Any], out: np.ndarray, problems: _Problems, strict: bool) -> np.ndarray:
        """Encode into `out`; returns the range excess of every value (see the class docstring)."""
        tokens = _tokens(values)
        n = len(tokens)
        if None in tokens:  # lists and objects: read as missing
            bad = np.fromiter((t is None for t in tokens), dtype=bool, count=n)
            problems.unreadable_values(bad, self.spec, values, "field '{field}': {value} is not a category value")
            tokens = [MISSING if t is None else t for t in tokens]
        if self.spec.required and MISSING in tokens:
            missing = np.fromiter((t == MISSING for t in tokens), dtype=bool, count=n)
            problems.add(missing, Problem.MISSING_REQUIRED, self.spec.name, values, "field '{field}' is required")
        # Unseen and rare values share the last slot (and <missing>, unless frequent in training).
        slots = np.fromiter(map(self._index.get, tokens, repeat(len(self.categories_))), dtype=np.intp, count=n)
        out[np.arange(n), slots] = 1.0
        excess = np.zeros(n)
        if not self.other_seen_:
            unseen = np.flatnonzero(slots == len(self.categories_))  # usually none: look only at those
            excess[[i for i in unseen.tolist() if tokens[i] != MISSING]] = 1.0
        return excess

    def expected(self, recon: np.ndarray) -> list[Any]:
        names = [*self.categories_, OTHER]
        return [names[i] for i in recon.argmax(axis=1)]

    def state(self) -> dict[str, Any]:
        return {"categories": self.categories_, "other_seen": self.other_seen_}

    def load_state(self, state: dict[str, Any]) -> None:
        self.categories_ = list(state["categories"])
        self._index = {c: i for i, c in enumerate(self.categories_)}
        self.other_seen_ = state.get("other_seen", True)  # bundles of earlier releases: no excess


TRUE_TOKENS = {"true", "t", "yes", "y", "1", "1.0"}
FALSE_TOKENS = {"false", "f", "no", "n", "0", "0.0"}
# The usual boolean values, looked up as they are: 1 true, 0 false, 2 missing.  (True == 1 == 1.0
# and False == 0 == 0.0 as keys, which read the same as their tokens.)
_BOOLEAN_CODES = {**dict.fromkeys(TRUE_TOKENS, 1), **dict.fromkeys(FALSE_TOKENS, 0), True: 1, False: 0, None: 2}


class BooleanEncoder(_ValueWithIndicator):
    """0/1 column (true/false, yes/no, 1/0 accepted) and a missing indicator unless required."""

    def _read(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            codes = np.fromiter(map(_BOOLEAN_CODES.__getitem__, values), dtype=np.int8, count=len(values))
        except (KeyError, TypeError):  # other spellings ("Yes"), NaN, wrong types: token by token
            pass
        else:
            return codes == 1, codes == 2, np.zeros(len(values), dtype=bool)
        tokens, bad = _category_tokens(values)
        uniques, inverse = np.unique(np.where(bad, "", tokens).astype(str), return_inverse=True)
        lowered = np.char.lower(uniques.astype(str))
        is_true = np.isin(lowered, list(TRUE_TOKENS))[inverse]
        is_false = np.isin(lowered, list(FALSE_TOKENS))[inverse]
        missing = tokens == MISSING
        bad = ~(is_true | is_false | missing)
        return is_true, missing, bad

    def _reset(self) -> None:
        super()._reset()
        self._true = self._seen = 0

    def partial_fit(self, values: list[Any]) -> BooleanEncoder:
        is_true, missing, bad = self._read(values)
        self.unreadable_ |= bool(bad.any())
        seen = ~(missing | bad)
        self._true += int(is_true[seen].sum())
        self._seen += int(seen.sum())
        return self

    def finish(self) -> None:
        self.impute_ = float(self._true / self._seen >= 0.5) if self._seen else 0.0

    def transform(self, values: list[Any], out: np.ndarray, problems: _Problems, strict: bool) -> None:
        is_true, missing, bad = self._read(values)
        problems.unreadable_values(bad, self.spec, values, "field '{field}': cannot read {value} as a boolean")
        if self.spec.required:
            problems.add(missing, Problem.MISSING_REQUIRED, self.spec.name, values, "field '{field}' is required")
        missing |= bad
        out[:, 0] = np.where(missing, self.impute_, is_true)
        if not self.spec.required:
            out[:, 1] = missing

    def expected(self, recon: np.ndarray) -> list[Any]:
        return [bool(v) for v in recon[:, 0] >= 0.5]

    def state(self) -> dict[str, Any]:
        return {"impute": self.impute_}

    def load_state(self, state: dict[str, Any]) -> None:
        self.impute_ = state["impute"]


class VectorEncoder(_SquaredFieldEncoder):
    """A fixed-length array of numbers, min-max scaled as a whole (images keep their shape).

    Its squared error is averaged over the elements so that a 784-pixel field weighs like
    one field, not like 784.
    """

    @property
    def width(self) -> int:
        return self.spec.size + (0 if self.spec.required else 1)

    def column_weights(self) -> np.ndarray:
        weights = np.full(self.width, 1.0 / self.spec.size)
        if not self.spec.required:
            weights[-1] = 1.0
        return weights

    def _read(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size, n = self.spec.size, len(values)
        none = _is_none(values)
        try:
            x = np.array([v if v is not None else [np.nan] * size for v in values], dtype=np.float64)
            if x.shape != (n, size):
                raise ValueError
            bad = np.zeros(n, dtype=bool)
        except (ValueError, TypeError, OverflowError):
            x = np.full((n, size), np.nan)
            bad = np.zeros(n, dtype=bool)
            for i, v in enumerate(values):
                try:
                    row = np.asarray(v, dtype=np.float64)
                    if row.shape == (size,):
                        x[i] = row
                    else:
                        bad[i] = v is not None
                except (ValueError, TypeError, OverflowError):
                    bad[i] = True
        # A null element is not a number (unreadable), unlike NaN: looked for only where x has NaN.
        for i in np.flatnonzero(~none & ~bad & np.isnan(x).any(axis=1)):
            bad[i] = any(element is None for element in values[i])
        return x, none, bad

    def _reset(self) -> None:
        super()._reset()
        self._low, self._high = math.inf, -math.inf

    def partial_fit(self, values: list[Any]) -> VectorEncoder:
        x, none, bad = self._read(values)
        self.unreadable_ |= bool(bad.any())
        x = x[~(none | bad)]
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return self
        self._low, self._high = min(self._low, float(finite.min())), max(self._high, float(finite.max()))
        return self

    def finish(self) -> None:
        if self._low > self._high:
            raise EncodingError(f"encoding: vector field '{self.spec.name}' has no valid value in the training data")
        self.low_ = self._low
        self.scale_ = self._high - self._low if self._high > self._low else 1.0

    def transform(self, values: list[Any], out: np.ndarray, problems: _Problems, strict: bool) -> None:
        x, none, bad = self._read(values)
        what = f"field '{{field}}': expected a list of {self.spec.size} numbers, got {{value}}"
        problems.unreadable_values(bad, self.spec, values, what)
        non_finite = ~np.isfinite(x).all(axis=1) & ~none & ~bad
        if strict:
            problems.add(non_finite, Problem.NON_FINITE, self.spec.name, values, "field '{field}': non-finite element")
        if self.spec.required:
            problems.add(none, Problem.MISSING_REQUIRED, self.spec.name, values, "field '{field}' is required")
        scaled = np.clip((x - self.low_) / self.scale_, -INPUT_LIMIT, INPUT_LIMIT)
        out[:, : self.spec.size] = np.where(np.isfinite(scaled), scaled, 0.0)
        if not self.spec.required:
            out[:, -1] = none | bad

    def expected(self, recon: np.ndarray) -> list[Any]:
        return [None] * len(recon)  # an image's reconstruction is shown by the report, not in alerts

    def reconstruct(self, recon: np.ndarray) -> np.ndarray:
        """Reconstructed vectors on the original scale, e.g. for pictures."""
        return recon[:, : self.spec.size] * self.scale_ + self.low_

    def state(self) -> dict[str, Any]:
        return {"low": self.low_, "scale": self.scale_}

    def load_state(self, state: dict[str, Any]) -> None:
        self.low_, self.scale_ = state["low"], state["scale"]


def parse_times(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds of ISO-8601 strings or epoch numbers (ms if > 1e11), NaN if missing, and a bad mask.

    >>> parse_times(["1970-01-01T00:01:00Z", 120, None, "soon"])[0].tolist()
    [60.0, 120.0, nan, nan]
    """
    # ISO dates ("YYYY-MM-..."), the usual case, skip the number parser: failing there costs more than
    # parsing.  Kind 2 is UTC ("...Z"), which numpy parses in one C loop (with the Z, it warns).
    kind = np.fromiter(((2 if v[-1] == "Z" else 1) if v.__class__ is str and len(v) >= 10 and v[4] == v[7] == "-"
                        else 0 for v in values), dtype=np.int8, count=len(values))
    iso = kind > 0
    if iso.any():
        x, bad = np.full(len(values), np.nan), iso.copy()
        if not iso.all():
            x[~iso], bad[~iso] = _to_float([v for v, skip in zip(values, iso) if not skip])
        utc = np.flatnonzero(kind == 2)
        try:
            x[utc] = np.array([values[i][:-1] for i in utc], dtype="datetime64[us]").astype(np.int64) / 1e6
            bad[utc] = False
        except ValueError:
            pass  # one of them is not a date: all are parsed one by one below
    else:
        x, bad = _to_float(values)
    for i in np.flatnonzero(bad):
        try:
            stamp = datetime.fromisoformat(values[i])
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=timezone.utc)
            x[i], bad[i] = stamp.timestamp(), False
        except (ValueError, TypeError):  # not a date, or not a string at all
            pass
    x = np.where(x > 1e11, x / 1000.0, x)
    return x, bad


class TimestampEncoder(_SquaredFieldEncoder):
    """Event time; with `cyclic` (default) hour-of-day and day-of-week as sin/cos pairs."""

    @property
    def width(self) -> int:
        return (4 if self.spec.cyclic else 0) + (0 if self.spec.required else 1)

    def partial_fit(self, values: list[Any]) -> TimestampEncoder:
        self.unreadable_ |= bool(parse_times(values)[1].any())
        return self

    def transform(self, values: list[Any], out: np.ndarray, problems: _Problems, strict: bool) -> np.ndarray:
        """Encode into `out`; returns the event times (epoch seconds, NaN where missing)."""
        seconds, bad = parse_times(values)
        problems.unreadable_values(bad, self.spec, values, "field '{field}': cannot read {value} as a time")
        if self.spec.required:
            problems.add(_is_none(values), Problem.MISSING_REQUIRED, self.spec.name, values,
                         "field '{field}' is required")
        missing = ~np.isfinite(seconds)
        t = np.where(missing, 0.0, seconds)
        if self.spec.cyclic:
            day = 2 * np.pi * (t % 86400) / 86400
            week = 2 * np.pi * ((t / 86400 + 3) % 7) / 7  # 1970-01-01 was a Thursday: Monday = 0
            features = np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], axis=1)
            out[:, :4] = np.where(missing[:, None], 0.0, features)
        if not self.spec.required:
            out[:, -1] = missing
        return seconds

    def expected(self, recon: np.ndarray) -> list[Any]:
        if not self.spec.cyclic:
            return [None] * len(recon)
        hours = (np.arctan2(recon[:, 0], recon[:, 1]) % (2 * np.pi)) * 24 / (2 * np.pi)
        return [f"{int(h):02d}:{int(h % 1 * 60):02d}" for h in hours]

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


FieldEncoder = NumericEncoder | CategoricalEncoder | BooleanEncoder | VectorEncoder | TimestampEncoder


class Encoder:
    """Fits per-field encoders and turns batches of records into one float32 matrix.

    Parameters
    ----------
    fields
        The schema; `ignore` fields are skipped.
    encoding
        Categorical vocabulary limits.
    """

    def __init__(self, fields: tuple[FieldSpec, ...] | list[FieldSpec],
                 encoding: EncodingConfig = EncodingConfig()):  # noqa: B008 - frozen: safe to share
        self.fields = tuple(fields)
        self.encoding = encoding
        self._reset()

    def _reset(self) -> None:
        self.encoders_: list[FieldEncoder] = [self._make(spec) for spec in self.fields if spec.type != "ignore"]
        self.unreadable_in_training_: frozenset[str] = frozenset()

    def _make(self, spec: FieldSpec) -> FieldEncoder:
        if spec.type == "categorical":
            return CategoricalEncoder(spec, self.encoding.max_categories, self.encoding.min_count)
        return {
            "numeric": NumericEncoder,
            "boolean": BooleanEncoder,
            "vector": VectorEncoder,
            "timestamp": TimestampEncoder,
        }[spec.type](spec)

    @property
    def field_names(self) -> list[str]:
        """The modelled fields, in block order."""
        return [e.spec.name for e in self.encoders_]

    @property
    def blocks(self) -> list[Block]:
        blocks, start = [], 0
        for e in self.encoders_:
            blocks.append(Block(e.spec.name, start, start + e.width, e.loss))
            start += e.width
        return blocks

    @property
    def width(self) -> int:
        return sum(e.width for e in self.encoders_)

    def column_weights(self) -> np.ndarray:
        """Squared-error weight of every column (0 for categorical slots)."""
        return np.concatenate([e.column_weights() for e in self.encoders_])

    def fit(self, records: list[dict[str, Any]]) -> Encoder:
        """Fit on `records` at once; for a stream, `partial_fit` chunk by chunk, then `finish`."""
        self._reset()
        return self.partial_fit(records).finish()

    def partial_fit(self, records: list[dict[str, Any]]) -> Encoder:
        """Add a chunk of training records to every field's statistics (`finish` settles the state).

        >>> from trainer.config import FieldSpec
        >>> chunks = [[{"n": 1, "c": "a"}, {"n": 5, "c": "a"}], [{"n": "lots", "c": "b"}, {"n": 3, "c": "b"}]]
        >>> streamed = Encoder([FieldSpec("n", "numeric"), FieldSpec("c", "categorical")])
        >>> for chunk in chunks:
        ...     _ = streamed.partial_fit(chunk)
        >>> streamed.finish().state() == Encoder(streamed.fields).fit(chunks[0] + chunks[1]).state()
        True
        >>> sorted(streamed.unreadable_in_training_)
        ['n']
        """
        for e in self.encoders_:
            e.partial_fit([r.get(e.spec.name) for r in records])
        return self

    def finish(self) -> Encoder:
        """Settle every field's learned state from the chunks so far; raise `EncodingError` for a
        field the training records gave nothing to fit on."""
        for e in self.encoders_:
            e.finish()
        # Fields whose training data already held unreadable values: there, one is not news.  (A
        # required field's unreadable value makes the record invalid instead.)
        self.unreadable_in_training_ = frozenset(e.spec.name for e in self.encoders_
                                                 if e.unreadable_ and not e.spec.required)
        return self

    def transform(self, records: list[dict[str, Any]], strict: bool = False) -> Encoded:
        """Encode `records`; with `strict`, NaN/inf values are invalid instead of missing."""
        n = len(records)
        X = np.zeros((n, self.width), dtype=np.float32)
        excess = np.zeros((n, len(self.encoders_)))
        problems = _Problems(n)
        event_times = None
        for j, (e, block) in enumerate(zip(self.encoders_, self.blocks)):
            values = [r.get(e.spec.name) for r in records]
            parsed = e.transform(values, X[:, block.start : block.stop], problems, strict)
            if isinstance(e, (NumericEncoder, CategoricalEncoder)):
                excess[:, j] = parsed
            elif event_times is None and isinstance(e, TimestampEncoder):
                event_times = parsed  # parsed once, for the encoding and for the caller (event lag)
        if problems.unreadable:  # a kind of value training never saw: as far out as a sign never seen
            column = {name: j for j, name in enumerate(self.field_names)}
            for row, values in problems.unreadable.items():
                for name, _ in values:
                    if name not in self.unreadable_in_training_:
                        excess[row, column[name]] = max(excess[row, column[name]], 1.0)
        return Encoded(X, problems.invalid, event_times, problems.unreadable, excess)

    def distance_inputs(self, X: np.ndarray) -> np.ndarray:
        """Encoded records `X` with each numeric value on the neighbour distance's scale
        (`NumericEncoder.distance_column`); `X` itself when every field has one scale."""
        remapped = [(e, b.start) for e, b in zip(self.encoders_, self.blocks)
                    if isinstance(e, NumericEncoder) and e.distance_ is not None]
        if not remapped:
            return X
        X = np.array(X, dtype=np.float32)
        for e, column in remapped:
            X[:, column] = e.distance_column(X[:, column])
        return X

    def state(self) -> dict[str, Any]:
        return {**{e.spec.name: e.state() for e in self.encoders_},
                UNREADABLE_KEY: sorted(self.unreadable_in_training_)}

    def load_state(self, state: dict[str, Any]) -> Encoder:
        missing = [name for name in self.field_names if name not in state]
        if missing:
            raise EncodingError(f"encoding: stored state has no entry for field '{missing[0]}'")
        for e in self.encoders_:
            e.load_state(state[e.spec.name])
        self.unreadable_in_training_ = frozenset(state.get(UNREADABLE_KEY, ()))
        return self

    def encoder_for(self, field: str) -> FieldEncoder:
        return next(e for e in self.encoders_ if e.spec.name == field)
