"""Tests for trainer.sampling: a bounded uniform sample that does not depend on the chunking."""

import doctest

import numpy as np
import pytest

from trainer import sampling
from trainer.sampling import Sample


def sample_of(n: int, size: int, chunk: int, seed: int = 0) -> Sample:
    sample = Sample(size, seed=seed)
    for index in np.array_split(np.arange(n), max(1, n // chunk)):
        sample.offer(index, lambda rows: {"index": index[rows], "square": index[rows] ** 2})
    return sample


def test_doctests():
    assert doctest.testmod(sampling).failed == 0


@pytest.mark.parametrize("chunk", [1, 7, 100, 5_000])
def test_the_sample_does_not_depend_on_the_chunking(chunk):
    expected = sample_of(5_000, 300, chunk=5_000).columns()
    got = sample_of(5_000, 300, chunk=chunk).columns()
    assert len(got["index"]) == 300
    np.testing.assert_array_equal(got["index"], expected["index"])
    np.testing.assert_array_equal(got["square"], got["index"] ** 2)  # columns stay aligned


def test_a_small_file_is_kept_whole_in_file_order():
    columns = sample_of(50, 300, chunk=8).columns()
    assert columns["index"].tolist() == list(range(50))


def test_the_sample_is_spread_uniformly_and_seeded():
    index = sample_of(100_000, 2_000, chunk=5_000).columns()["index"]
    assert len(np.unique(index)) == 2_000
    counts = np.bincount(index // 10_000, minlength=10)  # 200 expected per tenth, sd about 13
    assert counts.min() > 150 and counts.max() < 250, counts
    other = sample_of(100_000, 2_000, chunk=5_000, seed=1).columns()["index"]
    assert len(np.intersect1d(index, other)) < 200  # about 2_000 * 2% in common by chance


def test_columns_are_built_only_for_records_that_may_enter():
    sample, built = Sample(10), []

    def build(rows):
        built.append(len(rows))
        return {"index": index[rows]}

    for start in range(0, 10_000, 1_000):
        index = np.arange(start, start + 1_000)
        sample.offer(index, build)
    assert built[0] == 1_000 and sum(built[1:]) < 200  # once full, only keys below the largest kept
