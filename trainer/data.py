"""Reading event files: JSON Lines and CSV with a header, optionally gzip-compressed.

Records come out in chunks so that a file of any size is read in constant memory.  A JSON
Lines record is a JSON object, the same shape as a Kafka message value; a CSV record maps
header names to strings (empty cell = missing), which the encoder coerces like any other value.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
>>> _ = path.write_text('{"a": 1}\\n{"a": 2}\\n{"a": 3}\\n')
>>> [len(chunk) for chunk in iter_chunks(path, chunk_size=2)]
[2, 1]
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any
from trainer.errors import AnomonError

SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".csv.gz")


class DataError(AnomonError):
    """An unreadable data file, worded as one line that names the file and line."""


def iter_chunks(path: str | Path, chunk_size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    """Yield the records of `path` in lists of at most `chunk_size`."""
    records = iter_records(path)
    while chunk := list(islice(records, chunk_size)):
        yield chunk


class RecordFile:
    """The records of a file, read again from the start on every ``iter()`` (`trainer.fit.fit` reads twice).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> _ = path.write_text('{"a": 1}\\n{"a": 2}\\n')
    >>> records = RecordFile(path)
    >>> list(records) == list(records) == [{"a": 1}, {"a": 2}]
    True
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter_records(self.path)


def read_records(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """All records of `path` (or the first `limit`) as a list."""
    return list(islice(iter_records(path), limit))


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a `.jsonl`, `.csv` (optionally `.gz`) file one by one."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(SUFFIXES):
        raise DataError(f"data: {path} is not one of {', '.join(SUFFIXES)}")
    if path.is_dir():
        raise DataError(f"data: {path} is a directory, not a file")
    if not path.is_file():
        raise DataError(f"data: {path} does not exist")
    reader = _iter_csv if ".csv" in name else _iter_jsonl
    lines = [0]  # lines read so far, kept by the reader: where a decoding error happened
    with _reading(path, lines), _open_text(path) as stream:
        yield from reader(stream, path, lines)


@contextlib.contextmanager
def _reading(path: Path, lines: list[int]) -> Iterator[None]:
    """Turn what a damaged file raises (bad UTF-8, a truncated gzip...) into one-line `DataError`s."""
    try:
        yield
    except UnicodeDecodeError:
        raise DataError(f"data: {path} is not UTF-8 text (after line {lines[0]})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"data: {path} is a truncated or corrupt gzip file (after line {lines[0]}: {exc})") from None
    except OSError as exc:
        raise DataError(f"data: cannot read {path}: {exc.strerror or exc}") from None


def count_lines(path: str | Path) -> int:
    """Number of records in a file (lines, less a CSV header), for progress bars."""
    lines = [0]
    with _reading(Path(path), lines), _open_text(Path(path)) as stream:
        n = sum(1 for line in stream if line.strip())
    return n - 1 if ".csv" in Path(path).name.lower() else n


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _iter_jsonl(stream: io.TextIOBase, path: Path, lines: list[int]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, start=1):
        lines[0] = number
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"data: {path} line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"data: {path} line {number}: expected a JSON object")
        yield record


def _iter_csv(stream: io.TextIOBase, path: Path, lines: list[int]) -> Iterator[dict[str, Any]]:
    rows = csv.reader(stream)
    header = next(rows, None)
    if not header:
        raise DataError(f"data: {path} has no header line")
    width = len(header)
    for number, row in enumerate(rows, start=2):
        lines[0] = number
        if not row:
            continue
        if len(row) != width:
            raise DataError(f"data: {path} line {number}: {len(row)} columns, header has {width}")
        yield {name: (cell if cell != "" else None) for name, cell in zip(header, row)}
