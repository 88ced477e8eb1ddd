"""The package as a user installs it: a plain wheel in a fresh virtual environment, run outside the tree.

The wheel is built from a copy of the sources (nothing is written into the checkout), installed with
the ``embedded`` extra into a new venv, pinned by the project's constraints.txt as ``make`` does
(torch comes from the wheel on disk), and then `anomon demo` and `anomon generate` run from a
directory that is not the source tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor_support import REPO_ROOT

WHEEL_INPUTS = ("pyproject.toml", "README.md", "trainer", "monitor")


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH and no working directory inside the checkout: only the installed package counts.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[Path]:
    """A fresh venv with the wheel and its ``embedded`` extra installed; yields its bin folder.

    Removed afterwards: with torch it takes about 1.5 GB, which pytest would keep for three runs.
    """
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in WHEEL_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    dist = root / "dist"
    # Build isolation, as a user's build: pyproject's setuptools>=68, not whatever this venv holds.
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, source, cwd=root)
    (wheel,) = dist.glob("anomon-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "-c", REPO_ROOT / "constraints.txt",
        f"{wheel}[embedded]", cwd=root)
    yield venv / "bin"
    shutil.rmtree(venv)


def test_the_wheel_ships_the_demo_config_as_package_data(installed):
    wheel = next((installed.parent.parent / "dist").glob("anomon-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "monitor/resources/demo.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "bench/", "deploy/"))]


def test_the_installed_package_is_not_the_source_tree(installed, tmp_path):
    out = run(installed / "python", "-c", "import monitor.resources as r; print(r.DEMO_CONFIG)", cwd=tmp_path).stdout
    assert Path(out.strip()).is_relative_to(installed.parent)
    assert not Path(out.strip()).is_relative_to(REPO_ROOT)


def test_demo_runs_from_a_wheel_outside_the_source_tree(installed, tmp_path):
    out = run(installed / "anomon", "demo", "--seconds", "20", "--rate", "200", cwd=tmp_path, timeout=240).stdout
    for expected in ("embedded Kafka broker at 127.0.0.1:", "trained in", "streaming 200 events/s", "ALERT",
                     "done:", "precision"):
        assert expected in out, out
    sent, scored = re.search(r"done: ([\d,]+) events sent, ([\d,]+) scored", out).groups()
    assert sent == scored != "0"
    assert (tmp_path / "demo-run" / "models" / "demo" / "CURRENT").is_file()  # the default workdir, here


def test_generate_writes_history_from_a_wheel(installed, tmp_path):
    out = run(installed / "anomon", "generate", "--out", "history.jsonl", "--count", "300", "--anomaly-rate", "0",
              cwd=tmp_path).stdout
    assert "wrote 300 events to history.jsonl" in out
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 300
