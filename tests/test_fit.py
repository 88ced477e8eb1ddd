"""Fitting: cross-fitted calibration from 30 records, the held-out split above `model.cross_fit_below`,
determinism, and the score's exact decomposition by field and by component."""

import re

import numpy as np
import pytest

from monitor.traffic import TRAFFIC_FIELDS, TRAFFIC_KEY, TrafficGenerator
from trainer import Bundle, config_from_dict, fit
from trainer.bundle import COMPONENTS
from trainer.drift import Reference
from trainer.encoding import EncodingError
from trainer.evaluation import roc_auc

CONFIG = {"fields": TRAFFIC_FIELDS, "key": TRAFFIC_KEY, "model": {"epochs": 20}}


def config(**model):
    return config_from_dict({**CONFIG, "model": {**CONFIG["model"], **model}}, environ={})


@pytest.fixture(scope="module")
def small():
    return fit(TrafficGenerator(seed=3).generate(30), config(), verbose=False)


def test_thirty_records_train_and_calibrate_by_cross_fitting(small, capsys):
    assert small.training["calibration"] == "cross-fitted (5 folds)"
    # Every record scored out of fold once: the threshold is calibrated on all 30.
    assert small.training["split"] == {"train": 30, "calibration": 30}
    assert small.threshold.calibration["n"] <= 30 and np.isfinite(small.threshold.value)
    assert len(small.training["fold_epochs"]) == 5 and small.training["epochs_run"] >= 1
    events = TrafficGenerator(seed=4, anomaly_rate=0.3).generate(400)
    scores = small.anomaly_scores(events)
    assert np.isfinite(scores).all()
    assert roc_auc(np.array([e["label"] != "normal" for e in events]), scores) > 0.7


def test_cross_fitting_is_logged(capsys):
    fit(TrafficGenerator(seed=3).generate(40), config(epochs=2), verbose=True)
    assert "calibrated on out-of-fold scores of 5 folds" in capsys.readouterr().err


def test_too_few_calibration_scores_for_the_target_rate_are_logged(capsys):
    records = TrafficGenerator(seed=3).generate(60)
    fit(records, config(epochs=2), verbose=True)  # up to 60 scores at target_rate 0.001: 0.06 expected above
    assert re.search(r"threshold: \d\d calibration scores expect 0\.0\d+ above the threshold at target_rate 0\.001, "
                     r"so the false-alarm rate will vary", capsys.readouterr().err)
    fit(records, config_from_dict({**CONFIG, "model": {"epochs": 2}, "threshold": {"target_rate": 0.2}}, environ={}),
        verbose=True)
    assert "calibration scores expect" not in capsys.readouterr().err


def test_fewer_than_thirty_records_is_a_one_line_error():
    with pytest.raises(EncodingError, match="29 records are too few"):
        fit(TrafficGenerator(seed=3).generate(29), config(), verbose=False)


def test_many_records_calibrate_on_a_held_out_split():
    bundle = fit(TrafficGenerator(seed=3).generate(1200), config(epochs=3), verbose=False)
    assert bundle.training["calibration"] == "held-out split"
    assert bundle.training["split"] == {"train": 960, "validation": 120, "calibration": 120}


def test_training_is_deterministic_under_a_seed(small):
    again = fit(TrafficGenerator(seed=3).generate(30), config(), verbose=False)
    events = TrafficGenerator(seed=9).generate(50)
    np.testing.assert_array_equal(again.anomaly_scores(events), small.anomaly_scores(events))
    assert again.threshold == small.threshold and again.weights == small.weights


def test_components_and_fields_both_sum_to_the_score(small):
    events = TrafficGenerator(seed=4, anomaly_rate=0.3).generate(200)
    events[0] = dict(events[0], bytes_out=10**12)  # far outside the range: the range component too
    batch = small.score(events)
    np.testing.assert_allclose(batch.contributions.sum(axis=1), batch.scores, rtol=1e-9)
    assert batch.components.shape == (200, len(COMPONENTS))
    np.testing.assert_allclose(batch.components.sum(axis=1), batch.scores, rtol=1e-9)
    assert (batch.components >= 0).all() and (batch.components[:, 1] > 0).any()
    assert batch.components[0, COMPONENTS.index("range")] >= small.threshold.value


def test_components_are_weighed_by_their_held_out_medians(small):
    assert small.weights.reconstruction > 0 and small.weights.neighbours > 0


def test_neighbours_off_scores_by_reconstruction_alone():
    bundle = fit(TrafficGenerator(seed=3).generate(60), config(neighbours=0), verbose=False)
    assert bundle.neighbours is None and bundle.weights.neighbours == 0
    batch = bundle.score(TrafficGenerator(seed=9).generate(20))
    assert (batch.components[:, 1] == 0).all()


def test_save_and_load_keep_the_neighbours_and_weights(small, tmp_path):
    small.save(tmp_path / "m")
    loaded = Bundle.load(tmp_path / "m")
    events = TrafficGenerator(seed=9).generate(50)
    np.testing.assert_allclose(loaded.anomaly_scores(events), small.anomaly_scores(events), rtol=1e-6)
    assert loaded.weights == small.weights and loaded.neighbours.k == small.neighbours.k


def test_the_drift_reference_takes_held_out_scores_as_the_monitor_computes_them(monkeypatch):
    # One held-out record lies far outside its fold's training range: it scores r + T·E ≥ T as
    # live traffic would, where calibration's range-adjusted r / (1 - E) is infinite.
    captured = {}
    original = Reference.fit

    def capture(encoder, X, scores=None):
        captured["scores"] = scores[1]
        return original(encoder, X, scores)

    monkeypatch.setattr(Reference, "fit", staticmethod(capture))
    rng = np.random.default_rng(0)
    records = [{"x": float(v)} for v in rng.normal(100, 5, size=99)] + [{"x": 1e6}]
    bundle = fit(records, config_from_dict({"fields": {"x": "numeric"}, "model": {"epochs": 3}}, environ={}),
                 verbose=False)
    scores = captured["scores"]
    assert len(scores) == 100 and np.isfinite(scores).all()
    assert scores.max() >= bundle.threshold.value
