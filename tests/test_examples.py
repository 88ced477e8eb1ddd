"""The seed demos in examples/ run end to end (2 training epochs instead of the configs' 60-200).

They read the real shared data sets: a missing data set fails these tests, it does not skip them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import matplotlib.image
import pytest
import yaml

from trainer.datasets import nsl_kdd_schema

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / name / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(monkeypatch, tmp_path, capsys):
    """Run an example's main() into a temporary folder with 2 epochs; returns (folder, stdout)."""
    monkeypatch.setenv("ANOMON_MODEL_EPOCHS", "2")

    def run_example(name: str) -> tuple[Path, str]:
        load(name).main(["--out", str(tmp_path)])
        return tmp_path, capsys.readouterr().out

    return run_example


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(path).shape[0] > 0


def metrics(out: Path) -> dict:
    return json.loads((out / "report" / "metrics.json").read_text())


@pytest.mark.parametrize("name", ["mnist_1000", "mnist_holdout", "mnist_one_digit", "nsl_kdd"])
def test_example_is_documented_and_configured(name):
    folder = EXAMPLES / name
    assert {"anomon.yaml", "README.md", "run.py"} <= {p.name for p in folder.iterdir()}
    assert f"python examples/{name}/run.py" in (folder / "README.md").read_text()


def test_mnist_1000(run):
    out, stdout = run("mnist_1000")
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 1000 and all("score" in line for line in lines)
    table = stdout.split("$ anomon score", 1)[1].splitlines()
    rows = [row for row in table if row.split()[:1] and row.split()[0].isdigit()]
    assert len(rows) == 10 and all("label=" in row and "pixels 100%" in row for row in rows)
    best = max(lines, key=lambda line: line["score"])
    assert int(rows[0].split()[1]) == best["index"]  # rank 1 is the single most anomalous image
    assert_png(out / "top10.png")


def test_mnist_holdout(run):
    out, stdout = run("mnist_holdout")
    m = metrics(out)
    config = yaml.safe_load((EXAMPLES / "mnist_holdout" / "anomon.yaml").read_text())
    assert config["threshold"]["method"] == "max"
    table = {row["label"]: row for row in m["per_label"]}
    assert set(table) == {"normal", "held_out_5", "not_digit_inverted", "not_digit_rotated", "not_digit_noise"}
    assert table["normal"]["count"] == 450 and table["held_out_5"]["count"] == 100
    # Noise is nothing like a digit: even a 2-epoch model flags it all; the max threshold spares normal digits.
    assert table["not_digit_noise"]["detection_rate"] == 1.0
    assert table["normal"]["detection_rate"] < 0.1
    assert "held_out_5" in stdout and "detection rate" in stdout
    assert_png(out / "report" / "top_anomalies_pixels.png")


def test_mnist_one_digit(run):
    out, _ = run("mnist_one_digit")
    m = metrics(out)
    assert {row["label"] for row in m["per_label"]} == {"0", "1"}
    assert m["roc_auc"] > 0.8
    assert_png(out / "report" / "score_histogram.png")


def test_nsl_kdd(run):
    out, stdout = run("nsl_kdd")
    config = yaml.safe_load((EXAMPLES / "nsl_kdd" / "anomon.yaml").read_text())
    assert config["fields"] == nsl_kdd_schema()
    m = metrics(out)
    assert m["n"] == 22544 and m["roc_auc"] > 0.85
    for png in ["score_histogram.png", "scores_by_index.png", "roc_pr.png"]:
        assert_png(out / "report" / png)
    neptune = next(row for row in stdout.splitlines() if row.startswith("| neptune |"))
    top_field = neptune.split("|")[3].split("`")[1]  # the field with the largest mean share
    # A SYN flood: half-open connections (flag S0, SYN error rates), many of them, to private ports,
    # spread over many services (a low same_srv_rate, where normal connections sit near 1).
    assert top_field in {"service", "flag", "count", "srv_count", "same_srv_rate"} or "serror" in top_field, neptune
