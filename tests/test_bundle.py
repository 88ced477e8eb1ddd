"""Training and the bundle: determinism, exact score decomposition, save/load, tamper refusal."""

import json

import numpy as np
import pytest
import torch

from monitor.traffic import TRAFFIC_FIELDS, TRAFFIC_KEY, TrafficGenerator
from trainer import Bundle, BundleError, config_from_dict, fit
from trainer.bundle import resolve_version
from trainer.evaluation import roc_auc

CONFIG = {"fields": TRAFFIC_FIELDS, "key": TRAFFIC_KEY, "model": {"epochs": 6}, "threshold": {"method": "evt"}}


@pytest.fixture(scope="module")
def traffic():
    return TrafficGenerator(seed=1).generate(3000)


@pytest.fixture(scope="module")
def bundle(traffic):
    return fit(traffic, config_from_dict(CONFIG, environ={}), verbose=False)


@pytest.fixture()
def saved(bundle, tmp_path):
    bundle.save(tmp_path / "web")
    return tmp_path / "web"


def test_scores_decompose_exactly_into_field_contributions(bundle, traffic):
    scores, contributions = bundle.score(traffic[:100])
    assert contributions.shape == (100, len(bundle.field_names))
    np.testing.assert_allclose(contributions.sum(axis=1), scores, rtol=1e-6)
    assert (contributions >= 0).all()


def test_training_is_deterministic_under_a_seed(traffic, bundle):
    again = fit(traffic, config_from_dict(CONFIG, environ={}), verbose=False)
    for a, b in zip(bundle.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert again.threshold == bundle.threshold


def test_a_different_seed_gives_a_different_model(traffic, bundle):
    other = fit(traffic, config_from_dict({**CONFIG, "model": {"epochs": 6, "seed": 7}}, environ={}), verbose=False)
    first = next(iter(bundle.model.state_dict().values()))
    assert not torch.equal(first, next(iter(other.model.state_dict().values())))


def test_anomalies_score_higher_than_normal_traffic(bundle):
    events = TrafficGenerator(seed=5, anomaly_rate=0.2).generate(2000)
    scores = bundle.anomaly_scores(events)
    is_anomaly = np.array([e["label"] != "normal" for e in events])
    assert roc_auc(is_anomaly, scores) > 0.9


def test_unseen_category_raises_the_score(bundle, traffic):
    event = dict(traffic[0])
    odd = dict(event, country="Atlantis")
    scores = bundle.anomaly_scores([event, odd])
    assert scores[1] > scores[0]
    batch = bundle.score([odd])
    top = bundle.explain([odd], batch, [0], top=1)[0][0]
    assert top["field"] == "country" and top["actual"] == "Atlantis" and top["expected"] != "Atlantis"


def test_explain_gives_shares_actual_and_expected(bundle, traffic):
    batch = bundle.score(traffic[:3])
    explanation = bundle.explain(traffic[:3], batch, [0, 2], top=5)
    assert len(explanation) == 2
    row = explanation[0]
    assert [set(c) for c in row] == [{"field", "share", "actual", "expected"}] * 5
    shares = [c["share"] for c in row]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001


def test_unreadable_values_are_scored_as_missing_and_listed_as_invalid(bundle, traffic):
    odd = dict(traffic[0], bytes_out="lots")
    batch = bundle.score([traffic[0], odd])
    assert np.isfinite(batch.scores).all() and batch.invalid == [None, None]
    assert batch.unreadable == {1: [("bytes_out", "field 'bytes_out': cannot read 'lots' as a number")]}
    missing = bundle.score([traffic[0], {k: v for k, v in odd.items() if k != "bytes_out"}])
    # Encoded as missing, plus one threshold: training never held an unreadable bytes_out.
    assert batch.scores[1] == pytest.approx(missing.scores[1] + bundle.threshold.value)
    listed = bundle.explain([traffic[0], odd], batch, [1], top=1)[0]
    assert {"field": "bytes_out", "actual": "lots", "invalid": True}.items() <= listed[-1].items()


def test_save_and_load_round_trip(bundle, saved, traffic):
    loaded = Bundle.load(saved)
    np.testing.assert_allclose(loaded.anomaly_scores(traffic[:50]), bundle.anomaly_scores(traffic[:50]), rtol=1e-6)
    assert loaded.threshold == bundle.threshold
    manifest = loaded.manifest
    assert manifest["version"] == resolve_version(saved).name
    assert manifest["fields"][0] == {"name": "event_time", "type": "timestamp"}
    assert set(manifest["files"]) == {"config.json", "encoder.json", "threshold.json", "weights.pt"}
    assert manifest["training"]["records"] == 3000
    assert {"torch", "numpy", "python"} <= set(manifest["libraries"])


def test_versions_accumulate_and_current_moves(bundle, saved):
    first = resolve_version(saved)
    second = bundle.save(saved)
    assert first != second and first.is_dir()
    assert resolve_version(saved) == second
    assert Bundle.load(first).version == first.name


def test_tampered_weights_are_refused(saved):
    weights = resolve_version(saved) / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.pt does not match its sha256"):
        Bundle.load(saved)


def test_tampered_threshold_is_refused(saved):
    path = resolve_version(saved) / "threshold.json"
    state = json.loads(path.read_text())
    state["value"] *= 100
    path.write_text(json.dumps(state))
    with pytest.raises(BundleError, match="threshold.json does not match"):
        Bundle.load(saved)


def test_incompatible_format_is_refused(saved):
    path = resolve_version(saved) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99"):
        Bundle.load(saved)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="is not a model bundle"):
        Bundle.load(tmp_path)
