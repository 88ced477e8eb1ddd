"""Readers for the public data sets in the shared data folder.

The data lives outside the project (``../shared/data/`` relative to the
repository root) and is never copied into it. Set the environment variable
``ANOMON_SHARED_DATA`` to read it from somewhere else.

Examples
--------
>>> from trainer.datasets import SHARED_DATA, read_nsl_kdd
>>> rows = read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
>>> len(rows), rows[0]["service"], rows[0]["src_bytes"], rows[0]["attack"]
(25192, 'ftp_data', 491, 'normal')

"""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import math
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "SHARED_DATA",
    "NSL_KDD_COLUMNS",
    "read_nsl_kdd",
    "nsl_kdd_schema",
    "read_mnist_idx",
    "mnist_records",
    "write_jsonl",
    "read_adbench",
    "read_arff",
]

SHARED_DATA: Path = Path(
    os.environ.get(
        "ANOMON_SHARED_DATA",
        Path(__file__).resolve().parents[1].parent / "shared" / "data",
    )
)

NSL_KDD_COLUMNS: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes",
    "land", "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in",
    "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds",
    "is_host_login", "is_guest_login", "count", "srv_count", "serror_rate",
    "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
    "diff_srv_rate", "srv_diff_host_rate", "dst_host_count", "dst_host_srv_count",
    "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate",
    "dst_host_serror_rate", "dst_host_srv_serror_rate", "dst_host_rerror_rate",
    "dst_host_srv_rerror_rate", "attack", "difficulty",
)  # fmt: skip

_NSL_KDD_CATEGORICAL = ("protocol_type", "service", "flag")
_NSL_KDD_BOOLEAN = ("land", "logged_in", "is_host_login", "is_guest_login")
_NSL_KDD_IGNORE = ("attack", "difficulty")


class _Parsed(dict):
    """Memo of ``convert(text)``: NSL-KDD fields take few distinct values, and
    parsing each distinct string once roughly halves the reading time."""

    def __init__(self, convert) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, text: str):
        value = self[text] = self.convert(text)
        return value


def _nsl_kdd_converter(name: str):
    if name in _NSL_KDD_CATEGORICAL or name == "attack":
        return str
    if name in _NSL_KDD_BOOLEAN:
        return "1".__eq__
    # The rate columns are the only fractional ones; the rest are counts.
    return float if name.endswith("rate") else int


_NSL_KDD_CONVERTERS = tuple(_nsl_kdd_converter(name) for name in NSL_KDD_COLUMNS)


def read_nsl_kdd(path: str | os.PathLike) -> list[dict]:
    """Read an NSL-KDD CSV file (no header, 43 columns) into records.

    Counts are ``int``, rates ``float``, the 0/1 flags (``land``,
    ``logged_in``, ``is_host_login``, ``is_guest_login``) ``bool``,
    ``protocol_type``, ``service``, ``flag`` and ``attack`` ``str`` and
    ``difficulty`` ``int``.

    Parameters
    ----------
    path
        A file such as ``KDDTrain+_20Percent.txt`` or ``KDDTest+.txt``.

    Returns
    -------
    list of dict
        One record per row, keyed by :data:`NSL_KDD_COLUMNS`.

    Raises
    ------
    ValueError
        If a row does not have 43 fields.

    Examples
    --------
    >>> rows = read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTest+.txt")
    >>> len(rows), sum(r["attack"] == "normal" for r in rows)
    (22544, 9711)
    >>> type(rows[0]["serror_rate"]), type(rows[0]["logged_in"])
    (<class 'float'>, <class 'bool'>)

    """
    with open(path, newline="") as file:
        rows = [row for row in csv.reader(file) if row]
    for line, row in enumerate(rows, start=1):
        if len(row) != len(NSL_KDD_COLUMNS):
            raise ValueError(
                f"{path}: row {line} has {len(row)} fields, "
                f"expected {len(NSL_KDD_COLUMNS)}"
            )
    columns = [
        list(map(_Parsed(convert).__getitem__, column))
        for convert, column in zip(_NSL_KDD_CONVERTERS, zip(*rows))
    ]
    return [dict(zip(NSL_KDD_COLUMNS, values)) for values in zip(*columns)]


def nsl_kdd_schema() -> dict[str, str]:
    """The ``fields:`` mapping of ``anomon.yaml`` for NSL-KDD records.

    Examples
    --------
    >>> schema = nsl_kdd_schema()
    >>> schema["service"], schema["logged_in"], schema["src_bytes"], schema["attack"]
    ('categorical', 'boolean', 'numeric', 'ignore')

    """
    kinds = {
        **dict.fromkeys(_NSL_KDD_CATEGORICAL, "categorical"),
        **dict.fromkeys(_NSL_KDD_BOOLEAN, "boolean"),
        **dict.fromkeys(_NSL_KDD_IGNORE, "ignore"),
    }
    return {name: kinds.get(name, "numeric") for name in NSL_KDD_COLUMNS}


_IDX_UBYTE = 0x08


