"""Config and file faults through the `anomon` command line: bad YAML, unknown keys, unreadable or
truncated data files, broken model directories, a format from the future.  Each is one line on
stderr and a non-zero exit status, never a traceback; and nothing is left half-written (bundles,
score files and reports go to a temporary name, then are renamed)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import torch

from monitor.cli import main
from trainer.bundle import Bundle, resolve_version
from trainer.files import TEMPORARY_PREFIX
from trainer.report import _figure, _save

RECORDS = [{"x": i % 17, "c": "abc"[i % 3]} for i in range(300)]


def run(capsys, *argv: str) -> tuple[int, str]:
    """Exit status and stderr of ``anomon ARGV`` (the real entry point, in this process)."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def one_line_error(status: int, err: str, prefix: str) -> str:
    assert status != 0
    assert err.startswith(f"anomon: {prefix}") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("files")
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS)
    (d / "ok.yaml").write_text("fields: {x: numeric, c: categorical}\nmodel: {epochs: 2}\n")
    (d / "data.jsonl").write_text(lines)
    packed = gzip.compress(lines.encode())
    (d / "truncated.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (d / "not-gzip.jsonl.gz").write_bytes(b"plain text, not gzip")
    (d / "latin1.jsonl").write_bytes(b'{"x": 1, "c": "a"}\n{"x": 2, "c": "\xe9t\xe9"}\n')
    (d / "half-line.jsonl").write_text(lines[:2000] + '{"x": 3, "c": \n')
    (d / "short-row.csv").write_text("x,c\n1,a\n2\n")
    (d / "folder.jsonl").mkdir()
    bundle = Bundle.load(_train(d))
    return {**{p.name: p for p in d.iterdir()}, "model": d / "model", "version": bundle.path}


def _train(d: Path) -> Path:
    assert main(["train", "--config", str(d / "ok.yaml"), "--data", str(d / "data.jsonl"), "--out", str(d / "model"),
                 "--quiet"]) == 0
    return d / "model"


@pytest.mark.parametrize("text, message", [
    ("fields: [unclosed\n", "is not valid YAML at line 2"),
    ("fields: {x: numeric}\nkafka: {bootsrap_servers: x}\n", "unknown key 'kafka.bootsrap_servers'"),
    ("fields: {x: numeric}\nmodel: {epochs: ten}\n", "'model.epochs' must be int, got str 'ten'"),
    ("- just\n- a list\n", "the top level must be a mapping"),
    ("fields: {x: numeric}\nkafka: {security_protocol: SASL_SSL, sasl_mechanism: PLAIN}\n",
     "needs 'kafka.sasl_plain_username'"),
])
def test_config_errors_are_one_line(files, tmp_path, capsys, text, message):
    config = tmp_path / "anomon.yaml"
    config.write_text(text)
    err = one_line_error(*run(capsys, "train", "--config", config, "--data", files["data.jsonl"], "--out",
                              tmp_path / "m"), "config:")
    assert message in err
    assert not (tmp_path / "m").exists()


def test_a_missing_config_is_one_line(files, tmp_path, capsys):
    err = one_line_error(*run(capsys, "train", "--config", tmp_path / "absent.yaml", "--data", files["data.jsonl"],
                              "--out", tmp_path / "m"), "config:")
    assert "cannot read" in err


@pytest.mark.parametrize("name, message", [
    ("truncated.jsonl.gz", "is a truncated or corrupt gzip file"),
    ("not-gzip.jsonl.gz", "is a truncated or corrupt gzip file"),
    ("latin1.jsonl", "is not UTF-8 text"),
    ("half-line.jsonl", "invalid JSON"),
    ("short-row.csv", "line 3: 1 columns, header has 2"),
    ("folder.jsonl", "is a directory"),
    ("absent.jsonl", "does not exist"),
    ("data.parquet", "is not one of .jsonl"),
])
def test_unreadable_data_files_are_one_line_and_write_nothing(files, tmp_path, capsys, name, message):
    data = files.get(name, tmp_path / name)
    err = one_line_error(*run(capsys, "train", "--config", files["ok.yaml"], "--data", data, "--out", tmp_path / "m",
                              "--quiet"), "data:")
    assert message in err
    assert not (tmp_path / "m").exists()


def test_scoring_a_damaged_file_leaves_no_half_written_output(files, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    one_line_error(*run(capsys, "score", "--model", files["model"], "--data", files["half-line.jsonl"], "--out", out),
                   "data:")
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary one
    out.write_text("yesterday's scores\n")
    one_line_error(*run(capsys, "score", "--model", files["model"], "--data", files["truncated.jsonl.gz"], "--out",
                        out), "data:")
    assert out.read_text() == "yesterday's scores\n" and list(tmp_path.iterdir()) == [out]
    assert run(capsys, "score", "--model", files["model"], "--data", files["data.jsonl"], "--out", out)[0] == 0
    assert len(out.read_text().splitlines()) == len(RECORDS)


def broken_copy(files, tmp_path, damage) -> Path:
    version = tmp_path / "version"
    version.mkdir()
    for f in files["version"].iterdir():
        (version / f.name).write_bytes(f.read_bytes())
    damage(version)
    return version


def _edit_manifest(version: Path, **changes) -> None:
    manifest = json.loads((version / "manifest.json").read_text())
    manifest.update(changes)
    (version / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda v: (v / "weights.pt").unlink(), "is missing weights.pt"),
    (lambda v: (v / "encoder.json").write_text("{}"), "encoder.json does not match its sha256"),
    (lambda v: (v / "manifest.json").write_text("{not json"), "manifest.json is not valid JSON"),
    (lambda v: _edit_manifest(v, format_version=7), "format version 7, newer than the 1 this anomon reads"),
    (lambda v: (v / "manifest.json").unlink(), "is not a model bundle"),
])
def test_broken_model_directories_are_one_line(files, tmp_path, capsys, damage, message):
    version = broken_copy(files, tmp_path, damage)
    err = one_line_error(*run(capsys, "score", "--model", version, "--data", files["data.jsonl"], "--top", "1"),
                         "bundle:")
    assert message in err


def test_current_naming_a_missing_version_is_one_line(files, tmp_path, capsys):
    (tmp_path / "CURRENT").write_text("20990101T000000000000Z-deadbeef\n")
    err = one_line_error(*run(capsys, "score", "--model", tmp_path, "--data", files["data.jsonl"]), "bundle:")
    assert "names a version that does not exist" in err


def test_a_bundle_that_fails_half_way_leaves_no_version_and_current_unchanged(files, tmp_path, monkeypatch):
    model = tmp_path / "model"
    bundle = Bundle.load(files["model"])
    first = bundle.save(model)

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a state dict")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        bundle.save(model)
    assert resolve_version(model) == first
    assert sorted(p.name for p in (model / "versions").iterdir()) == [first.name]
    assert [p.name for p in model.iterdir() if p.name.startswith(TEMPORARY_PREFIX)] == []


def test_a_report_image_that_fails_half_way_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "roc_pr.png"
    path.write_bytes(b"the previous image")
    fig = _figure(4, 3)

    def half_written(stream, **kwargs):
        stream.write(b"\x89PNG half")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(fig, "savefig", half_written)
    with pytest.raises(RuntimeError):
        _save(fig, path)
    assert path.read_bytes() == b"the previous image" and os.listdir(tmp_path) == ["roc_pr.png"]
