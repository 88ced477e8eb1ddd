"""The `anomon` CLI: schema infer on messy data, train, and one-line errors without tracebacks."""

import gzip
import json
import subprocess
import sys

import pytest
import yaml

from monitor.cli import main
from trainer import Bundle, load_config

MESSY_CSV = """\
request_id,bytes,proto,ok,when,latency,comment
{rows}
"""


def write_messy_csv(path, n=300):
    rows = []
    for i in range(n):
        bytes_ = "" if i % 17 == 0 else str(i * 13 % 997)
        latency = "NaN" if i % 29 == 0 else f"{(i % 50) / 10:.1f}"
        ok = ["true", "false", "TRUE", ""][i % 4]
        rows.append(f"req-{i:05d},{bytes_},{['tcp', 'udp'][i % 2]},{ok},2024-01-0{1 + i % 9}T10:00:00Z,{latency},")
    path.write_text(MESSY_CSV.format(rows="\n".join(rows)))


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_schema_infer_on_messy_csv(tmp_path, capsys):
    data = tmp_path / "messy.csv"
    write_messy_csv(data)
    code, _, _ = run_cli("schema", "infer", data, "--out", tmp_path / "anomon.yaml", capsys=capsys)
    assert code == 0
    text = (tmp_path / "anomon.yaml").read_text()
    fields = yaml.safe_load(text)["fields"]
    assert fields == {
        "request_id": "ignore",
        "bytes": "numeric",
        "proto": "categorical",
        "ok": "boolean",
        "when": "timestamp",
        "latency": "numeric",
        "comment": "ignore",
    }
    assert "high cardinality (300 distinct of 300)" in text
    assert "# key: request_id" in text
    assert load_config(tmp_path / "anomon.yaml").fields  # the proposal is a valid config


def test_schema_infer_jsonl_gz_with_vectors_and_nesting(tmp_path, capsys):
    data = tmp_path / "events.jsonl.gz"
    with gzip.open(data, "wt") as f:
        for i in range(60):
            f.write(json.dumps({"pixels": [i, 0, 1], "meta": {"a": 1}, "n": i, "flag": i % 2, "ok": i % 3 == 0,
                                "zero": 0}) + "\n")
    code, out, _ = run_cli("schema", "infer", data, capsys=capsys)
    assert code == 0
    fields = yaml.safe_load(out)["fields"]
    assert fields == {"pixels": {"type": "vector", "size": 3}, "meta": "ignore", "n": "numeric",
                      "flag": "numeric", "ok": "boolean", "zero": "numeric"}  # 0/1 numbers stay numbers
    assert "zero: numeric  # constant in the sample: any other value will be anomalous" in out


def test_train_writes_a_loadable_bundle(tmp_path, capsys):
    data = tmp_path / "messy.csv"
    write_messy_csv(data)
    config = tmp_path / "anomon.yaml"
    config.write_text(yaml.safe_dump({
        "fields": {"bytes": "numeric", "proto": "categorical", "ok": "boolean", "when": "timestamp",
                   "latency": "numeric", "request_id": "ignore", "comment": "ignore"},
        "model": {"epochs": 3},
    }, sort_keys=False))
    code, out, _ = run_cli("train", "--config", config, "--data", data, "--out", tmp_path / "m", "--quiet",
                           capsys=capsys)
    assert code == 0 and out.startswith("wrote ")
    bundle = Bundle.load(tmp_path / "m")
    assert bundle.field_names == ["bytes", "proto", "ok", "when", "latency"]
    assert bundle.training["records"] == 300


def test_train_with_max_records_trains_on_a_sample(tmp_path, capsys):
    data = tmp_path / "messy.csv"
    write_messy_csv(data)
    config = tmp_path / "anomon.yaml"
    config.write_text("fields: {bytes: numeric, proto: categorical}\nmodel: {epochs: 2}\n")
    code, _, err = run_cli("train", "--config", config, "--data", data, "--out", tmp_path / "m",
                           "--max-records", "120", capsys=capsys)
    assert code == 0 and "uniform sample of 120 of 300 records" in err
    bundle = Bundle.load(tmp_path / "m")
    assert (bundle.training["records"], bundle.training["kept"], bundle.config.model.max_records) == (300, 120, 120)
    code, _, err = run_cli("train", "--config", config, "--data", data, "--out", tmp_path / "m",
                           "--max-records", "12", capsys=capsys)
    assert code == 1 and err == "anomon: training: 12 of 300 (model.max_records) records are too few " \
                                "(need at least 30)\n"


@pytest.mark.parametrize(
    "config_text, message",
    [
        ("fields: {a: numeric}\nmodel: {epochs: ten}\n", "anomon: config: 'model.epochs' must be int, got str 'ten'"),
        ("fields: {a: numeric}\nkafka: {bootsrap_servers: x}\n", "anomon: config: unknown key 'kafka.bootsrap_servers'"),
        ("model: {epochs: 3}\n", "anomon: config: missing 'fields'"),
        ("fields: [a\n", "is not valid YAML at line"),
    ],
)
def test_bad_config_is_one_line_without_traceback(tmp_path, config_text, message):
    config = tmp_path / "anomon.yaml"
    config.write_text(config_text)
    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\n')
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "train", "--config", str(config), "--data", str(data), "--out",
         str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config", "{config}", "--data", "{dir}/absent.jsonl", "--out", "{dir}/m"], "does not exist"),
        (["train", "--config", "{config}", "--data", "{dir}/data.txt", "--out", "{dir}/m"], "is not one of .jsonl"),
        (["train", "--config", "{config}", "--data", "{dir}/broken.jsonl", "--out", "{dir}/m"], "line 2: invalid JSON"),
        (["train", "--config", "{config}", "--data", "{dir}/tiny.jsonl", "--out", "{dir}/m"], "too few"),
        (["schema", "infer", "{dir}/absent.csv"], "does not exist"),
    ],
)
def test_bad_data_is_one_line(tmp_path, capsys, args, message):
    config = tmp_path / "anomon.yaml"
    config.write_text("fields: {a: numeric}\n")
    (tmp_path / "data.txt").write_text("a\n1\n")
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n{"a": \n')
    (tmp_path / "tiny.jsonl").write_text('{"a": 1}\n' * 5)
    code, _, err = run_cli(*[a.format(config=config, dir=tmp_path) for a in args], capsys=capsys)
    assert code == 1
    assert message in err and err.count("\n") == 1 and err.startswith("anomon: ")


def test_no_command_prints_help(capsys):
    code, out, _ = run_cli(capsys=capsys)
    assert code == 2 and "commands" in out
