"""Writing files so that nobody ever reads a half-written one: temporary name, fsync, rename.

A crash (or a full disk, or an exception) while writing leaves the previous file, or no file,
never a truncated one: readers such as a monitor reloading a model, or a dashboard reading a
report, see either the old content or the new.  `atomic_write` is for one file, `atomic_directory`
for a directory filled file by file (a model version), renamed into place once complete.

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "metrics.json"
>>> with atomic_write(path) as stream:
...     _ = stream.write('{"ok": true}')
>>> path.read_text(), [p.name for p in path.parent.iterdir()]
('{"ok": true}', ['metrics.json'])
>>> try:
...     with atomic_write(path) as stream:
...         _ = stream.write('{"half')
...         raise OSError("disk full")
... except OSError:
...     pass
>>> path.read_text(), [p.name for p in path.parent.iterdir()]
('{"ok": true}', ['metrics.json'])
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMPORARY_PREFIX = ".tmp-"  # what a reader listing a directory should skip


def temporary_name(path: Path, directory: Path | None = None) -> Path:
    """Where `path` is written before it is renamed: a hidden name in `directory` (default: its own)."""
    return (path.parent if directory is None else directory) / f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on success fsync it and rename it to `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    `mode` is ``"w"`` (text, UTF-8 unless `open_args` say otherwise) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    temporary = temporary_name(path)
    if mode == "w":
        open_args.setdefault("encoding", "utf-8")
    try:
        with open(temporary, mode, **open_args) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as stream:
        stream.write(text)


@contextlib.contextmanager
def atomic_directory(path: str | Path, staging: str | Path | None = None) -> Iterator[Path]:
    """A temporary directory, renamed to `path` once the block succeeds.

    It is made in `staging` (default: next to `path`; it must be on the same file system), so
    that whoever lists `path`'s parent never sees a partial directory.  The files written in it
    are fsynced before the rename.  `path` must not exist (a directory is never replaced); on an
    exception the temporary directory is removed.
    """
    path = Path(path)
    temporary = temporary_name(path, None if staging is None else Path(staging))
    temporary.mkdir(parents=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporary
        for child in temporary.iterdir():
            if child.is_file():
                with open(child, "rb") as stream:
                    os.fsync(stream.fileno())
        _fsync_directory(temporary)
        os.rename(temporary, path)  # fails if `path` appeared meanwhile: nothing is overwritten
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    """Make a rename in `path` durable (best effort: some file systems refuse to fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
