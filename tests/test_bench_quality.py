"""The detection-quality benchmark runs end to end on two small sets and writes its JSON; the
figures are for people to read (nothing asserts a quality level here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quality_benchmark_prints_a_row_per_set_and_writes_json(tmp_path):
    out = tmp_path / "quality.json"
    run = subprocess.run([sys.executable, "bench/quality.py", "--sets", "glass,Stamps", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("glass", "Stamps"):
        assert re.search(rf"^{name} +\d+ +\d+ +\d+ +0\.\d{{3}} .* (win|LOSS|FAIL) ", run.stdout, re.M), run.stdout
    assert re.search(r"mean ROC-AUC over 2 benchmark sets: anomon 0\.\d{4}, IForest 0\.\d{4}, HST 0\.\d{4}", run.stdout)
    result = json.loads(out.read_text())
    assert [row["set"] for row in result["sets"]] == ["glass", "Stamps"]
    glass = result["sets"][0]
    # The README's split and baselines, reproduced: IsolationForest 0.816 and HST 0.696 on glass.
    assert (glass["n_train"], glass["n_test"]) == (123, 91)
    assert round(glass["iforest"]["roc_auc"], 3) == 0.816 and round(glass["hst"]["roc_auc"], 3) == 0.696
