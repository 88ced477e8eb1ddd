"""`anomon replay` and `anomon demo`, end to end against the embedded broker."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime

from monitor_support import REPO_ROOT, config_dict, live_events, read_topic, wait_for, write_config

from monitor.cli import main
from monitor.demo import DEMO_CONFIG, RETRAIN_GRACE_S, RETRAINED_PHASE_S, _Demo
from monitor.traffic import TRAFFIC_FIELDS, TRAFFIC_KEY
from trainer.config import load_config


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_replay_sends_every_record_keyed_and_stamps_missing_event_times(kafka_broker, tmp_path, capsys, client_name):
    servers = kafka_broker.bootstrap_servers
    raw = config_dict(servers, client=client_name)
    topic = raw["kafka"]["input_topic"] + "-replay"
    events = live_events(30)
    for event in events[:10]:
        del event["event_time"]
    data = write_jsonl(tmp_path / "events.jsonl", events)

    before = time.time()
    assert main(["replay", "--config", str(write_config(tmp_path, raw)), "--data", str(data), "--topic", topic,
                 "--rate", "500"]) == 0
    assert "replayed 30 events" in capsys.readouterr().out

    records = read_topic(servers, topic, 30, idle_s=0.5)
    assert len(records) == 30
    originals = {json.dumps({**e, "event_time": None}, sort_keys=True): e for e in events}
    for record in records:
        event = json.loads(record.value)
        assert record.key == event["user"].encode()
        original = originals.pop(json.dumps({**event, "event_time": None}, sort_keys=True))
        if "event_time" in original:
            assert event["event_time"] == original["event_time"]
        else:  # stamped with the time it was sent
            assert datetime.fromisoformat(event["event_time"]).timestamp() >= before - 1
    assert not originals


def test_replay_loop_runs_until_interrupted(kafka_broker, tmp_path):
    servers = kafka_broker.bootstrap_servers
    raw = config_dict(servers)
    data = write_jsonl(tmp_path / "events.jsonl", live_events(20))
    replay = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "replay", "--config", str(write_config(tmp_path, raw)),
         "--data", str(data), "--rate", "200", "--loop"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        topic = raw["kafka"]["input_topic"]
        assert wait_for(lambda: len(read_topic(servers, topic, 50, timeout_s=1, idle_s=0)) >= 50, 30)
        replay.send_signal(signal.SIGINT)
        out, err = replay.communicate(timeout=20)
    finally:
        replay.kill()
    assert replay.returncode == 0, err
    assert out.startswith("replayed ") and int(out.split()[1]) >= 50


def test_the_demo_config_describes_the_generated_traffic():
    config = load_config(DEMO_CONFIG, environ={})
    assert {f.name: f.type for f in config.fields} == TRAFFIC_FIELDS
    assert config.key == TRAFFIC_KEY


def test_demo_runs_end_to_end_and_stops_by_itself(tmp_path):
    demo = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--seconds", "20", "--rate", "200", "--workdir",
         str(tmp_path / "demo")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    for expected in ("embedded Kafka broker at 127.0.0.1:", "trained in", "metrics: http://127.0.0.1:",
                     "streaming 200 events/s", "events/s | scored", "ALERT", "done:", "precision", "recall"):
        assert expected in out, out
    assert (tmp_path / "demo" / "models" / "demo" / "CURRENT").is_file()
    sent, scored = re.search(r"done: ([\d,]+) events sent, ([\d,]+) scored", out).groups()
    assert sent == scored != "0"  # drained before stopping


def test_the_demo_shows_drift_retraining_and_the_new_model_bringing_false_alarms_down(tmp_path):
    demo = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--seconds", "110", "--rate", "500", "--shift-after", "10",
         "--workdir", str(tmp_path / "demo")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    steps = ["SCRIPTED SHIFT", "DRIFT detected by adwin on latency_ms", "RETRAINING in a separate process",
             "NEW MODEL LIVE", "false-alarm rate (target 0.10%)"]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), out  # in this order
    rates = re.search(r"before the shift ([\d.]+)%, after the shift, old model ([\d.]+)%, "
                      r"with the retrained model ([\d.]+)%", out)
    assert rates, out
    before, shifted, retrained = map(float, rates.groups())
    assert shifted > 5 * max(before, 0.1) and retrained < shifted / 3, rates.group(0)
    assert len(list((tmp_path / "demo" / "models" / "demo" / "versions").iterdir())) == 2


class _Events:
    """Control events as the demo's topic watcher hands them over."""

    def __init__(self, *events: dict) -> None:
        self.events = list(events)

    def take(self) -> list[dict]:
        taken, self.events = self.events, []
        return taken


def test_the_demo_waits_for_a_running_retraining_then_streams_with_its_model(tmp_path, monkeypatch):
    demo = _Demo(seconds=60, rate=500, workdir=tmp_path, out=io.StringIO(), shift_after=10)
    demo.shifted.set()
    until = 1000.0
    assert demo.ends_at(until) == until
    demo.show_control(_Events({"type": "retrain_started", "from_offsets": {}, "to_offsets": {}}))
    assert demo.ends_at(until) == until + RETRAIN_GRACE_S  # bounded: a hung retraining ends the demo too
    monkeypatch.setattr(time, "monotonic", lambda: until - 2)
    demo.show_control(_Events({"type": "model_loaded", "model_version": "v2", "threshold": 5.0,
                               "previous_version": "v1"}))
    assert demo.ends_at(until) == until - 2 + RETRAINED_PHASE_S
    assert "with the retrained model" in demo.phases
    demo.show_control(_Events({"type": "retrain_finished", "returncode": 0}))
    assert demo.ends_at(until) == until - 2 + RETRAINED_PHASE_S


def test_the_demo_stops_waiting_for_a_retraining_that_failed(tmp_path):
    demo = _Demo(seconds=60, rate=500, workdir=tmp_path, out=io.StringIO(), shift_after=10)
    demo.shifted.set()
    demo.show_control(_Events({"type": "retrain_started", "from_offsets": {}, "to_offsets": {}},
                              {"type": "retrain_finished", "returncode": 1}))
    assert demo.ends_at(1000.0) == 1000.0
    assert "RETRAINING failed (1)" in demo.out.getvalue()
