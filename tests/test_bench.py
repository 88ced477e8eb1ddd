"""The monitor benchmark runs end to end on a small input: its figures are for people to read
(`bench/` prints them, nothing asserts a speed), but it must keep working."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_monitor_benchmark_prints_throughput_latency_and_cpu():
    # The monitor's rate is read from its metrics every 0.1 s: 40,000 events last a dozen reads or more.
    bench = subprocess.Popen(
        [sys.executable, "bench/monitor_throughput.py", "--events", "40000", "--repeats", "1", "--seconds", "2",
         "--linger-ms", "5"],
        cwd=ROOT, env={**os.environ, "ANOMON_MODEL_EPOCHS": "2"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        out, err = bench.communicate(timeout=240)
    finally:  # a bench stopped half-way must not leave its monitor process behind
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 0, err[-3000:]
    assert re.search(r"run 1: bare kafka-python poll \+ json.loads +[1-9]\d* events/s, "
                     r"anomon monitor end to end +[1-9]\d* events/s: \d\.\d\dx", out), out
    assert re.search(r"bare relay, [1-9]\d* alerts; CPU seconds during the run: broker \d+\.\d, relay \d+\.\d", out), out
    assert re.search(r"anomon monitor, [1-9]\d* alerts; CPU seconds during the run: broker \d+\.\d, monitor \d+\.\d",
                     out), out
    assert len(re.findall(r"produce→alert received  p50 +\d+\.\d ms  p99 +\d+\.\d ms", out)) == 2, out


def test_bench_suite_prints_every_figure_beside_its_baseline_and_writes_them(tmp_path):
    out = tmp_path / "results.json"
    bench = subprocess.Popen(
        [sys.executable, "bench/suite.py", "--events", "30000", "--score-events", "5000", "--repeats", "1",
         "--latency-seconds", "1", "--latency-rates", "1000", "--memory-events", "110000", "--skip-training",
         "--out", str(out)],
        cwd=ROOT, env={**os.environ, "ANOMON_MODEL_EPOCHS": "2"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        stdout, err = bench.communicate(timeout=280)
    finally:  # a bench stopped half-way must not leave its monitors behind
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 0, err[-3000:]
    results = json.loads(out.read_text())
    assert {"score_path", "end_to_end", "latency", "memory", "table"} <= set(results)
    whats = [row["what"] for row in results["table"]]
    for what in ("score path, 1% alerts", "score path, 20% alerts", "monitor end to end, kafka-python",
                 "monitor end to end, confluent", "produce→alert p50/p99 at 1k ev/s, kafka-python",
                 "produce→alert p50/p99 at 1k ev/s, confluent", "monitor RSS after 0.11M events"):
        assert what in whats, whats
        assert what in stdout
    assert all(row["baseline"] for row in results["table"])
    assert results["score_path"]["rates"]["0.2"]["alert_rate"] == 0.2


def test_the_retrain_calibration_benchmark_prints_both_calibrations():
    bench = subprocess.run([sys.executable, "bench/retrain_calibration.py", "--windows", "1", "--records", "2000"],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert re.search(r"window 0: held-out split \d+\.\d{3}% \(held-out split, [\d.]+ s\); "
                     r"cross-fitted \d+\.\d{3}% \(cross-fitted \(5 folds\), [\d.]+ s\)", bench.stdout), bench.stdout
    assert len(re.findall(r"false-alarm rate mean \d+\.\d{3}%", bench.stdout)) == 2, bench.stdout
