"""`anomon generate`: the synthetic traffic generator as a command (the compose stack's `generator`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime

import pytest
from monitor_support import PARTITIONS, REPO_ROOT, config_dict, read_topic, wait_for, write_config

from monitor.cli import main
from monitor.resources import DEMO_CONFIG
from monitor.traffic import ANOMALY_KINDS, NORMAL, TRAFFIC_FIELDS, week_of_history
from monitor.transport import ensure_topics
from trainer.data import read_records


def test_generate_sends_keyed_stamped_traffic_with_anomalies(kafka_broker, tmp_path, capsys):
    servers = kafka_broker.bootstrap_servers
    raw = config_dict(servers)
    topic = raw["kafka"]["input_topic"] + "-generated"
    assert main(["generate", "--config", str(write_config(tmp_path, raw)), "--topic", topic, "--rate", "1000",
                 "--anomaly-rate", "0.3", "--count", "200"]) == 0
    out = capsys.readouterr().out
    assert f"generating 1000 events/s with 30.0% injected anomalies into {topic}" in out
    anomalies = int(out.split("events (")[1].split()[0])
    assert "generated 200 events" in out

    events = [json.loads(r.value) | {"_key": r.key} for r in read_topic(servers, topic, 200, idle_s=0.5)]
    assert len(events) == 200
    assert all(set(e) - {"_key"} == set(TRAFFIC_FIELDS) for e in events)
    assert all(e["_key"] == e["user"].encode() for e in events)
    assert all(datetime.fromisoformat(e["event_time"]).year >= 2026 for e in events)  # the send time
    labels = Counter(e["label"] for e in events)
    assert 200 - labels[NORMAL] == anomalies > 20
    assert set(labels) - {NORMAL} <= set(ANOMALY_KINDS)


def test_generate_runs_until_sigterm_and_exits_cleanly(kafka_broker, tmp_path):
    servers = kafka_broker.bootstrap_servers
    raw = config_dict(servers)
    topic = raw["kafka"]["input_topic"]
    # Created first: a reader asking for a missing topic may auto-create it with other partitions.
    ensure_topics(servers, {topic: PARTITIONS})
    generator = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "generate", "--config", str(write_config(tmp_path, raw)),
         "--rate", "200"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(read_topic(servers, topic, 20, timeout_s=1, idle_s=0)) >= 20, 30)
        generator.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
        out, err = generator.communicate(timeout=20)
    finally:
        generator.kill()
    assert generator.returncode == 0, err
    sent = int(out.split("generated ")[1].split()[0].replace(",", ""))
    assert sent >= 20
    assert len(read_topic(servers, topic, sent, idle_s=0.5)) == sent  # everything sent was delivered


def test_generate_history_is_the_week_the_demo_trains_on(tmp_path, capsys):
    out = tmp_path / "history.jsonl.gz"
    assert main(["generate", "--out", str(out), "--count", "500", "--anomaly-rate", "0"]) == 0
    assert f"wrote 500 events to {out}" in capsys.readouterr().out
    assert list(read_records(out)) == week_of_history(500)


def test_generate_history_trains_with_the_demo_config(tmp_path, monkeypatch, capsys):
    """What the compose `trainer` service does: generate a history, train on it with the packaged config."""
    data, config = tmp_path / "history.jsonl", tmp_path / "anomon.yaml"
    config.write_text(DEMO_CONFIG.read_text())  # what the image ships as /etc/anomon/anomon.yaml
    monkeypatch.setenv("ANOMON_MODEL_EPOCHS", "2")
    assert main(["generate", "--out", str(data), "--count", "2000", "--anomaly-rate", "0"]) == 0
    assert main(["train", "--config", str(config), "--data", str(data), "--out", str(tmp_path / "models"),
                 "--quiet"]) == 0
    assert (tmp_path / "models" / "CURRENT").is_file()


@pytest.mark.parametrize("args", [["--rate", "0"], ["--anomaly-rate", "1.5"], ["--count", "-3"], ["--rate", "x"]])
def test_generate_refuses_bad_arguments_with_a_usage_error(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *args])
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err
