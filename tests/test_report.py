"""Tests for trainer.report: every plot writes a readable PNG; write_report writes the set."""

import doctest
import json
import subprocess
import sys

import numpy as np
import pytest

from trainer import report
from trainer.config import config_from_dict
from trainer.evaluation import evaluate
from trainer.fit import fit
from trainer.report import (
    RecordSample,
    plot_field_errors,
    plot_image_grid,
    plot_latent_map,
    plot_roc_pr,
    plot_score_histogram,
    plot_scores_by_index,
    principal_components,
    rank_fields,
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


@pytest.fixture
def internals(scored):
    """Codes and contributions of `scored`'s records: anomalies shifted in code space and large in field 3."""
    _, labels = scored
    rng = np.random.default_rng(2)
    anomalous = labels != "normal"
    codes = rng.normal(size=(labels.size, 4)) + 3 * anomalous[:, None]
    contributions = rng.exponential(0.1, size=(labels.size, 20))
    contributions[anomalous, 3] *= 100
    contributions[::50] = np.nan  # refused records
    return RecordSample(codes, contributions, labels, [f"field_{j}" for j in range(20)])


def test_principal_components_finds_the_long_axis():
    rng = np.random.default_rng(0)
    direction = np.array([np.cos(np.pi / 6), np.sin(np.pi / 6)])
    across = np.array([-direction[1], direction[0]])
    cloud = 5 + np.outer(rng.normal(0, 5, 2_000), direction) + np.outer(rng.normal(0, 0.5, 2_000), across)
    projection = principal_components(cloud)
    assert abs(projection.components[0] @ direction) > 0.999
    assert projection.explained[0] == pytest.approx(100 / 100.25, abs=0.01)  # variances 25 and 0.25
    assert projection.explained.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(projection.points[:, 0], (cloud - cloud.mean(axis=0)) @ projection.components[0])


def test_principal_components_of_constant_codes():
    projection = principal_components(np.ones((5, 3)))
    assert projection.points.shape == (5, 2) and projection.explained.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("width", [4, 1])  # PCA scatter, then the 1-wide histogram
def test_plot_latent_map(tmp_path, internals, width):
    assert_png(plot_latent_map(np.asarray(internals.codes)[:, :width], internals.labels, tmp_path / "latent.png"))


@pytest.mark.parametrize("codes", [np.zeros((4, 1)), np.ones((4, 3)), np.ones((1, 3))])
def test_plot_latent_map_degenerate_codes(tmp_path, codes):
    labels = ["ok", "ok", "bad", "bad"][: len(codes)]
    assert_png(plot_latent_map(codes, labels, tmp_path / "latent.png", normal_value="ok"))


def test_rank_fields_puts_the_anomalous_field_first(internals):
    order = rank_fields(internals.contributions, internals.labels != "normal")
    assert order[0] == 3 and sorted(order.tolist()) == list(range(20))


def test_rank_fields_on_a_fitted_bundle():
    rng = np.random.default_rng(0)
    records = [{"bytes": float(rng.normal(1000, 50)), "port": float(rng.choice([80, 443])),
                "proto": ["tcp", "udp"][i % 2]} for i in range(300)]
    config = config_from_dict({"fields": {"bytes": "numeric", "port": "numeric", "proto": "categorical"},
                               "model": {"epochs": 5, "seed": 1}}, environ={})
    bundle = fit(records, config, verbose=False)
    test = records[:100] + [{**record, "bytes": record["bytes"] * 20} for record in records[100:120]]
    order = rank_fields(bundle.score(test).contributions, np.arange(len(test)) >= 100)
    assert bundle.field_names[order[0]] == "bytes"


def test_plot_field_errors(tmp_path, internals):
    path = plot_field_errors(internals.contributions, internals.labels != "normal", internals.field_names,
                             tmp_path / "fields.png", top=6)
    assert_png(path)


def test_plot_field_errors_needs_both_classes_and_names(tmp_path, internals):
    y_true = internals.labels != "normal"
    with pytest.raises(ValueError, match="both normal and anomalous"):
        plot_field_errors(internals.contributions, np.zeros_like(y_true), internals.field_names, tmp_path / "f.png")
    with pytest.raises(ValueError, match="19 field names for 20"):
        plot_field_errors(internals.contributions, y_true, internals.field_names[1:], tmp_path / "f.png")


def test_write_report_with_a_sample(tmp_path, scored, internals):
    scores, labels = scored
    metrics = evaluate(scores, labels, normal_value="normal", threshold=20.0)
    paths = write_report(tmp_path, scores, labels, "normal", 20.0, metrics, sample=internals)
    names = ["metrics.json", "score_histogram.png", "scores_by_index.png", "roc_pr.png", "latent_map.png",
             "field_errors.png"]
    assert [p.name for p in paths] == names
    for png in paths[4:]:
        assert_png(png)


def test_write_report_with_a_single_class_sample_skips_field_errors(tmp_path, scored, internals):
    scores, labels = scored
    normal = labels == "normal"
    only_normal = RecordSample(np.asarray(internals.codes)[normal], np.asarray(internals.contributions)[normal],
                               labels[normal], internals.field_names)
    paths = write_report(tmp_path, scores, labels, "normal", 20.0, {}, sample=only_normal)
    assert [p.name for p in paths][-2:] == ["roc_pr.png", "latent_map.png"]
