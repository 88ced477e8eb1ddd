"""Tests for trainer.report: every plot writes a readable PNG; write_report writes the set."""

import doctest
import json
import subprocess
import sys

import numpy as np
import pytest

from trainer import report
from trainer.evaluation import evaluate
from trainer.report import (
    plot_image_grid,
    plot_roc_pr,
    plot_score_histogram,
    plot_scores_by_index,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    """The file starts with the PNG signature and matplotlib reads back a non-empty image."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


@pytest.fixture
def scored():
    """Log-normal scores spanning decades; 30 rare attack names plus a normal majority."""
    rng = np.random.default_rng(0)
    n = 600
    labels = np.where(rng.random(n) < 0.7, "normal", rng.choice([f"attack_{i}" for i in range(30)], n))
    scores = np.exp(rng.normal(size=n) + 3 * (labels != "normal"))
    return scores, labels


def test_doctests():
    assert doctest.testmod(report).failed == 0


def test_import_does_not_load_matplotlib():
    code = "import sys, trainer.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_matplotlib_raises_clear_error(monkeypatch, tmp_path):
    # A None entry makes the import fail; submodules too, as earlier tests imported them.
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(RuntimeError, match=r"pip install 'anomon\[report\]'"):
        plot_scores_by_index([0.1, 0.2], ["a", "b"], 0.15, tmp_path / "x.png")


@pytest.mark.parametrize("spread", [1.0, 1e-3])  # log-spaced bins, then linear bins
def test_plot_score_histogram(tmp_path, scored, spread):
    scores, labels = scored
    path = plot_score_histogram(scores**spread, labels, 20.0**spread, tmp_path / "hist.png")
    assert path == tmp_path / "hist.png"
    assert_png(path)


def test_plot_score_histogram_constant_scores(tmp_path):
    assert_png(plot_score_histogram([1.0, 1.0, 1.0], ["a", "a", "b"], 1.0, tmp_path / "hist.png"))


def test_plot_scores_by_index(tmp_path, scored):
    assert_png(plot_scores_by_index(*scored, 20.0, tmp_path / "sub" / "index.png"))


def test_plot_roc_pr(tmp_path, scored):
    scores, labels = scored
    assert_png(plot_roc_pr(labels != "normal", scores, tmp_path / "roc_pr.png"))


def test_plot_image_grid_wraps_rows(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((11, 784))
    path = plot_image_grid(images, images * 0.5, [f"#{i}" for i in range(11)], tmp_path / "grid.png")
    assert_png(path)


def test_plot_image_grid_rejects_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match="titles"):
        plot_image_grid(np.zeros((2, 4)), np.zeros((2, 4)), ["only one"], tmp_path / "g.png", shape=(2, 2))


def test_group_labels_keeps_legends_short(scored):
    grouped, names = report._group_labels(scored[1])
    assert len(names) == report.MAX_GROUPS
    assert names[0] == "normal" and names[-1] == report.OTHER
    assert set(np.unique(grouped)) == set(names)


def test_write_report(tmp_path, scored):
    scores, labels = scored
    rng = np.random.default_rng(1)
    images = rng.random((scores.size, 28, 28))
    metrics = evaluate(scores, labels, normal_value="normal", threshold=20.0, bands={"high": 50.0})
    paths = write_report(
        tmp_path / "report", scores, labels, "normal", 20.0, metrics, images=images, reconstructions=images * 0.9
    )
    names = ["metrics.json", "score_histogram.png", "scores_by_index.png", "roc_pr.png", "top_anomalies.png"]
    assert [p.name for p in paths] == names
    assert all(p.parent == tmp_path / "report" for p in paths)
    assert json.loads(paths[0].read_text()) == metrics
    for png in paths[1:]:
        assert_png(png)


def test_write_report_single_class_skips_roc_pr(tmp_path):
    scores, labels = [0.1, 0.2, 0.3], ["normal"] * 3
    metrics = evaluate(scores, labels, normal_value="normal", threshold=0.25)
    paths = write_report(tmp_path, scores, labels, "normal", 0.25, metrics)
    assert [p.name for p in paths] == ["metrics.json", "score_histogram.png", "scores_by_index.png"]


def test_write_report_needs_reconstructions_with_images(tmp_path):
    with pytest.raises(ValueError, match="together"):
        write_report(tmp_path, [0.1], ["a"], "a", 0.5, {}, images=np.zeros((1, 784)))
