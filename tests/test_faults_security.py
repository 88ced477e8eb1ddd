"""Security faults: bundles are data (no pickle, hashes before use, newer formats refused), secrets
never shown (config dump, every log line), metrics on loopback unless configured otherwise."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monitor_support import REPO_ROOT, config_dict, traffic_bundle, write_config

from monitor.metrics import MetricsServer
from monitor.service import kafka_security
from trainer.bundle import Bundle, BundleError, _sha256, resolve_version
from trainer.config import ConfigError, config_from_dict, effective_config, load_config
from trainer.secrets import Secret

SOURCES = ["trainer", "monitor", "bench", "examples", "tests", "deploy"]
PICKLE = "pick" + "le"  # spelled in two so that this file does not match its own scan


def python_sources() -> list[Path]:
    return sorted(p for folder in SOURCES if (REPO_ROOT / folder).is_dir() for p in (REPO_ROOT / folder).rglob("*.py"))


# -- bundles are data -------------------------------------------------------------


def test_no_pickle_anywhere_and_every_torch_load_is_weights_only():
    """Code that could deserialise code: pickle and its kin, torch.load without weights_only, yaml.load."""
    forbidden = [
        (re.compile(rf"\bimport (c?{PICKLE}|dill|shelve|marshal)\b|\bfrom (c?{PICKLE}|dill|shelve|marshal) import"),
         "imports a pickle-like module"),
        (re.compile(rf"\b{PICKLE}\.(loads?|Unpickler)\b"), "unpickles"),
        (re.compile(r"allow_" + PICKLE + r"\s*=\s*True"), "loads numpy pickles"),
        (re.compile(r"\bjoblib\.load\b"), "loads a joblib pickle"),
        (re.compile(r"\byaml\.(load|unsafe_load|full_load)\("), "loads YAML that can build objects"),
    ]
    problems, torch_loads = [], 0
    for path in python_sources():
        text = path.read_text()
        for pattern, why in forbidden:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line} {why}: {match.group(0)}")
        for match in re.finditer(r"\btorch\.load\(", text):
            torch_loads += 1
            if "weights_only=True" not in call_arguments(text, match.end()):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line} torch.load without weights_only=True")
    assert not problems, "\n".join(problems)
    assert torch_loads >= 1  # the scan does see the bundle's loader


def call_arguments(text: str, start: int) -> str:
    """The text of a call's arguments, from just after its opening parenthesis to the matching one."""
    depth = 1
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
    return text[start:]


@pytest.fixture()
def saved(tmp_path):
    """A copy of the session's bundle (a version directory), free to tamper with."""
    return Path(shutil.copytree(traffic_bundle().path, tmp_path / "version"))


def rewrite(version: Path, name: str, data: bytes, *, update_manifest: bool) -> None:
    """Replace a bundle file; with `update_manifest` also its sha256, as an attacker with write access would."""
    (version / name).write_bytes(data)
    if update_manifest:
        manifest = json.loads((version / "manifest.json").read_text())
        manifest["files"][name] = _sha256(data)
        (version / "manifest.json").write_text(json.dumps(manifest))


def test_weights_that_would_run_code_are_refused_even_with_a_matching_hash(saved, tmp_path):
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = io.BytesIO()
    torch.save({"layers": [16, 4, 16], "state_dict": RunsCode()}, payload)  # a pickle that calls os.system
    rewrite(resolve_version(saved), "weights.pt", payload.getvalue(), update_manifest=True)
    with pytest.raises(BundleError, match="weights.pt is not a plain state dict"):
        Bundle.load(saved)
    assert not marker.exists()


def test_each_file_is_verified_before_any_of_its_bytes_is_parsed(saved):
    version = resolve_version(saved)
    rewrite(version, "encoder.json", b"{not json at all", update_manifest=False)
    with pytest.raises(BundleError, match="encoder.json does not match its sha256"):  # not "is not valid JSON"
        Bundle.load(saved)


def test_the_bytes_parsed_are_the_bytes_verified(saved, monkeypatch):
    """A file swapped between the hash check and its use changes nothing: each file is read once."""
    version = resolve_version(saved)
    reads: list[str] = []
    read_bytes = Path.read_bytes

    def counting(path: Path) -> bytes:
        reads.append(path.name)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    Bundle.load(version)
    assert sorted(reads) == sorted(["manifest.json", "config.json", "encoder.json", "threshold.json", "weights.pt"])


@pytest.mark.parametrize("format_version, message", [
    (2, "format version 2, newer than the 1 this anomon reads: upgrade anomon"),
    ("1", "format version '1', this anomon reads 1"),
    (None, "format version None"),
])
def test_other_format_versions_are_refused(saved, format_version, message):
    path = resolve_version(saved) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = format_version
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=re.escape(message)):
        Bundle.load(saved)


# -- secrets ----------------------------------------------------------------------

SASL = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "monitor"}
FIELDS = {"fields": {"x": "numeric"}}


