"""Training in bounded memory: the records read chunk by chunk, sampled past model.max_records."""

import numpy as np
import pytest

from trainer.config import FieldSpec, config_from_dict
from trainer.encoding import Encoder, EncodingError
from trainer.fit import fit
from trainer.matrix import TrainingSample
from trainer.sampling import Reservoir

FIELDS = [FieldSpec("i", "numeric"), FieldSpec("c", "categorical"), FieldSpec("b", "boolean"),
          FieldSpec("v", "vector", size=2), FieldSpec("t", "timestamp")]


def records(n, start=0):
    return [{"i": k, "c": "abc"[k % 3] if k % 11 else [1], "b": k % 5 == 0, "v": [k % 7, -(k % 3)],
             "t": 1_700_000_000 + 60 * k} for k in range(start, start + n)]


def config(**model):
    return config_from_dict({"fields": {"x": "numeric", "c": "categorical"},
                             "model": {"epochs": 2, **model}, "threshold": {"method": "max"}}, environ={})


def events(n):
    rng = np.random.default_rng(1)
    return [{"x": float(v), "c": "ab"[k % 2]} for k, v in enumerate(rng.normal(size=n))]


def test_fit_on_a_generator_is_fit_on_the_list():
    data = events(600)
    from_list, from_generator = fit(data, config(), verbose=False), fit(iter(data), config(), verbose=False)
    assert from_list.encoder.state() == from_generator.encoder.state()
    assert from_list.threshold.value == from_generator.threshold.value
    np.testing.assert_array_equal(from_list.score(data).scores, from_generator.score(data).scores)
    assert from_generator.training["records"] == from_generator.training["kept"] == 600


def test_a_short_list_is_split_by_one_seeded_permutation_as_before():
    sample = TrainingSample(FIELDS, holdout_fraction=0.2, seed=3).fit(records(500))
    order = np.random.default_rng(3).permutation(500)
    np.testing.assert_array_equal(sample.train_, order[:400])
    np.testing.assert_array_equal(sample.validation_, order[400:450])
    np.testing.assert_array_equal(sample.calibration_, order[450:])
    # the encoder is fitted on the training split only
    train = [records(500)[k] for k in order[:400]]
    assert sample.encoder_.state() == Encoder(FIELDS).fit(train).state()


def test_the_encoder_fitted_chunk_by_chunk_is_the_encoder_fitted_at_once():
    data = records(1000)
    data[3]["i"], data[8]["v"] = "lots", "oops"
    streamed = Encoder(FIELDS)
    for start in range(0, len(data), 170):
        streamed.partial_fit(data[start : start + 170])
    assert streamed.finish().state() == Encoder(FIELDS).fit(data).state()
    assert streamed.unreadable_in_training_ == {"i", "c", "v"}


def test_past_max_records_a_seeded_uniform_sample_is_kept():
    sample = TrainingSample(FIELDS, max_records=300, seed=0, chunk_size=250).fit(records(4000))
    X = sample.encoded_.X
    assert sample.seen_ == 4000 and sample.kept_ == 300 and X.shape == (300, sample.encoder_.width)
    assert X.dtype == np.float32 and sample.encoded_.excess.shape == (300, len(FIELDS))
    assert sorted([*sample.train_, *sample.validation_, *sample.calibration_]) == list(range(300))
    # rows from both halves of the window (the numeric column grows with the record's index)
    middle = sample.encoder_.transform(records(1, start=2000)).X[0, 0]
    assert (X[:, 0] < middle).sum() > 100 and (X[:, 0] > middle).sum() > 100
    again = TrainingSample(FIELDS, max_records=300, seed=0, chunk_size=250).fit(records(4000))
    np.testing.assert_array_equal(again.encoded_.X, X)
    other = TrainingSample(FIELDS, max_records=300, seed=1, chunk_size=250).fit(records(4000))
    assert not np.array_equal(other.encoded_.X, X)


def test_a_generator_past_max_records_keeps_a_bounded_sample_too():
    sample = TrainingSample(FIELDS, max_records=300, chunk_size=250).fit(iter(records(4000)))
    assert sample.seen_ == 4000 and sample.kept_ == 300


def test_the_reservoir_does_not_depend_on_the_chunks():
    one, many = Reservoir(100, seed=5), Reservoir(100, seed=5)
    one.add(np.arange(5000))
    for start in range(0, 5000, 37):
        many.add(np.arange(start, min(start + 37, 5000)))
    assert sorted(one.sample_) == sorted(many.sample_) and len(one.sample_) == 100


def test_the_reservoir_is_uniform():
    hits = np.zeros(10)
    for seed in range(200):
        sample = Reservoir(50, seed=seed).add(np.arange(1000)).sample_
        hits += np.bincount(sample // 100, minlength=10)
    assert hits.min() > 0.8 * hits.mean() and hits.max() < 1.2 * hits.mean()


def test_too_few_records_after_sampling_says_why():
    with pytest.raises(EncodingError, match=r"training: 15 of 1000 \(model.max_records\) records are too few"):
        fit(events(1000), config(max_records=15), verbose=False)
    with pytest.raises(EncodingError, match="training: 0 records are too few"):
        fit(iter([]), config(), verbose=False)


class Shrinking:
    """Records that change between two readings (a file being rewritten)."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        data, self.data = self.data, self.data[:-10]
        return iter(data)


def test_records_that_change_between_the_readings_are_refused():
    with pytest.raises(EncodingError, match="changed between two readings"):
        TrainingSample(FIELDS).fit(Shrinking(records(200)))
