"""Tests for trainer.evaluation: hand-computed values and agreement with scikit-learn."""

import doctest
import json

import numpy as np
import pytest
from sklearn import metrics as skm

from trainer import evaluation
from trainer.evaluation import (
    best_f1_threshold,
    evaluate,
    is_anomaly,
    per_label_table,
    pr_auc,
    pr_curve,
    precision_recall_f1,
    roc_auc,
    roc_curve,
)

# Tiny set: anomalies score 0.35 and 0.8, normal records 0.1 and 0.4.
Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]

# Tied set: the scores 0.5 hold two anomalies and one normal record.
Y_TIED = [0, 1, 0, 1, 1, 0]
S_TIED = [0.5, 0.5, 0.2, 0.9, 0.5, 0.1]


def test_doctests():
    assert doctest.testmod(evaluation, optionflags=doctest.ELLIPSIS).failed == 0


def test_roc_auc_by_hand():
    # Pairs (anomaly, normal): 0.35 beats 0.1 but not 0.4; 0.8 beats both -> 3 of 4.
    assert roc_auc(Y, S) == pytest.approx(3 / 4)


def test_roc_auc_by_hand_with_ties():
    # 9 pairs: 0.9 beats all 3 normals (3); each 0.5 anomaly ties 0.5 (1/2) and beats 0.2, 0.1 (2).
    assert roc_auc(Y_TIED, S_TIED) == pytest.approx((3 + 2.5 + 2.5) / 9)


def test_pr_auc_by_hand():
    # Thresholds 0.8, 0.4, 0.35, 0.1 give (P, R) = (1, 1/2), (1/2, 1/2), (2/3, 1), (1/2, 1).
    # AP = sum (R_k - R_k-1) P_k = 1/2 * 1 + 0 * 1/2 + 1/2 * 2/3 + 0 * 1/2.
    assert pr_auc(Y, S) == pytest.approx(1 / 2 + 1 / 3)


def test_pr_auc_by_hand_with_ties():
    # Thresholds 0.9, 0.5 give (P, R) = (1, 1/3), (3/4, 1): the tie is one point.
    assert pr_auc(Y_TIED, S_TIED) == pytest.approx(1 / 3 * 1 + 2 / 3 * 3 / 4)


def test_curves_by_hand():
    fpr, tpr, thresholds = roc_curve(Y, S)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    precision, recall, pr_thresholds = pr_curve(Y, S)
    np.testing.assert_allclose(precision, [1, 1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(recall, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(pr_thresholds, thresholds)


def test_precision_recall_f1_by_hand():
    result = precision_recall_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert {k: result[k] for k in ("tp", "fp", "tn", "fn")} == {"tp": 2, "fp": 1, "tn": 1, "fn": 1}
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)


def test_precision_recall_f1_nothing_flagged_is_zero_not_nan():
    result = precision_recall_f1([1, 0, 0], [False, False, False])
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    assert result["fn"] == 1 and result["tn"] == 2


def test_best_f1_threshold_by_hand():
    # F1 at 0.8: 2/3; at 0.4: 1/2; at 0.35: 2 * (2/3) * 1 / (5/3) = 0.8; at 0.1: 2/3.
    threshold, f1 = best_f1_threshold(Y, S)
    assert threshold == 0.35
    assert f1 == pytest.approx(0.8)
    assert precision_recall_f1(Y, np.asarray(S) >= threshold)["f1"] == pytest.approx(f1)


def test_best_f1_threshold_prefers_fewer_alerts_on_ties():
    # Flagging >= 0.9 (tp 1, fn 1) or >= 0.6 (tp 2, fp 2) both give F1 = 2/3; the higher threshold wins.
    threshold, f1 = best_f1_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6])
    assert threshold == 0.9
    assert f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [False, True])
def test_auc_matches_sklearn(seed, tied):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 2000))
    y = rng.random(n) < rng.uniform(0.05, 0.5)
    y[:2] = [True, False]  # both classes
    scores = rng.normal(size=n) + 1.5 * y
    if tied:  # few distinct values, with anomalies and normals sharing them
        scores = np.round(scores, 1)
    assert roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-6)
    assert pr_auc(y, scores) == pytest.approx(skm.average_precision_score(y, scores), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_curves_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300), 2)
    fpr, tpr, thresholds = roc_curve(y, scores)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thresholds, sk_thresholds)
    # scikit-learn orders the PR curve by increasing threshold and omits the inf threshold.
    precision, recall, pr_thresholds = pr_curve(y, scores)
    sk_precision, sk_recall, sk_pr_thresholds = skm.precision_recall_curve(y, scores)
    np.testing.assert_allclose(precision, sk_precision[::-1])
    np.testing.assert_allclose(recall, sk_recall[::-1])
    np.testing.assert_array_equal(pr_thresholds[1:], sk_pr_thresholds[::-1])