def _read_maybe_gzip(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as file:
        data = file.read()
    # Sniff the gzip magic rather than trust the file name.
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _read_idx_ubyte(path: str | os.PathLike, ndim: int) -> np.ndarray:
    data = _read_maybe_gzip(path)
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    expected = (_IDX_UBYTE << 8) | ndim
    if magic != expected:
        found = "a truncated header" if magic is None else f"0x{magic:08x}"
        raise ValueError(
            f"{path}: not an IDX file of {ndim}-d unsigned bytes "
            f"(magic 0x{expected:08x} expected, found {found})"
        )
    header = 4 + 4 * ndim
    shape = tuple(
        int.from_bytes(data[i : i + 4], "big") for i in range(4, header, 4)
    )
    if len(data) - header != math.prod(shape):
        raise ValueError(
            f"{path}: header announces shape {shape} "
            f"but {len(data) - header} bytes follow it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_mnist_idx(
    images_gz: str | os.PathLike, labels_gz: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST images and labels from IDX files, gzip-compressed or not.

    Parameters
    ----------
    images_gz
        An ``idx3-ubyte`` file of images (magic ``0x00000803``).
    labels_gz
        An ``idx1-ubyte`` file of labels (magic ``0x00000801``).

    Returns
    -------
    images : numpy.ndarray
        ``uint8`` array of shape ``(n, rows, cols)``, ``(n, 28, 28)`` for MNIST.
    labels : numpy.ndarray
        ``uint8`` array of shape ``(n,)``.

    Raises
    ------
    ValueError
        If a magic number is wrong, a file is truncated, or the two files
        hold different numbers of items.

    Examples
    --------
    >>> images, labels = read_mnist_idx(
    ...     SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz",
    ...     SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz",
    ... )
    >>> images.shape, images.dtype, labels[:5].tolist()
    ((10000, 28, 28), dtype('uint8'), [7, 2, 1, 0, 4])

    """
    images = _read_idx_ubyte(images_gz, ndim=3)
    labels = _read_idx_ubyte(labels_gz, ndim=1)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return images, labels


def mnist_records(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    label_field: str = "label",
    vector_field: str = "pixels",
) -> list[dict]:
    """Turn images and labels into JSON-ready records.

    Parameters
    ----------
    images
        ``uint8`` array of shape ``(n, 28, 28)`` (or already flat, ``(n, 784)``).
    labels
        Array of shape ``(n,)``.
    label_field, vector_field
        Names of the label and pixel fields.

    Returns
    -------
    list of dict
        ``{label_field: int, vector_field: [float, ...]}`` with the pixels
        flattened and scaled to ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> images = np.zeros((2, 28, 28), dtype=np.uint8)
    >>> images[1, 0, 0] = 255
    >>> records = mnist_records(images, np.array([3, 8], dtype=np.uint8))
    >>> records[1]["label"], len(records[1]["pixels"]), records[1]["pixels"][0]
    (8, 784, 1.0)

    """
    pixels = (np.asarray(images).reshape(len(images), -1) / 255.0).tolist()
    return [
        {label_field: int(label), vector_field: vector}
        for label, vector in zip(np.asarray(labels).tolist(), pixels)
    ]


def write_jsonl(records: Iterable[Mapping], path: str | os.PathLike) -> int:
    """Write records as JSON lines, gzip-compressed if ``path`` ends in ``.gz``.

    Returns
    -------
    int
        The number of records written.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "events.jsonl.gz"
    >>> write_jsonl([{"a": 1}, {"a": 2}], path)
    2
    >>> gzip.decompress(path.read_bytes())
    b'{"a":1}\\n{"a":2}\\n'

    """
    opener = gzip.open if str(path).endswith(".gz") else open
    count = 0
    with opener(path, "wt", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    return count


def read_adbench(path: str | os.PathLike) -> tuple[list[dict], np.ndarray]:
    """Read an ADBench ``.npz`` set (``X`` floats, ``y`` 0/1) as records ``f0..fN`` and labels.

    Examples
    --------
    >>> records, y = read_adbench(SHARED_DATA / "benchmark" / "adbench" / "29_Pima.npz")
    >>> len(records), len(records[0]), sorted(records[0])[:3], int(y.sum())
    (768, 8, ['f0', 'f1', 'f2'], 268)
    """
    with np.load(path, allow_pickle=False) as data:
        X, y = np.asarray(data["X"], dtype=float), np.asarray(data["y"]).astype(bool)
    names = [f"f{j}" for j in range(X.shape[1])]
    return [dict(zip(names, row)) for row in X.tolist()], y


def read_arff(path: str | os.PathLike) -> tuple[list[str], list[list[str | None]]]:
    """Read a dense ARFF file (or the one member of a ``.tar.xz``): attribute names and string rows.

    Values stay strings (``?`` is None); ``@attribute name{a,b}`` without a space is accepted.

    Examples
    --------
    >>> names, rows = read_arff(SHARED_DATA / "benchmark" / "pang" / "Reuters-corn-100.arff")
    >>> len(names), names[-1], len(rows), rows[0][-1]
    (101, 'corn', 12897, 'no')
    """
    path = Path(path)
    if path.name.endswith(".tar.xz"):
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(path.read_bytes()))) as archive:
            member = next(m for m in archive.getmembers() if m.isfile())
            text = archive.extractfile(member).read().decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    lines = iter(text.splitlines())
    names = []
    for line in lines:
        head = line.strip()
        if head.lower().startswith("@attribute"):
            names.append(head[len("@attribute"):].strip().split("{")[0].split()[0].strip("'\""))
        elif head.lower().startswith("@data"):
            break
    rows = [[None if v.strip() == "?" else v.strip().strip("'\"") for v in row]
            for row in csv.reader(line for line in lines if line.strip() and not line.startswith("%"))]
    bad = next((i for i, row in enumerate(rows) if len(row) != len(names)), None)
    if bad is not None:
        raise ValueError(f"{path}: data row {bad + 1} has {len(rows[bad])} values, expected {len(names)}")
    return names, rows
