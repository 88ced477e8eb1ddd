"""Paths and tools shared by the tests of deploy/ (tests/test_deploy_*.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import compose
from monitor_support import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"  # its Python wrapper always exits 0
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "anomon.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def tool(name: str) -> str:
    """A tool on PATH (promtool, amtool: `make test` installs them) or next to this Python (the wheels')."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is missing: `make test` installs it (apt-get install prometheus prometheus-alertmanager)"
    return found


def check(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done
