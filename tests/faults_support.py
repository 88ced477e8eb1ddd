"""The fault-test harness: the real monitor in a subprocess that keeps a scoring journal, killed and
restarted at will; readers for the journal, the committed offsets and the metrics endpoint.

`MonitorProcess` runs what ``anomon monitor`` runs (`run_monitor`: config, metrics server, signal
handling, the kafka-python transport), with one addition: every batch it scores is appended to a
journal file, one line per partition (``run partition first last count``), by a single unbuffered
``write`` after scoring and before publishing.  A ``kill -9`` cannot tear a line, so after any
number of crashes the journal says which offsets each run scored: what an audit needs to prove
that every offset was scored at least once, and that every repeat came after a crash.

Each subprocess gets SIGKILL when the test process dies (parent-death signal), so a test killed by
its timeout leaves no monitor behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from monitor_support import REPO_ROOT
from prometheus_client.parser import text_string_to_metric_families

_PR_SET_PDEATHSIG = 1

# argv: config, model, journal, run number
JOURNALED_MONITOR = """
import os, sys
from monitor import pipeline
from monitor.service import run_monitor

journal = os.open(sys.argv[3], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
run = sys.argv[4]
score = pipeline.BatchScorer.process

def journaled(self, messages):
    result = score(self, messages)
    offsets = {}
    for m in messages:
        offsets.setdefault(m.partition, []).append(m.offset)
    os.write(journal, "".join(f"{run} {p} {o[0]} {o[-1]} {len(o)}\\n" for p, o in offsets.items()).encode())
    return result

pipeline.BatchScorer.process = journaled
sys.exit(run_monitor(sys.argv[1], sys.argv[2]))
"""


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when the test process dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """A Python subprocess in the repository root, stderr to `log`, killed if the test process dies."""
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                            stderr=log.open("a"), preexec_fn=die_with_parent, **kwargs)


def stop(process: subprocess.Popen, sig: int = signal.SIGKILL, timeout_s: float = 30) -> int:
    """Send `sig` (if still running) and wait; returns the exit status."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class MonitorProcess:
    """The real monitor in a subprocess, journaling what it scores (see the module docstring)."""

    config_path: Path
    model: Path
    workdir: Path
    runs: int = 0
    process: subprocess.Popen | None = None

    @property
    def journal(self) -> Path:
        return self.workdir / "journal.txt"

    @property
    def log(self) -> Path:
        return self.workdir / "monitor.log"

    def start(self) -> MonitorProcess:
        self.runs += 1
        with self.log.open("a") as log:
            log.write(f"--- run {self.runs}\n")
        self.process = spawn(["-c", JOURNALED_MONITOR, str(self.config_path), str(self.model), str(self.journal),
                              str(self.runs)], self.log)
        return self

    def kill(self) -> None:
        """``kill -9``: no flush, no commit, no goodbye to the group."""
        stop(self.process, signal.SIGKILL)

    def terminate(self) -> int:
        """SIGTERM: the clean stop; returns the exit status."""
        return stop(self.process, signal.SIGTERM)

    def connected(self) -> bool:
        """Whether the current run has connected to Kafka (its signal handlers are in place by then)."""
        return "connected to Kafka" in self.log.read_text().rsplit(f"--- run {self.runs}\n", 1)[-1]

    def scored_lines(self, run: int | None = None) -> int:
        """Journal lines written so far (by `run`, or by any)."""
        if not self.journal.exists():
            return 0
        lines = self.journal.read_text().splitlines()
        return sum(1 for line in lines if run is None or line.split(" ", 1)[0] == str(run))


@dataclass
class Journal:
    """What each run scored: ``scored[(partition, offset)]`` → the runs that scored it, in order."""

    scored: dict[tuple[int, int], list[int]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, path: Path) -> Journal:
        journal = cls()
        for line in path.read_text().splitlines():
            run, partition, first, last, count = map(int, line.split())
            assert last - first + 1 == count, f"a batch with a gap in its offsets: {line}"
            for offset in range(first, last + 1):
                journal.scored[(partition, offset)].append(run)
        return journal

    def repeats(self) -> Counter[int]:
        """How many offsets each run scored again (that an earlier run had scored)."""
        return Counter(runs[i] for runs in self.scored.values() for i in range(1, len(runs)))


def committed(servers: str, group: str) -> dict[int, int]:
    """The group's committed offsets per partition (none: empty)."""
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def delete_topics(servers: str, topics: list[str]) -> None:
    """Free the broker's memory after a long test (it keeps everything, with no retention)."""
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.delete_topics(topics)
    finally:
        admin.close()


def create_topics(servers: str, topics: dict[str, int], configs: dict[str, str] | None = None) -> None:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})
                             for name, partitions in topics.items()])
    finally:
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout_s: float = 2) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        return urllib.request.urlopen(url, timeout=timeout_s).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``/metrics`` of `url` as {(sample name, sorted labels): value}."""
    body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def wait_until(condition, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())

