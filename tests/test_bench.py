"""The monitor benchmark runs end to end on a small input: its figures are for people to read
(`bench/` prints them, nothing asserts a speed), but it must keep working."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_monitor_benchmark_prints_throughput_latency_and_cpu():
    # The monitor's rate is read from its metrics every 0.1 s: 100,000 events last several reads.
    bench = subprocess.Popen(
        [sys.executable, "bench/monitor_throughput.py", "--events", "100000", "--repeats", "1", "--seconds", "2",
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
