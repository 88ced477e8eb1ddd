"""The soak benchmark runs end to end on a short run: its figures (RSS and open descriptors over
5 minutes) are for people to read, `bench/soak.py` prints them, nothing asserts them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_soak_benchmark_prints_rss_and_descriptors():
    bench = subprocess.Popen([sys.executable, "bench/soak.py", "--seconds", "12", "--warmup-s", "4", "--sample-s", "2",
                              "--rate", "300"], cwd=ROOT, env={**os.environ, "ANOMON_MODEL_EPOCHS": "2"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = bench.communicate(timeout=240)
    finally:  # a bench stopped half-way must not leave its monitor behind
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 0, err[-3000:]
    assert re.search(r"soak: \d+ s at 300 events/s, [1-9]\d* sent, [1-9]\d* processed", out), out
    for name in ("RSS \\(MB\\)", "open fds", "threads"):
        assert re.search(rf"soak: {name} after 4 s warm-up: first [\d.]+, .* max/first \d\.\d{{3}}", out), out
