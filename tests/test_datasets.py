"""Readers of the shared data sets. They fail, never skip, when the data is missing."""

import doctest
import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from trainer import datasets
from trainer.datasets import (
    NSL_KDD_COLUMNS,
    SHARED_DATA,
    mnist_records,
    nsl_kdd_schema,
    read_mnist_idx,
    read_nsl_kdd,
    write_jsonl,
)

REPO = Path(__file__).resolve().parents[1]
NSL_KDD_TRAIN = SHARED_DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt"
NSL_KDD_TEST = SHARED_DATA / "nsl-kdd" / "KDDTest+.txt"
MNIST_IMAGES = SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
MNIST_LABELS = SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz"
MNIST_IMAGES_MD5 = "2646ac647ad5339dbf082846283269ea"


@pytest.fixture(scope="module")
def kdd_train():
    return read_nsl_kdd(NSL_KDD_TRAIN)


@pytest.fixture(scope="module")
def kdd_test():
    return read_nsl_kdd(NSL_KDD_TEST)


@pytest.fixture(scope="module")
def mnist():
    return read_mnist_idx(MNIST_IMAGES, MNIST_LABELS)


def test_shared_data_is_present():
    missing = [
        str(path)
        for path in (NSL_KDD_TRAIN, NSL_KDD_TEST, MNIST_IMAGES, MNIST_LABELS)
        if not path.is_file()
    ]
    assert not missing, f"shared data missing (set ANOMON_SHARED_DATA?): {missing}"


def _fresh_shared_data() -> Path:
    """SHARED_DATA as a fresh import sees it, leaving the imported module alone."""
    spec = importlib.util.spec_from_file_location("_fresh_datasets", datasets.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SHARED_DATA


def test_shared_data_defaults_next_to_the_repository(monkeypatch):
    monkeypatch.delenv("ANOMON_SHARED_DATA", raising=False)
    assert _fresh_shared_data() == REPO.parent / "shared" / "data"


def test_shared_data_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMON_SHARED_DATA", str(tmp_path))
    assert _fresh_shared_data() == tmp_path


# NSL-KDD


@pytest.mark.parametrize(
    "rows, n_rows, n_normal",
    [("kdd_train", 25_192, 13_449), ("kdd_test", 22_544, 9_711)],
)
def test_nsl_kdd_row_counts(request, rows, n_rows, n_normal):
    rows = request.getfixturevalue(rows)
    assert len(rows) == n_rows
    assert sum(row["attack"] == "normal" for row in rows) == n_normal


def test_nsl_kdd_columns():
    assert len(NSL_KDD_COLUMNS) == 43
    assert len(set(NSL_KDD_COLUMNS)) == 43
    assert NSL_KDD_COLUMNS[:4] == ("duration", "protocol_type", "service", "flag")
    assert NSL_KDD_COLUMNS[-2:] == ("attack", "difficulty")


def test_nsl_kdd_types_follow_the_schema(kdd_train, kdd_test):
    schema = nsl_kdd_schema()
    for rows in (kdd_train, kdd_test):
        for row in rows:
            assert tuple(row) == NSL_KDD_COLUMNS
            for name, value in row.items():
                kind = schema[name]
                if kind == "categorical" or name == "attack":
                    assert type(value) is str
                elif kind == "boolean":
                    assert type(value) is bool
                elif name.endswith("rate"):
                    assert type(value) is float and 0.0 <= value <= 1.0
                else:
                    assert type(value) is int, (name, value)


def test_nsl_kdd_first_row(kdd_train):
    row = kdd_train[0]
    assert row["protocol_type"] == "tcp"
    assert row["service"] == "ftp_data"
    assert row["flag"] == "SF"
    assert row["src_bytes"] == 491
    assert row["dst_host_same_srv_rate"] == 0.17
    assert row["logged_in"] is False
    assert row["difficulty"] == 20


def test_nsl_kdd_categories(kdd_train, kdd_test):
    assert {row["protocol_type"] for row in kdd_train} == {"tcp", "udp", "icmp"}
    assert len({row["flag"] for row in kdd_train + kdd_test}) == 11
    assert sum(row["logged_in"] for row in kdd_train) > 0
    # The README promises categories that only the test file has.
    train_services = {row["service"] for row in kdd_train}
    assert {row["service"] for row in kdd_test} - train_services


def test_nsl_kdd_schema_covers_every_column():
    schema = nsl_kdd_schema()
    assert tuple(schema) == NSL_KDD_COLUMNS
    by_kind = {}
    for name, kind in schema.items():
        by_kind.setdefault(kind, set()).add(name)
    assert by_kind["categorical"] == {"protocol_type", "service", "flag"}
    flags = {"land", "logged_in", "is_host_login", "is_guest_login"}
    assert by_kind["boolean"] == flags
    assert by_kind["ignore"] == {"attack", "difficulty"}
    assert len(by_kind["numeric"]) == 34
    assert set(by_kind) == {"categorical", "boolean", "ignore", "numeric"}


def test_nsl_kdd_short_row_is_an_error(tmp_path):
    path = tmp_path / "bad.txt"
    lines = NSL_KDD_TRAIN.read_text().splitlines()[:3]
    lines[1] = lines[1].rsplit(",", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="row 2 has 42 fields"):
        read_nsl_kdd(path)


# MNIST


def test_mnist_images_and_labels(mnist):
    images, labels = mnist
    assert images.shape == (10_000, 28, 28)
    assert labels.shape == (10_000,)
    assert images.dtype == labels.dtype == np.uint8
    assert set(labels.tolist()) == set(range(10))
    assert images.min() == 0 and images.max() == 255


def test_mnist_bytes_match_the_published_md5(mnist):
    raw = gzip.decompress(MNIST_IMAGES.read_bytes())
    assert hashlib.md5(raw).hexdigest() == MNIST_IMAGES_MD5
    # Header plus parsed pixels rebuild the file: nothing skipped or reordered.
    images, _ = mnist
    rebuilt = raw[:16] + images.tobytes()
    assert hashlib.md5(rebuilt).hexdigest() == MNIST_IMAGES_MD5


def _idx(magic: int, shape: tuple[int, ...], body: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
    return header + body


def test_mnist_reads_uncompressed_idx(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "images").write_bytes(_idx(0x803, (2, 3, 4), images.tobytes()))
    (tmp_path / "labels").write_bytes(_idx(0x801, (2,), bytes([5, 9])))
    got_images, got_labels = read_mnist_idx(tmp_path / "images", tmp_path / "labels")
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == [5, 9]
    assert got_images.flags.writeable


def test_mnist_bad_magic_is_an_error(tmp_path):
    # Swapped arguments: the labels file carries the 1-d magic.
    expected = "magic 0x00000803 expected, found 0x00000801"
    with pytest.raises(ValueError, match=expected):
        read_mnist_idx(MNIST_LABELS, MNIST_LABELS)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"PK\x03\x04 not an idx file"))
    with pytest.raises(ValueError, match="magic"):
        read_mnist_idx(bad, MNIST_LABELS)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="truncated header"):
        read_mnist_idx(MNIST_IMAGES, empty)


