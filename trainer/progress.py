"""Progress reporting: a tqdm bar on a terminal, plain log lines otherwise (CI, pipes, files)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True) -> tqdm:
    """A tqdm bar that only draws on an interactive stderr; `.set_postfix` works either way."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


def log(message: str, enabled: bool = True) -> None:
    """A plain progress line on stderr (used when no bar is drawn)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)
