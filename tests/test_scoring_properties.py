"""Property-based: whatever an event's values, `Bundle.score` scores it finitely, and values far
outside the training range, or categories outside a vocabulary training saw whole, score at or
above the threshold (an attacker cannot hide an event)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.config import config_from_dict
from trainer.fit import fit

FIELDS = {"count": "numeric", "delta": "numeric", "ok": "boolean", "proto": "categorical",
          "when": "timestamp", "vec": {"type": "vector", "size": 3}}
NUMERIC = ("count", "delta")


def history(n: int = 400) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"count": int(rng.poisson(20)), "delta": float(rng.normal(5, 3)), "ok": bool(rng.random() < 0.3),
             "proto": str(rng.choice(["tcp", "udp", "icmp"])), "when": 1_700_000_000 + 60 * i,
             "vec": rng.random(3).round(3).tolist()} for i in range(n)]


@pytest.fixture(scope="module")
def bundle():
    config = config_from_dict({"fields": FIELDS, "model": {"epochs": 5}}, environ={})
    return fit(history(), config, verbose=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)
finite_numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(sorted(FIELDS)), value=json_values)
def test_any_json_value_in_any_field_gets_a_finite_score(bundle, field, value):
    event = dict(history(1)[0], **{field: value})
    batch = bundle.score([event], strict=True)
    assert batch.invalid == [None] and math.isfinite(batch.scores[0]) and batch.scores[0] >= 0


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from([*NUMERIC, "ok"]), value=finite_numbers)
def test_any_finite_number_in_a_numeric_or_boolean_field_gets_a_finite_score(bundle, field, value):
    batch = bundle.score([dict(history(1)[0], **{field: value})], strict=True)
    assert batch.invalid == [None] and math.isfinite(batch.scores[0])


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(NUMERIC), factor=st.floats(min_value=100, max_value=1e300), row=st.integers(0, 399))
def test_a_number_100_times_the_training_maximum_scores_at_or_above_the_threshold(bundle, field, factor, row):
    maximum = max(r[field] for r in history())
    event = dict(history()[row], **{field: maximum * factor})
    assert bundle.score([event]).scores[0] >= bundle.threshold.value


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.floats(max_value=-1e-9, allow_infinity=False, allow_nan=False) | st.integers(max_value=-1),
       row=st.integers(0, 399))
def test_a_negative_number_where_training_never_was_scores_at_or_above_the_threshold(bundle, value, row):
    assert min(r["count"] for r in history()) >= 0
    scores, contributions = bundle.score([dict(history()[row], count=value)])
    assert scores[0] >= bundle.threshold.value
    assert bundle.field_names[int(np.argmax(contributions[0]))] == "count"



@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(min_size=1, max_size=20).filter(lambda v: v not in ("tcp", "udp", "icmp")) | st.integers(),
       row=st.integers(0, 399))
def test_a_category_outside_a_vocabulary_training_saw_whole_scores_at_or_above_the_threshold(bundle, value, row):
    assert {r["proto"] for r in history()} == {"tcp", "udp", "icmp"}  # each of them many times
    batch = bundle.score([dict(history()[row], proto=value)])
    assert batch.components[0, 2] >= bundle.threshold.value  # the range excess alone alerts
    assert bundle.field_names[int(np.argmax(batch.contributions[0]))] == "proto"

