"""Threshold methods against distributions with known quantiles, bands and record scores."""

import numpy as np
import pytest

from trainer.threshold import BANDS, TailModel, Threshold, calibrate


@pytest.fixture(scope="module")
def exponential():
    return np.random.default_rng(0).exponential(size=200_000)


def test_quantile_matches_the_known_quantile(exponential):
    t = calibrate(exponential, method="quantile", target_rate=0.001)
    assert t.value == pytest.approx(-np.log(0.001), rel=0.03)  # 6.91


def test_max_with_margin():
    scores = np.arange(1.0, 101.0)
    assert calibrate(scores, method="max").value == 100.0
    assert calibrate(scores, method="max", margin=0.1).value == pytest.approx(110.0)


def test_evt_extrapolates_beyond_the_sample():
    # 2,000 exponential scores: the empirical 1e-4 quantile is just the maximum; EVT extrapolates.
    scores = np.random.default_rng(1).exponential(size=2_000)
    truth = -np.log(1e-4)  # 9.21
    evt = calibrate(scores, method="evt", target_rate=1e-4)
    assert evt.value == pytest.approx(truth, rel=0.2)
    assert evt.value > scores.max()


def test_evt_on_a_pareto_tail_recovers_the_shape():
    # Pareto with alpha=3: GPD shape 1/3, P(X > x) = x**-3.
    scores = np.random.default_rng(2).pareto(3.0, size=100_000) + 1.0
    tail = TailModel.fit(np.sort(scores), tail_fraction=0.05)
    assert tail.shape == pytest.approx(1 / 3, abs=0.06)
    assert tail.quantile(1e-4) == pytest.approx(1e-4 ** (-1 / 3), rel=0.1)


def test_bands_are_increasing_and_start_at_the_threshold(exponential):
    t = calibrate(exponential, method="quantile", target_rate=0.01)
    edges = [t.bands[b] for b in BANDS]
    assert edges[0] == t.value
    assert all(b >= a * 1.5 for a, b in zip(edges, edges[1:]))
    # On an exponential tail the band edges follow -ln(rate): 1e-3, 1e-4, 1e-5.
    assert t.bands["minor"] == pytest.approx(-np.log(1e-3), rel=0.1)


def test_severity_and_record_score():
    t = Threshold("quantile", 1.0, 0.01, {"warning": 1.0, "minor": 2.0, "major": 4.0, "critical": 8.0})
    scores = np.array([0.5, 1.0, 3.0, 5.0, 8.0, 80.0, np.nan])
    assert t.severity(scores).tolist() == [None, "warning", "minor", "major", "critical", "critical", None]
    rs = t.record_score(scores[:-1])
    assert rs.tolist()[:2] == [12.5, 25.0]
    assert rs[4] == 90.0 and rs[5] == 99.0  # 90 + 10 * (1 - 8 / 80)
    assert np.all(np.diff(rs) > 0)
    assert t.is_anomaly(scores[:3]).tolist() == [False, True, True]


def test_round_trip():
    t = calibrate(np.arange(100.0), method="evt", target_rate=0.01)
    assert Threshold.from_dict(t.to_dict()) == t


def test_errors():
    with pytest.raises(ValueError, match="at least 10"):
        calibrate(np.ones(5))
    with pytest.raises(ValueError, match="unknown method"):
        calibrate(np.arange(20.0), method="median")
