"""Encoding: round trips, unseen categories, missing/NaN values, bad values reported per record."""

import math

import numpy as np
import pytest

from trainer.config import EncodingConfig, FieldSpec
from trainer.encoding import Encoder, EncodingError, parse_times

FIELDS = [
    FieldSpec("bytes", "numeric"),
    FieldSpec("proto", "categorical"),
    FieldSpec("ok", "boolean"),
    FieldSpec("vec", "vector", size=3),
    FieldSpec("time", "timestamp"),
    FieldSpec("note", "ignore"),
]


def records(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "bytes": float(rng.lognormal(5, 2)),
            "proto": ["tcp", "udp", "icmp"][i % 3],
            "ok": bool(i % 2),
            "vec": rng.uniform(0, 10, 3).tolist(),
            "time": 1_700_000_000 + 3600 * i,
            "note": "anything",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(FIELDS).fit(records())


def block(encoder, name):
    return next(b for b in encoder.blocks if b.field == name)


def test_layout(encoder):
    assert encoder.field_names == ["bytes", "proto", "ok", "vec", "time"]
    assert [b.stop - b.start for b in encoder.blocks] == [2, 4, 2, 4, 5]
    assert encoder.width == 17
    assert encoder.transform(records(5)).X.dtype == np.float32


def test_numeric_round_trip_through_expected(encoder):
    data = records(50, seed=1)
    X = encoder.transform(data).X
    b = block(encoder, "bytes")
    back = encoder.encoder_for("bytes").expected(X[:, b.start : b.stop])
    np.testing.assert_allclose(back, [r["bytes"] for r in data], rtol=1e-4)


def test_skewed_non_negative_field_is_log_scaled(encoder):
    assert encoder.encoder_for("bytes").log_ is True


def test_categorical_round_trip_and_unseen_value(encoder):
    X = encoder.transform([{"proto": "udp"}, {"proto": "gre"}]).X
    b = block(encoder, "proto")
    slots = X[:, b.start : b.stop]
    assert slots.sum(axis=1).tolist() == [1, 1]
    assert encoder.encoder_for("proto").expected(slots) == ["udp", "<other>"]


def test_rare_categories_go_to_the_other_slot():
    enc = Encoder([FieldSpec("c", "categorical")], EncodingConfig(max_categories=2, min_count=3))
    enc.fit([{"c": v} for v in "aaaabbbbccccd"])
    assert enc.encoder_for("c").categories_ == ["a", "b"]
    X = enc.transform([{"c": "c"}, {"c": "d"}, {"c": "a"}]).X
    assert X.argmax(axis=1).tolist() == [2, 2, 0]


def test_a_new_category_is_range_excess_only_where_training_saw_the_whole_vocabulary():
    whole = Encoder([FieldSpec("c", "categorical")]).fit([{"c": v} for v in "aabb"])
    rare = Encoder([FieldSpec("c", "categorical")]).fit([{"c": v} for v in "aabbz"])  # z: once, below min_count
    capped = Encoder([FieldSpec("c", "categorical")], EncodingConfig(max_categories=1)).fit([{"c": v} for v in "aabb"])
    records = [{"c": "a"}, {"c": "new"}, {}]  # a known value, a new one, and a missing one
    assert whole.transform(records).excess[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert rare.transform(records).excess[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert capped.transform(records).excess[:, 0].tolist() == [0.0, 0.0, 0.0]
    # Stored with the bundle; a bundle of an earlier release (no "other_seen") gives no excess.
    assert Encoder([FieldSpec("c", "categorical")]).load_state(whole.state()).transform(records).excess[1, 0] == 1.0
    old = {**whole.state(), "c": {"categories": ["a", "b"]}}
    assert Encoder([FieldSpec("c", "categorical")]).load_state(old).transform(records).excess[1, 0] == 0.0


def test_the_neighbour_distance_measures_each_number_on_its_likelier_normal_scale():
    rng = np.random.default_rng(0)
    records = [{"level": float(v), "bytes": float(b)} for v, b in zip(rng.normal(120, 20, 2000).clip(1),
                                                                       rng.lognormal(8, 2, 2000))]
    enc = Encoder([FieldSpec("level", "numeric"), FieldSpec("bytes", "numeric")]).fit(records)
    level, size = enc.encoder_for("level"), enc.encoder_for("bytes")
    assert level.log_ and size.log_  # the autoencoder's inputs: the log of every non-negative field
    assert level.distance_[0] is False and size.distance_ is None  # the distance: the value itself for level
    X = enc.transform(records[:5]).X
    D = enc.distance_inputs(X)
    values = np.array([r["level"] for r in records])
    spread = np.subtract(*np.quantile(values, [0.99, 0.01]))
    assert np.allclose(D[:, 0], (values[:5] - np.median(values)) / spread, atol=1e-4)
    assert np.array_equal(D[:, 1:], X[:, 1:])  # the other columns as they are
    # Stored with the bundle; a bundle of an earlier release has one scale per field.
    fields = [FieldSpec("level", "numeric"), FieldSpec("bytes", "numeric")]
    assert np.array_equal(Encoder(fields).load_state(enc.state()).distance_inputs(X), D)
    old = {**enc.state(), "level": {k: v for k, v in enc.state()["level"].items() if k != "distance"}}
    assert np.array_equal(Encoder(fields).load_state(old).distance_inputs(X), X)


def test_category_values_of_mixed_types_share_tokens():
    enc = Encoder([FieldSpec("status", "categorical")]).fit([{"status": 200}, {"status": "200"}, {"status": 404.0}] * 3)
    assert sorted(enc.encoder_for("status").categories_) == ["200", "404"]


def test_missing_values_are_imputed_with_an_indicator(encoder):
    out = encoder.transform([{}, {"bytes": None, "ok": None, "vec": None, "time": None}, {"bytes": float("nan")}])
    assert out.invalid == [None, None, None]
    X = out.X
    for name in ("bytes", "ok", "vec", "time"):
        b = block(encoder, name)
        assert (X[:2, b.stop - 1] == 1).all(), name
    b = block(encoder, "bytes")
    assert X[2, b.stop - 1] == 1 and X[2, b.start] == 0.0


def test_strict_mode_rejects_non_finite_values(encoder):
    out = encoder.transform([{"bytes": float("nan")}, {"bytes": math.inf}, {"vec": [1, math.nan, 2]}], strict=True)
    assert [r[0] for r in out.invalid] == ["non_finite", "non_finite", "non_finite"]


def test_unreadable_values_are_encoded_as_missing_and_reported_per_record(encoder):
    out = encoder.transform([
        {"bytes": "lots"},
        {"bytes": "12.5"},
        {"proto": {"nested": 1}},
        {"ok": "maybe"},
        {"vec": [1, 2]},
        {"time": "yesterday"},
        {"bytes": 1},
        {"vec": [1, None, 2]},
    ], strict=True)
    assert out.invalid == [None] * 8  # every record is scored
    assert {row: [name for name, _ in values] for row, values in out.unreadable.items()} == {
        0: ["bytes"], 2: ["proto"], 3: ["ok"], 4: ["vec"], 5: ["time"], 7: ["vec"]}
    assert out.unreadable[0] == [("bytes", "field 'bytes': cannot read 'lots' as a number")]
    blocks = {b.field: b for b in encoder.blocks}
    missing_indicator = {name: out.X[:, blocks[name].stop - 1] for name in ("bytes", "ok", "vec", "time")}
    assert [missing_indicator[name][row] for name, row in (("bytes", 0), ("ok", 3), ("vec", 4), ("time", 5))] == [1] * 4
    proto = blocks["proto"]
    assert out.X[2, proto.start:proto.stop].tolist() == out.X[0, proto.start:proto.stop].tolist()  # as if absent


def test_an_unreadable_value_of_a_required_field_refuses_the_record():
    enc = Encoder([FieldSpec("a", "numeric", required=True)]).fit([{"a": i} for i in range(20)])
    out = enc.transform([{"a": "lots"}, {"a": 3}])
    assert [r and r[0] for r in out.invalid] == ["missing_required", None]


def test_every_finite_number_is_encoded_and_out_of_range_values_have_a_range_excess():
    enc = Encoder([FieldSpec("n", "numeric"), FieldSpec("s", "numeric")])
    enc.fit([{"n": i % 10, "s": i - 50.0} for i in range(100)])  # n never negative (log-scaled), s signed
    values = [5, -1, 9, 18, 900, 1e308, -1e308, 10**400]
    out = enc.transform([{"n": v, "s": v} for v in values], strict=True)
    assert out.invalid == [None] * len(values) and not out.unreadable
    assert np.isfinite(out.X).all()
    n_excess, s_excess = out.excess[:, 0], out.excess[:, 1]
    assert n_excess[:3].tolist() == [0.0, 1.0, 0.0]  # -1: a sign training never saw
    assert n_excess[3] == pytest.approx(1.0) and n_excess[4] == pytest.approx(99.0)  # 9 + 1 and + 99 ranges
    assert s_excess[:3].tolist() == [0.0, 0.0, 0.0]  # all inside [-50, 49]
    assert (out.excess[5:] > 1).all()


def test_a_signed_field_takes_the_signed_log_centred_on_its_median():
    rng = np.random.default_rng(0)
    values = np.round(rng.standard_t(2, size=401) * 50, 3)  # heavy tails on both sides (odd: one median)
    enc = Encoder([FieldSpec("s", "numeric")]).fit([{"s": float(v)} for v in values])
    numeric = enc.encoder_for("s")
    assert numeric.log_ and numeric.distance_ is None  # Box-Cox only weighs powers of positive values
    column = enc.transform([{"s": float(np.median(values))}, {"s": 5000.0}, {"s": -5000.0}]).X[:, 0]
    assert column[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < column[1] < 5 and -5 < column[2] < 0  # log-compressed tails, either side
    assert numeric.unscaled(column.astype(np.float64)).tolist() == pytest.approx([np.median(values), 5000, -5000])
    linear = Encoder([FieldSpec("s", "numeric", log=False)]).fit([{"s": float(v)} for v in values])
    assert abs(linear.transform([{"s": 5000.0}]).X[0, 0]) > 5 * column[1]  # log: false keeps it linear


def test_a_constant_training_field_makes_any_other_value_a_whole_range_out():
    enc = Encoder([FieldSpec("flag", "numeric")]).fit([{"flag": 0}] * 30)
    assert enc.transform([{"flag": 0}, {"flag": 1}, {"flag": 0.001}]).excess[:, 0].tolist() == [0.0, 1.0, 1.0]


def test_required_field_absent_is_invalid():
    enc = Encoder([FieldSpec("a", "numeric", required=True), FieldSpec("c", "categorical", required=True)])
    enc.fit([{"a": i, "c": "x"} for i in range(20)])
    assert enc.width == 1 + 2  # no missing indicator for required fields
    out = enc.transform([{"c": "x"}, {"a": 1}, {"a": 1, "c": "x"}])
    assert [r and r[0] for r in out.invalid] == ["missing_required", "missing_required", None]


def test_boolean_spellings():
    enc = Encoder([FieldSpec("b", "boolean")]).fit([{"b": v} for v in (True, False)])
    X = enc.transform([{"b": v} for v in ("yes", "No", 1, 0, "TRUE", "f")]).X
    assert X[:, 0].tolist() == [1, 0, 1, 0, 1, 0]


def test_vector_scaling_keeps_the_shape():
    enc = Encoder([FieldSpec("v", "vector", size=2, required=True)]).fit([{"v": [0, 255]}, {"v": [51, 102]}])
    np.testing.assert_allclose(enc.transform([{"v": [255, 0]}]).X, [[1.0, 0.0]])


def test_timestamps_parse_iso_and_epoch():
    seconds, bad = parse_times(["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", 1704067200, 1704067200000, None])
    assert seconds[:4].tolist() == [1704067200.0] * 4
    assert math.isnan(seconds[4]) and not bad.any()


def test_state_round_trip(encoder):
    data = records(20, seed=3)
    clone = Encoder(FIELDS).load_state(encoder.state())
    np.testing.assert_array_equal(clone.transform(data).X, encoder.transform(data).X)


def test_field_without_values_cannot_be_fitted():
    with pytest.raises(EncodingError, match="numeric field 'a' has no numeric value"):
        Encoder([FieldSpec("a", "numeric")]).fit([{"a": None}, {"b": 1}])


def test_large_batch(encoder):
    """A large batch encodes in one call, every record valid."""
    out = encoder.transform(records(10_000))
    assert out.X.shape == (10_000, encoder.width) and all(r is None for r in out.invalid)


def test_expected_numbers_stay_inside_the_training_range():
    enc = Encoder([FieldSpec("rate", "numeric", log=False)]).fit([{"rate": v / 10} for v in range(11)])
    numeric = enc.encoder_for("rate")
    recon = np.array([[-5.0, 0.0], [0.5, 0.0], [5.0, 0.0]])
    assert numeric.expected(recon) == [0.0, pytest.approx(numeric.center_ + 0.5 * numeric.scale_), 1.0]
