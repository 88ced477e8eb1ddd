"""The neighbour distance against a brute-force computation, its blocked nearest search against
torch.topk, and its reference sample's bounds."""

import numpy as np
import pytest
import torch

from trainer.encoding import Block
from trainer.neighbours import NeighbourDistance, smallest

BLOCKS = [Block("x", 0, 2, "squared"), Block("c", 2, 5, "categorical")]
WEIGHTS = np.array([1.0, 0.5, 0, 0, 0])


def encoded(rng, n):
    X = np.zeros((n, 5), dtype=np.float32)
    X[:, :2] = rng.normal(size=(n, 2))
    X[np.arange(n), 2 + rng.integers(0, 3, n)] = 1.0
    return X


def test_parts_match_a_brute_force_nearest_neighbour_search():
    rng = np.random.default_rng(0)
    train, query = encoded(rng, 300), encoded(rng, 40)
    parts = NeighbourDistance(k=3).fit(train, BLOCKS, WEIGHTS).field_errors(query)
    scale = np.array([1.0, 0.5, 0.5, 0.5, 0.5])  # squared-error weights; half per one-hot slot
    for q, row in zip(query, parts):
        squared = (q - train) ** 2 * scale
        nearest = np.argsort(squared.sum(axis=1))[:3]
        expected = [squared[nearest, :2].sum(axis=1).mean(), squared[nearest, 2:].sum(axis=1).mean()]
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-6)


def test_a_differing_category_counts_one():
    train = np.array([[0, 0, 1, 0, 0]] * 5, dtype=np.float32)
    parts = NeighbourDistance(k=2).fit(train, BLOCKS, WEIGHTS).field_errors(np.array([[0, 0, 0, 1, 0]], np.float32))
    np.testing.assert_allclose(parts, [[0.0, 1.0]], rtol=1e-6)


def test_the_reference_is_a_bounded_seeded_sample():
    rng = np.random.default_rng(0)
    train = encoded(rng, 5000)
    nd = NeighbourDistance(max_reference=1000).fit(train, BLOCKS, WEIGHTS)
    assert nd.reference_.shape == (1000, 5)
    assert NeighbourDistance(budget=500).fit(train, BLOCKS, WEIGHTS).reference_.shape == (100, 5)  # 500 floats / 5
    again = NeighbourDistance(max_reference=1000).fit(train, BLOCKS, WEIGHTS)
    assert np.array_equal(again.reference_.numpy(), nd.reference_.numpy())


def test_an_ignored_field_is_left_out_of_the_search_and_the_distance():
    rng = np.random.default_rng(1)
    train, query = encoded(rng, 200), encoded(rng, 30)
    query[:, 0] += 50.0  # x shifted far away: ignored, it must not pick the neighbours
    parts = NeighbourDistance(k=3).fit(train, BLOCKS, WEIGHTS).field_errors(query, ignore=np.array([True, False]))
    assert (parts[:, 0] == 0).all()
    only_c = NeighbourDistance(k=3).fit(train, BLOCKS, np.array([0.0, 0, 0, 0, 0])).field_errors(query)
    np.testing.assert_allclose(parts[:, 1], only_c[:, 1], rtol=1e-6)


@pytest.mark.parametrize("columns", [2048, 1000, 320, 256, 64])
@pytest.mark.parametrize("k", [1, 5])
def test_the_blocked_search_finds_the_same_smallest_values_as_topk(columns, k):
    generator = torch.Generator().manual_seed(columns + k)
    for values in (torch.rand(200, columns, generator=generator),
                   torch.randint(0, 4, (200, columns), generator=generator).float()):  # many ties
        found = values.gather(1, smallest(values, k)).sort(dim=1).values
        assert torch.equal(found, values.topk(k, dim=1, largest=False).values.sort(dim=1).values)
