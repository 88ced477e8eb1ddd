"""Retraining from the topic after a shift, against the embedded broker; the automatic trigger.

The topic holds normal traffic, then the same traffic with latency_ms shifted up by two standard
deviations of its encoded value.  Offsets windows select the shifted part (the embedded broker
answers offsets_for_times with the current time, so time windows are for real Kafka).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monitor_support import config_dict, encode, produce, read_topic, running, traffic_bundle, wait_for, write_config
from test_drift import SHIFT, shifted_latency, traffic
from test_lifecycle import saved_copy

from monitor.cli import main
from monitor.retrain import AutoRetrainer, RetrainError, Window, retrain, retraining_config
from monitor.service import Monitor
from monitor.transport import ensure_topics
from trainer.bundle import Bundle
from trainer.config import config_from_dict

PARTITIONS = 2
TOTAL = 60_000  # events 0..SHIFT-1 normal, SHIFT.. shifted; event i at partition i % 2, offset i // 2
PER_HOUR = 150  # so that the 30,000 shifted events cover 8 days: every hour of every weekday


def slow_traffic(n: int) -> list[dict]:
    return traffic(n, events_per_hour=PER_HOUR)


def false_alarm_rate(bundle: Bundle, events: list[dict]) -> float:
    return float(np.mean(bundle.score(events, strict=True).scores >= bundle.threshold.value))


@pytest.fixture(scope="module")
def shifted_topic(kafka_broker) -> dict:
    raw = config_dict(kafka_broker.bootstrap_servers)
    raw["retrain"] = {"min_records": 5000, "keep_versions": 3}
    events = shifted_latency(slow_traffic(TOTAL))

    ensure_topics(kafka_broker.bootstrap_servers, {raw["kafka"]["input_topic"]: PARTITIONS})
    produce(kafka_broker.bootstrap_servers, raw["kafka"]["input_topic"], encode(events), partitions=PARTITIONS)
    return raw


def test_retraining_after_a_shift_brings_the_false_alarm_rate_back(shifted_topic, tmp_path):
    config = config_from_dict(shifted_topic, environ={})
    model_dir = tmp_path / "models"
    old = saved_copy(traffic_bundle(), model_dir)
    window = Window(start={p: SHIFT // PARTITIONS for p in range(PARTITIONS)},
                    end={p: TOTAL // PARTITIONS for p in range(PARTITIONS)})
    new = retrain(config, model_dir, window, ignore_fields=["latency_ms"], verbose=False)
    assert Bundle.load(model_dir).version == new.version != old.version
    counts = new.training["retrained_from"]["counts"]
    assert counts["read"] == TOTAL - SHIFT and counts["kept"] >= 0.9 * counts["read"]
    # Fewer kept records than retrain.cross_fit_below (50,000): calibrated on out-of-fold scores of all.
    assert new.training["calibration"] == "cross-fitted (5 folds)"
    assert new.training["split"]["calibration"] == counts["kept"]
    # Fresh post-shift normal traffic, never in the topic: a later stretch of the same site.
    later = shifted_latency(slow_traffic(TOTAL + 20_000))[TOTAL:]
    target = config.threshold.target_rate
    old_rate, new_rate = false_alarm_rate(old, later), false_alarm_rate(new, later)
    print(f"\nfalse-alarm rate on post-shift normal traffic (target {target:.2%}): "
          f"old version {old_rate:.2%}, retrained version {new_rate:.2%}")
    # Cross-fitted in stretches of time: with random folds (each record's neighbours minutes away
    # in the training folds) this was 1.77%.
    assert new_rate <= target
    assert old_rate >= 5 * target


def test_retraining_cross_fits_below_its_own_limit_and_never_lowers_the_models():
    config = config_from_dict({"fields": {"x": "numeric"}, "retrain": {"cross_fit_below": 40_000}}, environ={})
    assert retraining_config(config).model.cross_fit_below == 40_000
    assert config.model.cross_fit_below == 1000  # anomon train's own setting is left as it was
    larger = config_from_dict({"fields": {"x": "numeric"}, "model": {"cross_fit_below": 90_000},
                               "retrain": {"cross_fit_below": 40_000}}, environ={})
    assert retraining_config(larger).model.cross_fit_below == 90_000


def test_retrain_refuses_a_window_with_too_few_records(shifted_topic, tmp_path):
    config = config_from_dict(shifted_topic, environ={})
    saved_copy(traffic_bundle(), tmp_path)
    window = Window(start={0: 0, 1: 0}, end={0: 1000, 1: 1000})
    with pytest.raises(RetrainError, match="fewer than retrain.min_records"):
        retrain(config, tmp_path, window, verbose=False)
    with pytest.raises(RetrainError, match="--ignore-field nope"):
        retrain(config, tmp_path, window, ignore_fields=["nope"], verbose=False)


def test_the_retrain_command_reads_an_offset_window(shifted_topic, client_name, tmp_path, capsys):
    path = write_config(tmp_path, {**shifted_topic, "kafka": {**shifted_topic["kafka"], "client": client_name}})
    old = saved_copy(traffic_bundle(), tmp_path / "models")
    status = main(["retrain", "--config", str(path), "--model-dir", str(tmp_path / "models"), "--quiet",
                   "--from-offset", f"0:{SHIFT // 2}", "--from-offset", f"1:{SHIFT // 2}",
                   "--to-offset", "0:20000", "--to-offset", "1:20000", "--ignore-field", "latency_ms"])
    assert status == 0
    current = Bundle.load(tmp_path / "models")
    assert current.version != old.version and f"CURRENT is {current.version}" in capsys.readouterr().out
    assert current.training["retrained_from"]["counts"]["read"] == 2 * (20_000 - SHIFT // 2)
    assert main(["retrain", "--config", str(path), "--model-dir", str(tmp_path / "models"),
                 "--from-offset", "zero"]) == 1


class FakeProcess:
    pid, returncode = 4242, 0

    def poll(self) -> int:
        return 0


def test_a_confirmed_drift_starts_one_retraining_in_a_separate_process(kafka_broker, tmp_path):
    raw = config_dict(kafka_broker.bootstrap_servers, partitions=1)
    raw["retrain"] = {"mode": "auto", "min_records": 4000, "cooldown_s": 3600}
    config = config_from_dict(raw, environ={})
    path = write_config(tmp_path, raw)
    launched: list[list[str]] = []
    monitor = Monitor(config, saved_copy(traffic_bundle(), tmp_path / "models"))
    retrainer = AutoRetrainer(config, path, tmp_path / "models", monitor,
                              launch=lambda args: launched.append(args) or FakeProcess())
    monitor.observers.append(retrainer)
    events = shifted_latency(traffic(TOTAL))
    with running(monitor, partitions=1):
        produce(kafka_broker.bootstrap_servers, config.kafka.input_topic, encode(events), partitions=1)
        assert wait_for(lambda: monitor.totals["events"] == len(events), 300), monitor.totals
    assert len(launched) == 1, launched  # one drift (two streams), one retraining, then the cool-down
    args = launched[0]
    assert args[1:4] == ["-m", "monitor.cli", "retrain"] and "--ignore-field=latency_ms" in args
    start = int(next(a for a in args if a.startswith("--from-offset=")).split(":")[1])
    end = int(next(a for a in args if a.startswith("--to-offset=")).split(":")[1])
    assert SHIFT < start < SHIFT + 15_000 and end - start >= 4000
    control = [json.loads(r.value) for r in read_topic(kafka_broker.bootstrap_servers, config.kafka.control_topic,
                                                         3, partitions=1)]
    assert [c["type"] for c in control if c["type"].startswith("retrain")] == ["retrain_started", "retrain_finished"]


def test_saved_copy_does_not_touch_the_shared_bundle(tmp_path: Path):
    before = traffic_bundle().version
    saved_copy(traffic_bundle(), tmp_path)
    assert traffic_bundle().version == before
