"""End to end on real data: train on NSL-KDD normal rows, score the test file, print ROC-AUC."""

import csv
import json

import numpy as np
import pytest
import yaml

from monitor.cli import main
from trainer import config_from_dict, fit
from trainer.datasets import NSL_KDD_COLUMNS, SHARED_DATA, nsl_kdd_schema, read_nsl_kdd
from trainer.evaluation import pr_auc, roc_auc


def test_nsl_kdd_default_settings_detect_attacks():
    train = read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    test = read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTest+.txt")
    normal = [r for r in train if r["attack"] == "normal"]
    bundle = fit(normal, config_from_dict({"fields": nsl_kdd_schema()}, environ={}), verbose=False)
    scores = bundle.anomaly_scores(test)
    y = np.array([r["attack"] != "normal" for r in test])
    roc, pr = roc_auc(y, scores), pr_auc(y, scores)
    print(f"\nNSL-KDD default settings: ROC-AUC {roc:.4f}, PR-AUC {pr:.4f}, "
          f"{bundle.training['epochs_run']} epochs in {bundle.training['seconds']:.1f} s")
    # Seed 0 measured 0.976 / 0.978 here; the floor leaves room for float differences across CPUs.
    assert roc >= 0.96 and pr >= 0.96
    # Calibrated on held-out normal rows at a 0.1% target: few false alarms on the test's normal rows.
    false_alarm = bundle.threshold.is_anomaly(scores[~y]).mean()
    assert false_alarm < 0.05


def write_csv_with_header(source, target, keep=lambda row: True) -> list[list[str]]:
    """NSL-KDD rows as a user would hand them to anomon: CSV with a header, values as text."""
    with open(source, newline="") as file:
        rows = [row for row in csv.reader(file) if row and keep(row)]
    with open(target, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(NSL_KDD_COLUMNS)
        writer.writerows(rows)
    return rows


@pytest.mark.slow
def test_infer_train_score_on_nsl_kdd_scores_every_line(tmp_path, capsys):
    attack = NSL_KDD_COLUMNS.index("attack")
    write_csv_with_header(SHARED_DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt", tmp_path / "normal.csv",
                          keep=lambda row: row[attack] == "normal")
    test_rows = write_csv_with_header(SHARED_DATA / "nsl-kdd" / "KDDTest+.txt", tmp_path / "test.csv")

    assert main(["schema", "infer", str(tmp_path / "normal.csv"), "--out", str(tmp_path / "anomon.yaml")]) == 0
    config = yaml.safe_load((tmp_path / "anomon.yaml").read_text())
    assert "boolean" not in config["fields"].values()  # 0/1 columns are numbers, so a 3 is a number too
    config["fields"].update(attack="ignore", difficulty="ignore")  # the label, and not a feature
    (tmp_path / "anomon.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # field order as inferred
    assert main(["train", "--config", str(tmp_path / "anomon.yaml"), "--data", str(tmp_path / "normal.csv"),
                 "--out", str(tmp_path / "model")]) == 0
    assert main(["score", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "test.csv"),
                 "--out", str(tmp_path / "scores.jsonl")]) == 0
    capsys.readouterr()

    lines = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == len(test_rows) == 22544
    assert [line for line in lines if "error" in line] == []  # every record scored
    scores = np.array([line["score"] for line in lines])
    y = np.array([row[attack] != "normal" for row in test_rows])
    roc, pr = roc_auc(y, scores), pr_auc(y, scores)
    print(f"\nNSL-KDD through schema infer, train and score: ROC-AUC {roc:.4f}, PR-AUC {pr:.4f}")
    # Measured 0.9699 and 0.9603 (0.9717 and 0.9626 before the neighbour distance counted more in few
    # fields: this seed lost 0.002 as seed 2 gained 0.004; seeds 0-4's mean is unchanged, see README).
    assert roc >= 0.965 and pr >= 0.955
