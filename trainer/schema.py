"""Proposing a config from a sample of data: `anomon schema infer DATA`.

Each field's type is guessed from its values; identifiers (strings with nearly as many distinct
values as records) are proposed as `ignore`, with a comment saying why.  Only JSON ``true`` /
``false`` (or the strings ``"true"`` / ``"false"``) make a `boolean`: numbers that happen to be
0 or 1 in the sample are `numeric`, so that a 3 arriving later is a number far out of range (and
scored as such), not a value the encoder cannot read.  A field constant in the sample stays in,
with a comment: any other value is then anomalous.

>>> records = [{"id": f"u{i}", "ok": i % 2 == 0, "flag": i % 2, "bytes": i * 10, "proto": "tcp"}
...            for i in range(200)]
>>> guesses = infer_fields(records)
>>> {name: g.type for name, g in guesses.items()}
{'id': 'ignore', 'ok': 'boolean', 'flag': 'numeric', 'bytes': 'numeric', 'proto': 'categorical'}
>>> guesses["proto"].comment
'constant in the sample: any other value will be anomalous'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from trainer.encoding import parse_times

_ID_MIN_DISTINCT = 50
_ID_DISTINCT_RATIO = 0.5
_MISSING_TOKENS = {"", "nan", "null", "none", "na", "n/a"}
_BOOLEAN_TOKENS = {"true", "false"}


@dataclass(frozen=True)
class FieldGuess:
    """A proposed type for one field, with the reason shown as a YAML comment."""

    type: str
    size: int | None = None
    comment: str = ""


def infer_fields(records: list[dict[str, Any]]) -> dict[str, FieldGuess]:
    """Guess every field's type from `records` (fields in order of first appearance)."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return {name: _guess([r.get(name) for r in records]) for name in names}


def _guess(values: list[Any]) -> FieldGuess:
    present = [v for v in values if not _is_missing(v)]
    if not present:
        return FieldGuess("ignore", comment="no values in the sample")
    missing = 1 - len(present) / len(values)
    note = f"{missing:.0%} missing" if missing else ""
    if all(isinstance(v, list) for v in present):
        sizes = {len(v) for v in present}
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for v in present[:100] for x in v)
        if len(sizes) == 1 and numeric:
            return FieldGuess("vector", size=sizes.pop(), comment=note)
        return FieldGuess("ignore", comment="lists of varying length or type")
    if any(isinstance(v, (dict, list)) for v in present):
        return FieldGuess("ignore", comment="nested values")
    if all(isinstance(v, bool) or isinstance(v, str) and v.strip().lower() in _BOOLEAN_TOKENS for v in present):
        return FieldGuess("boolean", comment=note)
    distinct = len(Counter(map(str, present)))
    if distinct == 1:
        note = ", ".join(filter(None, ["constant in the sample: any other value will be anomalous", note]))
    numbers = np.array([_number(v) for v in present])
    if np.isfinite(numbers).mean() >= 0.95:
        return FieldGuess("numeric", comment=note)
    if all(isinstance(v, str) for v in present):
        times, bad = parse_times(present)
        if not bad.any():
            return FieldGuess("timestamp", comment=note)
    if distinct >= _ID_MIN_DISTINCT and distinct / len(present) > _ID_DISTINCT_RATIO:
        return FieldGuess("ignore", comment=f"high cardinality ({distinct} distinct of {len(present)}): "
                                             "an identifier? use it as 'key' to carry it into alerts")
    return FieldGuess("categorical", comment=note if distinct == 1 else
                      ", ".join(filter(None, [f"{distinct} distinct values", note])))


def _is_missing(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_TOKENS
    return value is None or (isinstance(value, float) and np.isnan(value))


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def render_config(guesses: dict[str, FieldGuess], source: str = "") -> str:
    """A commented `anomon.yaml` proposal."""
    lines = [f"# Proposed by `anomon schema infer` from {source or 'a data sample'}; review before training."]
    lines.append("fields:")
    for name, guess in guesses.items():
        spec: Any = guess.type if guess.size is None else {"type": guess.type, "size": guess.size}
        text = f"  {yaml.safe_dump({name: spec}, default_flow_style=True, width=1000).strip()[1:-1]}"
        lines.append(f"{text}  # {guess.comment}" if guess.comment else text)
    ids = [name for name, g in guesses.items() if g.comment.startswith("high cardinality")]
    lines.append(f"# key: {ids[0]}" if ids else "# key: <a field carried into alerts>")
    lines += ["threshold:", "  method: quantile", "  target_rate: 0.001", ""]
    return "\n".join(lines)