@pytest.mark.parametrize("seed", range(3))
def test_precision_recall_f1_and_best_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(400) < 0.2
    scores = np.round(rng.normal(size=400) + y, 1)
    f1_at = {t: skm.f1_score(y, scores >= t) for t in np.unique(scores)}
    threshold, f1 = best_f1_threshold(y, scores)
    assert f1 == pytest.approx(max(f1_at.values()), abs=1e-12)
    assert f1_at[threshold] == pytest.approx(f1, abs=1e-12)
    pred = scores >= threshold
    result = precision_recall_f1(y, pred)
    assert result["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert result["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert [[result["tn"], result["fp"]], [result["fn"], result["tp"]]] == skm.confusion_matrix(y, pred).tolist()


@pytest.mark.parametrize("func", [roc_auc, pr_auc, roc_curve, pr_curve, best_f1_threshold])
@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1]])
def test_one_class_raises(func, y):
    with pytest.raises(ValueError, match="only .* need both classes"):
        func(y, [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("y", "scores", "match"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "binary"),
        (["a", "b"], [0.1, 0.2], "binary"),
        ([0, 1], [0.1, 0.2, 0.3], "shape"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([], [], "empty"),
    ],
)
def test_invalid_input_raises(y, scores, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(y, scores)


def test_per_label_table_by_hand():
    labels = ["normal", "normal", "dos", "normal", "probe", "dos"]
    flagged = [False, True, True, False, False, True]
    assert per_label_table(labels, flagged) == [
        {"label": "normal", "count": 3, "flagged": 1, "detection_rate": pytest.approx(1 / 3)},
        {"label": "dos", "count": 2, "flagged": 2, "detection_rate": 1.0},
        {"label": "probe", "count": 1, "flagged": 0, "detection_rate": 0.0},
    ]


def test_per_label_table_integer_labels_become_strings():
    rows = per_label_table(np.array([7, 3, 7]), np.array([True, False, False]))
    assert [(r["label"], r["count"], r["flagged"]) for r in rows] == [("7", 2, 1), ("3", 1, 0)]


def test_is_anomaly():
    np.testing.assert_array_equal(is_anomaly(np.array([0, 3, 0, 9]), 0), [False, True, False, True])


def test_evaluate_tiny_set_by_hand():
    scores = [0.1, 0.4, 0.35, 0.8, 0.05]
    labels = ["normal", "normal", "dos", "probe", "normal"]
    report = evaluate(scores, labels, normal_value="normal", threshold=0.38, bands={"low": 0.3, "high": 0.9})
    assert json.loads(json.dumps(report)) == report
    assert (report["n"], report["n_positive"]) == (5, 2)
    # Anomaly 0.35 beats 0.1, 0.05 but not 0.4; 0.8 beats all three normals -> 5 of 6 pairs.
    assert report["roc_auc"] == pytest.approx(5 / 6)
    # Flagging >= 0.38 catches 0.8 (probe) and 0.4 (normal).
    assert report["at_threshold"] == {
        "threshold": 0.38, "precision": 0.5, "recall": 0.5, "f1": 0.5, "tp": 1, "fp": 1, "tn": 2, "fn": 1,
    }
    assert report["at_bands"]["low"] == {
        "threshold": 0.3, "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
        "tp": 2, "fp": 1, "tn": 2, "fn": 0,
    }
    assert report["at_bands"]["high"]["tp"] == 0 and report["at_bands"]["high"]["precision"] == 0.0
    assert report["best_f1"] == {
        "threshold": 0.35, "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
        "tp": 2, "fp": 1, "tn": 2, "fn": 0,
    }
    assert report["per_label"] == [
        {"label": "normal", "count": 3, "flagged": 1, "detection_rate": pytest.approx(1 / 3)},
        {"label": "dos", "count": 1, "flagged": 0, "detection_rate": 0.0},
        {"label": "probe", "count": 1, "flagged": 1, "detection_rate": 1.0},
    ]


def test_evaluate_matches_sklearn_on_random_data():
    rng = np.random.default_rng(7)
    labels = rng.choice(["normal", "dos", "probe", "r2l"], size=1000, p=[0.7, 0.15, 0.1, 0.05])
    y = labels != "normal"
    scores = np.exp(rng.normal(size=1000) + 2 * y)
    report = evaluate(scores, labels, normal_value="normal", threshold=3.0)
    assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-6)
    assert report["pr_auc"] == pytest.approx(skm.average_precision_score(y, scores), abs=1e-6)
    assert report["at_threshold"]["f1"] == pytest.approx(skm.f1_score(y, scores >= 3.0))
    assert report["at_bands"] == {}
    assert sum(row["count"] for row in report["per_label"]) == 1000


def test_evaluate_single_class_keeps_threshold_metrics():
    report = evaluate([0.1, 0.5, 0.9], [0, 0, 0], normal_value=0, threshold=0.5)
    assert (report["roc_auc"], report["pr_auc"], report["best_f1"]) == (None, None, None)
    assert report["at_threshold"]["fp"] == 2
    assert report["per_label"] == [{"label": "0", "count": 3, "flagged": 2, "detection_rate": pytest.approx(2 / 3)}]
    json.dumps(report)