def test_mnist_truncated_or_mismatched_is_an_error(tmp_path):
    (tmp_path / "images").write_bytes(_idx(0x803, (2, 2, 2), bytes(7)))
    (tmp_path / "labels").write_bytes(_idx(0x801, (3,), bytes(3)))
    with pytest.raises(ValueError, match="7 bytes follow"):
        read_mnist_idx(tmp_path / "images", tmp_path / "labels")
    (tmp_path / "images").write_bytes(_idx(0x803, (2, 2, 2), bytes(8)))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        read_mnist_idx(tmp_path / "images", tmp_path / "labels")


def test_mnist_records(mnist):
    images, labels = mnist
    records = mnist_records(images[:50], labels[:50])
    assert len(records) == 50
    for record, image, label in zip(records, images, labels):
        assert set(record) == {"label", "pixels"}
        assert type(record["label"]) is int and record["label"] == label
        assert len(record["pixels"]) == 784
        assert all(type(p) is float and 0.0 <= p <= 1.0 for p in record["pixels"])
        np.testing.assert_allclose(record["pixels"], image.ravel() / 255.0)
    json.dumps(records)


def test_mnist_records_field_names(mnist):
    images, labels = mnist
    (record,) = mnist_records(
        images[:1].reshape(1, -1), labels[:1], label_field="digit", vector_field="x"
    )
    assert set(record) == {"digit", "x"} and len(record["x"]) == 784


# JSON lines


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_write_jsonl_round_trip(tmp_path, name):
    records = [{"a": 1, "b": "x", "c": [0.5, 1.0]}, {"a": 2, "b": None, "c": []}]
    path = tmp_path / name
    assert write_jsonl(iter(records), path) == 2
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    text = gzip.decompress(raw).decode() if name.endswith(".gz") else raw.decode()
    assert [json.loads(line) for line in text.splitlines()] == records


def test_docstring_examples():
    result = doctest.testmod(datasets)
    assert result.attempted > 0 and result.failed == 0
