"""Tests for trainer.scoring through the `anomon score` and `anomon evaluate` commands (in-process)."""

from __future__ import annotations

import csv
import doctest
import json
import sys
import tracemalloc

import matplotlib.image
import numpy as np
import pytest
import torch

from monitor.cli import main
from trainer import scoring
from trainer.bundle import Bundle
from trainer.config import config_from_dict
from trainer.datasets import write_jsonl
from trainer.encoding import Encoder
from trainer.autoencoder import build_autoencoder
from trainer.fit import fit
from trainer.scoring import TopN, score_file
from trainer.threshold import Threshold

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINE_KEYS = {"index", "score", "record_score", "severity", "anomaly", "threshold", "contributions"}


def events(n: int, seed: int = 0) -> list[dict]:
    """Normal traffic: bytes around 1000, proto tcp/udp, a flag; `kind` labels it."""
    rng = np.random.default_rng(seed)
    return [
        {"bytes": float(rng.normal(1000, 50)), "proto": ["tcp", "udp"][i % 2], "ok": bool(i % 3),
         "kind": "normal", "id": f"e{i}"}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small fitted bundle, in memory and saved; fields out of alphabetical order on purpose."""
    config = config_from_dict({
        "fields": {"proto": "categorical", "bytes": "numeric", "ok": "boolean", "kind": "ignore", "id": "ignore"},
        "key": "id",
        "model": {"epochs": 5, "seed": 1},
        "threshold": {"method": "quantile", "target_rate": 0.05},
    }, environ={})
    bundle = fit(events(300), config, verbose=False)
    directory = tmp_path_factory.mktemp("model")
    bundle.save(directory)
    return bundle, directory


@pytest.fixture
def data(tmp_path):
    """40 normal events, 2 planted anomalies (index 7 and 23) and one invalid record (index 30)."""
    records = events(40, seed=5)
    records[7].update(bytes=1e7, proto="icmp", kind="attack")
    records[23].update(bytes=5e5, kind="attack")
    records[30]["bytes"] = "lots"
    path = tmp_path / "events.jsonl"
    write_jsonl(records, path)
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def test_doctests():
    assert doctest.testmod(scoring).failed == 0


# --- anomon score --------------------------------------------------------------------------------


def test_score_output_schema_and_order(capsys, fitted, data, tmp_path):
    bundle, model = fitted
    status, _, err = run_cli(capsys, "score", "--model", model, "--data", data, "--out", tmp_path / "s.jsonl")
    assert status == 0 and "scored 40 records" in err
    lines = read_lines(tmp_path / "s.jsonl")
    assert [line["index"] for line in lines] == list(range(40))
    valid = [line for line in lines if "error" not in line]
    assert len(valid) == 40  # record 30's unreadable value is scored as missing
    for line in valid:
        assert set(line) == LINE_KEYS | ({"invalid"} if line["index"] == 30 else set())
        assert line["threshold"] == bundle.threshold.value
        assert line["anomaly"] == (line["score"] >= line["threshold"])
        assert (line["severity"] is None) == (not line["anomaly"])
        assert 0 <= line["record_score"] <= 100
        shares = [c["share"] for c in line["contributions"]]
        assert len(shares) == 3 and shares == sorted(shares, reverse=True)  # 3 modelled fields, top 5 asked
        assert {c["field"] for c in line["contributions"]} == {"proto", "bytes", "ok"}
        assert set(line["contributions"][0]) - {"invalid"} == {"field", "share", "actual", "expected"}
    assert lines[7]["anomaly"] and lines[7]["severity"] is not None
    assert lines[7]["contributions"][0]["field"] in {"bytes", "proto"}


def test_score_matches_the_in_memory_bundle(capsys, fitted, data, tmp_path):
    # The saved and reloaded bundle scores exactly like the one fit() returned.
    bundle, model = fitted
    run_cli(capsys, "score", "--model", model, "--data", data, "--out", tmp_path / "s.jsonl")
    records = [json.loads(line) for line in data.read_text().splitlines()]
    expected = bundle.score(records).scores
    got = [line.get("score", np.nan) for line in read_lines(tmp_path / "s.jsonl")]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_unreadable_values_are_scored_and_listed(capsys, fitted, data, tmp_path):
    run_cli(capsys, "score", "--model", fitted[1], "--data", data, "--out", tmp_path / "s.jsonl")
    line = read_lines(tmp_path / "s.jsonl")[30]
    assert line["invalid"] == [{"field": "bytes", "detail": "field 'bytes': cannot read 'lots' as a number"}]
    [listed] = [c for c in line["contributions"] if c["field"] == "bytes"]
    assert listed["invalid"] is True and listed["actual"] == "lots"


def test_chunking_does_not_change_the_output(fitted, data, tmp_path):
    score_file(fitted[1], data, out=tmp_path / "one.jsonl", verbose=False)
    score_file(fitted[1], data, out=tmp_path / "many.jsonl", chunk_size=7, verbose=False)
    assert read_lines(tmp_path / "one.jsonl") == read_lines(tmp_path / "many.jsonl")


def test_csv_scores_like_json_lines(fitted, data, tmp_path):
    records = [json.loads(line) for line in data.read_text().splitlines()]
    csv_path = tmp_path / "events.csv"
    with open(csv_path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    score_file(fitted[1], data, out=tmp_path / "json.jsonl", verbose=False)
    score_file(fitted[1], csv_path, out=tmp_path / "csv.jsonl", verbose=False)
    from_json, from_csv = read_lines(tmp_path / "json.jsonl"), read_lines(tmp_path / "csv.jsonl")
    assert [line.get("score") for line in from_csv] == pytest.approx([line.get("score") for line in from_json])


def test_contributions_option_limits_fields(capsys, fitted, data, tmp_path):
    run_cli(capsys, "score", "--model", fitted[1], "--data", data, "--out", tmp_path / "s.jsonl",
            "--contributions", 1)
    lines = read_lines(tmp_path / "s.jsonl")
    assert all(len(line["contributions"]) == 1 for line in lines if "invalid" not in line)
    assert len([c for c in lines[30]["contributions"] if not c.get("invalid")]) <= 1  # plus the unreadable value


def test_score_writes_json_lines_to_stdout_without_out_or_top(capsys, fitted, data):
    status, out, _ = run_cli(capsys, "score", "--model", fitted[1], "--data", data)
    assert status == 0
    assert [json.loads(line)["index"] for line in out.splitlines()] == list(range(40))


def test_top_prints_the_most_anomalous_records(capsys, fitted, data, tmp_path):
    status, out, _ = run_cli(capsys, "score", "--model", fitted[1], "--data", data, "--top", 4,
                             "--out", tmp_path / "s.jsonl")
    assert status == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:5] == ["rank", "index", "score", "record", "severity"]
    assert len(rows) == 4
    scored = [line for line in read_lines(tmp_path / "s.jsonl") if "score" in line]
    best = sorted(scored, key=lambda line: -line["score"])[:4]
    assert [int(row.split()[1]) for row in rows] == [line["index"] for line in best]
    assert [int(row.split()[0]) for row in rows] == [1, 2, 3, 4]
    assert int(rows[0].split()[1]) == 7  # the planted anomaly tops the table...
    assert "id=e7" in rows[0] and "kind=attack" in rows[0]  # ...with its key and ignored fields as context


def test_top_n_keeps_the_highest_with_ties_in_file_order():
    best = TopN(3)
    best.offer(np.array([1.0, 5.0, 5.0]), start=0, item=lambda row: row)
    best.offer(np.array([5.0, np.nan, 2.0]), start=3, item=lambda row: 3 + row)
    assert best.items() == [1, 2, 3]
    assert TopN(0).items() == []


def test_score_memory_does_not_grow_with_file_size(fitted, tmp_path):
    def peak(n: int) -> int:
        path = tmp_path / f"{n}.jsonl"
        write_jsonl(events(n), path)
        tracemalloc.start()
        score_file(fitted[1], path, out=tmp_path / "s.jsonl", top=5, chunk_size=500, verbose=False)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    small, large = peak(1_000), peak(10_000)
    assert large < 1.5 * small, (small, large)


# --- anomon evaluate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def square_model(tmp_path_factory):
    """A bundle whose score is exactly x squared: identity scaling and an all-zero decoder output."""
    config = config_from_dict({"fields": {"x": {"type": "numeric", "required": True}, "kind": "ignore"}}, environ={})
    encoder = Encoder(config.fields, config.encoding).fit([{"x": 0.0}, {"x": 1.0}])
    encoder.load_state({"x": {"log": False, "center": 0.0, "scale": 1.0, "range": [-100.0, 100.0]}})
    model = build_autoencoder(encoder.width, [1], "tanh", seed=0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    bands = {"warning": 5.0, "minor": 10.0, "major": 12.0, "critical": 20.0}
    threshold = Threshold("max", 5.0, 0.01, bands, {})
    directory = tmp_path_factory.mktemp("square")
    Bundle(config, encoder, model, threshold).save(directory)
    return directory


@pytest.fixture
def tiny(tmp_path):
    """Scores 1, 9, 4, 16 (x squared) for labels ok, ok, bad, bad."""
    path = tmp_path / "tiny.jsonl"
    write_jsonl([{"x": 1, "kind": "ok"}, {"x": 3, "kind": "ok"}, {"x": 2, "kind": "bad"}, {"x": 4, "kind": "bad"}],
                path)
    return path


def test_evaluate_metrics_by_hand(capsys, square_model, tiny, tmp_path):
    status, out, _ = run_cli(capsys, "evaluate", "--model", square_model, "--data", tiny, "--label-field", "kind",
                             "--normal-value", "ok", "--report", tmp_path / "report")
    assert status == 0
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert (m["n"], m["n_positive"], m["invalid"]) == (4, 2, 0)
    # Anomaly/normal pairs: 4 beats 1 but not 9, 16 beats both -> 3 of 4.
    assert m["roc_auc"] == pytest.approx(3 / 4)
    # Ranked 16 (bad), 9 (ok), 4 (bad), 1 (ok): AP = 1/2 * 1 + 1/2 * 2/3.
    assert m["pr_auc"] == pytest.approx(5 / 6)
    # Threshold 5 flags 9 and 16: one hit, one false alarm, one miss.
    at = m["at_threshold"]
    assert (at["threshold"], at["tp"], at["fp"], at["fn"], at["tn"]) == (5.0, 1, 1, 1, 1)
    assert (at["precision"], at["recall"], at["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert list(m["at_bands"]) == ["warning", "minor", "major", "critical"]
    assert (m["at_bands"]["minor"]["precision"], m["at_bands"]["minor"]["recall"]) == pytest.approx((1.0, 0.5))
    assert m["at_bands"]["critical"]["tp"] + m["at_bands"]["critical"]["fp"] == 0
    # Flagging >= 4 catches both anomalies for one false alarm: F1 = 4 / 5.
    assert (m["best_f1"]["threshold"], m["best_f1"]["f1"]) == pytest.approx((4.0, 0.8))
    assert {row["label"]: row["detection_rate"] for row in m["per_label"]} == {"ok": 0.5, "bad": 0.5}
    assert [(t["index"], t["label"], t["score"]) for t in m["top_anomalies"]] == [
        (3, "bad", 16.0), (1, "ok", 9.0), (2, "bad", 4.0), (0, "ok", 1.0)]
    assert "ROC-AUC 0.7500" in out and "PR-AUC 0.8333" in out
    for png in ["score_histogram.png", "scores_by_index.png", "roc_pr.png"]:
        assert_png(tmp_path / "report" / png)


def test_evaluate_matches_numeric_labels_as_strings(capsys, square_model, tmp_path):
    path = tmp_path / "digits.jsonl"
    write_jsonl([{"x": x, "kind": k} for x, k in [(1, 0), (2, 0), (3, 1), (4, 7)]], path)
    status, out, _ = run_cli(capsys, "evaluate", "--model", square_model, "--data", path, "--label-field", "kind",
                             "--normal-value", "0")
    assert status == 0 and "ROC-AUC 1.0000" in out
    assert "2 with kind != 0" in out


def test_evaluate_leaves_invalid_records_out(capsys, square_model, tmp_path):
    path = tmp_path / "with_bad.jsonl"
    write_jsonl([{"x": 1, "kind": "ok"}, {"x": "?", "kind": "bad"}, {"x": 4, "kind": "bad"}], path)
    status, out, _ = run_cli(capsys, "evaluate", "--model", square_model, "--data", path, "--label-field", "kind",
                             "--normal-value", "ok")
    assert status == 0 and "3 records" not in out and "2 records" in out and "1 invalid left out" in out


def test_evaluate_a_single_class(capsys, square_model, tmp_path):
    # All records normal: the AUCs are undefined, the threshold metrics and per-label table are not.
    path = tmp_path / "normal.jsonl"
    write_jsonl([{"x": 1, "kind": "ok"}, {"x": 3, "kind": "ok"}], path)
    status, out, _ = run_cli(capsys, "evaluate", "--model", square_model, "--data", path, "--label-field", "kind",
                             "--normal-value", "ok", "--report", tmp_path / "report")
    assert status == 0 and "ROC-AUC n/a (one class)" in out
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert m["roc_auc"] is None and m["best_f1"] is None
    assert m["per_label"] == [{"label": "ok", "count": 2, "flagged": 1, "detection_rate": 0.5}]
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [  # field errors compare two classes
        "latent_map.png", "metrics.json", "score_histogram.png", "scores_by_index.png"]


def test_evaluate_report_grid_for_image_fields(capsys, tmp_path):
    rng = np.random.default_rng(0)
    images = [{"pixels": rng.random(16).round(3).tolist(), "kind": "normal"} for _ in range(120)]
    config = config_from_dict({"fields": {"pixels": {"type": "vector", "size": 16}, "kind": "ignore"},
                               "model": {"epochs": 2}, "threshold": {"method": "max"}}, environ={})
    fit(images, config, verbose=False).save(tmp_path / "model")
    test = images[:20] + [{"pixels": [5.0] * 16, "kind": "odd"}]
    write_jsonl(test, tmp_path / "test.jsonl")
    status, _, err = run_cli(capsys, "evaluate", "--model", tmp_path / "model", "--data", tmp_path / "test.jsonl",
                             "--label-field", "kind", "--report", tmp_path / "report")
    assert status == 0 and "top_anomalies_pixels.png" in err
    assert_png(tmp_path / "report" / "top_anomalies_pixels.png")
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["top_anomalies"][0]["index"] == 20


# --- errors: one line on stderr, exit status 1 ----------------------------------------------------


def test_evaluate_report_shows_codes_and_field_errors(capsys, fitted, data, tmp_path):
    status, _, err = run_cli(capsys, "evaluate", "--model", fitted[1], "--data", data, "--label-field", "kind",
                             "--report", tmp_path / "report")
    assert status == 0
    for name in ["latent_map.png", "field_errors.png"]:
        path = tmp_path / "report" / name
        assert f"wrote {path}" in err
        assert_png(path)
        assert path.stat().st_size > 10_000  # axes, points and boxes, not a blank canvas
        assert min(matplotlib.image.imread(path).shape[:2]) >= 400


def test_evaluate_report_sample_does_not_depend_on_the_chunk_size(monkeypatch, fitted, data, tmp_path):
    monkeypatch.setattr(scoring, "REPORT_SAMPLE", 20)  # 20 of the 40 records, one attack among them
    for chunk_size in (3, 40):
        scoring.evaluate_file(fitted[1], data, "kind", report=tmp_path / str(chunk_size), chunk_size=chunk_size,
                              verbose=False)
    for name in ["latent_map.png", "field_errors.png"]:  # the same records drawn: the same bytes
        assert (tmp_path / "3" / name).read_bytes() == (tmp_path / "40" / name).read_bytes()


def test_evaluate_missing_label_field(capsys, square_model, tiny):
    status, _, err = run_cli(capsys, "evaluate", "--model", square_model, "--data", tiny, "--label-field", "attack")
    assert_one_line_error(status, err, "no label field 'attack'", "kind, x")


def test_evaluate_record_without_label(capsys, square_model, tmp_path):
    path = tmp_path / "gap.jsonl"
    write_jsonl([{"x": 1, "kind": "ok"}, {"x": 2, "kind": "bad"}, {"x": 3}], path)
    status, _, err = run_cli(capsys, "evaluate", "--model", square_model, "--data", path, "--label-field", "kind",
                             "--normal-value", "ok")
    assert_one_line_error(status, err, "record 2 has no 'kind' label")


def test_evaluate_normal_value_never_present(capsys, square_model, tiny):
    status, _, err = run_cli(capsys, "evaluate", "--model", square_model, "--data", tiny, "--label-field", "kind")
    assert_one_line_error(status, err, "normal value 'normal' never occurs", "values: bad, ok")


@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_fields_that_do_not_match_the_model(capsys, fitted, tmp_path, command):
    path = tmp_path / "other.jsonl"
    write_jsonl([{"bytes": 1.0, "size": 3, "kind": "normal"}] * 3, path)
    label = ["--label-field", "kind"] if command == "evaluate" else []
    status, _, err = run_cli(capsys, command, "--model", fitted[1], "--data", path, *label)
    assert_one_line_error(status, err, "does not match model", "missing fields proto, ok")


def test_missing_data_file_and_bundle(capsys, fitted, tmp_path):
    status, _, err = run_cli(capsys, "score", "--model", fitted[1], "--data", tmp_path / "nope.jsonl")
    assert_one_line_error(status, err, "does not exist")
    status, _, err = run_cli(capsys, "score", "--model", tmp_path, "--data", tmp_path / "nope.jsonl")
    assert_one_line_error(status, err, "is not a model bundle")


def test_report_without_matplotlib(capsys, monkeypatch, square_model, tiny, tmp_path):
    # A None entry makes the import fail; submodules too, as earlier tests imported them.
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)
    status, _, err = run_cli(capsys, "evaluate", "--model", square_model, "--data", tiny, "--label-field", "kind",
                             "--normal-value", "ok", "--report", tmp_path / "report")
    assert_one_line_error(status, err, "pip install 'anomon[report]'")
    assert (tmp_path / "report" / "metrics.json").is_file()  # the metrics are kept all the same
