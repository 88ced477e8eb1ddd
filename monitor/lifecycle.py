"""Model versions on disk and in a running monitor: watch CURRENT, swap, refuse, prune, roll back.

A model directory holds ``versions/<version>/`` (names start with the UTC creation time, so
sorting them sorts by age) and ``CURRENT``, the version in use (`trainer.bundle.set_current`
switches it atomically).

`ModelWatcher` runs beside a monitor: it reads CURRENT every `interval_s`, and when it names
another version than the one scoring, loads it in the watcher's own thread (hashes verified,
fields checked) and hands it to `Monitor.swap_model`, which takes it up between two batches.
Scoring never waits for a load.  A version that fails verification is refused: the monitor keeps
the model it has, ``anomon_model_reloads_total{result="refused"}`` counts it, and an error event
goes to the control topic::

    {"type": "model_refused", "model_version": "...", "active_version": "...", "error": "...", "at": "..."}

`rollback` points CURRENT back at an earlier version (the one before CURRENT unless told), after
checking that it loads; running monitors follow it like any other change of CURRENT.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from monitor.alerts import iso_time
from monitor.service import Monitor, MonitorError
from trainer.bundle import Bundle, BundleError, set_current
from trainer.errors import AnomonError

log = logging.getLogger(__name__)


class LifecycleError(AnomonError):
    """A rollback or prune that cannot be done (no such version, nothing earlier)."""


def current_version(model_dir: str | Path) -> str | None:
    """The version CURRENT names, or None without a CURRENT."""
    try:
        return (Path(model_dir) / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def list_versions(model_dir: str | Path) -> list[str]:
    """The versions on disk, oldest first."""
    root = Path(model_dir) / "versions"
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []


def prune_versions(model_dir: str | Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions (never CURRENT); returns the versions deleted."""
    current = current_version(model_dir)
    versions = list_versions(model_dir)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for version in doomed:
        shutil.rmtree(Path(model_dir) / "versions" / version)
    if doomed:
        log.info("pruned %d old model versions: %s", len(doomed), ", ".join(doomed))
    return doomed


def rollback(model_dir: str | Path, to: str | None = None) -> str:
    """Point CURRENT at version `to` (default: the newest version older than CURRENT); returns it.

    The version must load (hashes verified) before CURRENT moves.
    """
    versions = list_versions(model_dir)
    current = current_version(model_dir)
    if to is None:
        earlier = [v for v in versions if current is None or v < current]
        if not earlier:
            raise LifecycleError(f"rollback: no version older than {current} in {model_dir}")
        to = earlier[-1]
    elif to not in versions:
        raise LifecycleError(f"rollback: {model_dir} has no version {to} (it has {', '.join(versions) or 'none'})")
    Bundle.load(Path(model_dir) / "versions" / to)  # refuses a tampered version before anything changes
    set_current(model_dir, to)
    log.info("rollback: CURRENT %s → %s", current, to)
    return to


class ModelWatcher(threading.Thread):
    """Follows ``model_dir/CURRENT`` for `monitor` (see the module docstring); `stop` ends it."""

    def __init__(self, model_dir: str | Path, monitor: Monitor, interval_s: float = 1.0) -> None:
        super().__init__(name="anomon-model-watcher", daemon=True)
        self.model_dir = Path(model_dir)
        self.monitor = monitor
        self.interval_s = interval_s
        self._stop_event = threading.Event()
        self._seen = monitor.bundle.version  # the last version acted on: loaded or refused

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.check()

    def check(self) -> None:
        """Act on CURRENT once: load and hand over a new version, or refuse it."""
        version = current_version(self.model_dir)
        if version is None or version == self._seen:
            return
        self._seen = version
        metrics = self.monitor.metrics
        try:
            bundle = Bundle.load(self.model_dir / "versions" / version)
            if bundle.version != version:
                raise BundleError(f"bundle: {version} holds the manifest of version {bundle.version}")
            self.monitor.swap_model(bundle)
        except (BundleError, MonitorError, OSError) as exc:
            metrics.model_reloads.labels("refused").inc()
            active = self.monitor.bundle.version
            log.error("model %s refused, %s stays in use: %s", version, active, exc)
            self.monitor.emit({"type": "model_refused", "model_version": version, "active_version": active,
                               "error": str(exc), "at": iso_time(self.monitor.clock())})
            return
        metrics.model_reloads.labels("loaded").inc()
        log.info("model %s loaded from %s; the monitor takes it up before its next batch", version, self.model_dir)