def test_the_password_comes_from_a_file_and_is_handed_to_the_client_only(tmp_path):
    secret_file = tmp_path / "password"
    secret_file.write_text("correct horse battery staple\n")
    config = config_from_dict({**FIELDS, "kafka": {**SASL, "sasl_plain_password_file": str(secret_file),
                                                   "ssl_cafile": "/etc/ca.pem"}}, environ={})
    assert kafka_security(config.kafka) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "monitor",
        "sasl_plain_password": "correct horse battery staple", "ssl_cafile": "/etc/ca.pem"}
    shown = [repr(config), str(config.kafka), json.dumps(effective_config(config))]
    assert not [text for text in shown if "battery" in text]
    assert effective_config(config)["kafka"]["sasl_plain_password"] == "***"
    assert config.secrets() == ["correct horse battery staple"]


@pytest.mark.parametrize("kafka, environ, message", [
    ({**SASL}, {}, "'kafka.security_protocol' SASL_SSL needs 'kafka.sasl_plain_password' "
                   "(or kafka.sasl_plain_password_file)"),
    ({**SASL, "sasl_plain_password": "a", "sasl_plain_password_file": "/p"}, {}, "are both set"),
    ({**SASL, "sasl_plain_password_file": "/nonexistent/password"}, {},
     "cannot read 'kafka.sasl_plain_password_file' /nonexistent/password: No such file or directory"),
    ({"sasl_mechanism": "PLAIN"}, {}, "'kafka.sasl_mechanism' is set but 'kafka.security_protocol' is PLAINTEXT"),
    ({"ssl_cafile": "/ca.pem"}, {}, "'kafka.ssl_cafile' is set but 'kafka.security_protocol' is PLAINTEXT"),
    ({**SASL, "sasl_mechanism": "GSSAPI"}, {}, "'kafka.sasl_mechanism' must be one of PLAIN, SCRAM-SHA-256"),
    ({**SASL, "sasl_plain_password": 1234}, {}, "'kafka.sasl_plain_password' must be str, got int"),
    ({}, {"ANOMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAIN"}, "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
])
def test_security_settings_are_checked_as_a_whole(kafka, environ, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict({**FIELDS, "kafka": kafka}, environ=environ)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "1234" not in str(info.value)


def test_the_password_may_come_from_the_environment():
    config = config_from_dict({**FIELDS, "kafka": SASL}, environ={"ANOMON_KAFKA_SASL_PLAIN_PASSWORD": "hunter2"})
    assert config.kafka.sasl_plain_password == Secret("hunter2")
    assert "hunter2" not in repr(config)


# Runs `run_monitor` (what `anomon monitor` runs) at DEBUG, so that kafka-python logs everything it
# has, its configuration included: the broker speaks no SASL, so the monitor retries to connect.
MONITOR_AT_DEBUG = """
import sys
from monitor.service import run_monitor
sys.exit(run_monitor(sys.argv[1], sys.argv[2], log_level="DEBUG"))
"""


def test_no_log_line_shows_a_secret(kafka_broker, tmp_path):
    password = "s3cr3t-Zebra-9f8e7d"
    (tmp_path / "password").write_text(password + "\n")
    raw = config_dict(kafka_broker.bootstrap_servers)
    raw["kafka"].update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_plain_username="monitor",
                        sasl_plain_password_file=str(tmp_path / "password"))
    config_path = write_config(tmp_path, raw)
    assert load_config(config_path).kafka.sasl_plain_password.reveal() == password
    log = tmp_path / "monitor.log"
    monitor = subprocess.Popen([sys.executable, "-c", MONITOR_AT_DEBUG, str(config_path), str(traffic_bundle().path)],
                               cwd=REPO_ROOT, stderr=log.open("w"))
    try:
        deadline = time.monotonic() + 60
        while (time.monotonic() < deadline and monitor.poll() is None
               and "cannot connect to Kafka" not in log.read_text()):
            time.sleep(0.2)
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=30) == 0
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait()
    text = log.read_text()
    assert "cannot connect to Kafka" in text, text[-3000:]
    assert password not in text and "Zebra" not in text
    # The lines that would show it do show up, redacted: the effective config and the client's own dump.
    effective = json.loads(re.search(r"effective config: (\{.*\})", text).group(1))
    assert effective["kafka"]["sasl_plain_password"] == "***"
    assert effective["kafka"]["sasl_plain_password_file"] == str(tmp_path / "password")
    assert re.search(r"Starting KafkaAdminClient with configuration: .*'sasl_plain_password': '\*\*\*'", text)


def test_ssl_password_needs_ssl():
    with pytest.raises(ConfigError, match="'kafka.ssl_password' is set but"):
        config_from_dict({**FIELDS, "kafka": {"ssl_password": "x"}}, environ={})


# -- metrics address ----------------------------------------------------------------


def test_metrics_listen_on_loopback_unless_configured_otherwise():
    assert config_from_dict(FIELDS, environ={}).metrics.host == "127.0.0.1"
    assert config_from_dict(FIELDS, environ={"ANOMON_METRICS_HOST": "0.0.0.0"}).metrics.host == "0.0.0.0"
    from prometheus_client import CollectorRegistry

    with MetricsServer(CollectorRegistry(), port=0) as server:
        assert server._server.server_address[0] == "127.0.0.1"
