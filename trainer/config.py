"""The one YAML configuration file (`anomon.yaml`): schema, model, threshold, Kafka and metrics.

Every section is a frozen dataclass; `load_config` validates the mapping against the dataclass
types and reports the first problem as one line naming the key, e.g.
``config: unknown key 'kafka.bootsrap_servers'``.  Scalar settings can be overridden by
environment variables named ``ANOMON_<SECTION>_<KEY>`` (``ANOMON_KAFKA_BOOTSTRAP_SERVERS``).

Kafka security (``kafka.security_protocol`` PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL
mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; SSL certificates) is checked as a whole.
Passwords are `Secret` values: from the file, from ``ANOMON_KAFKA_SASL_PLAIN_PASSWORD``, or read
from the file named by ``kafka.sasl_plain_password_file`` (likewise ``kafka.ssl_password_file``
for the private key).  `effective_config` is the config as a mapping with every secret shown as
``***``; `Config.secrets` lists the values for `trainer.secrets.RedactingFormatter`.

>>> cfg = config_from_dict({"fields": {"bytes": "numeric", "proto": "categorical"}})
>>> [f.type for f in cfg.fields]
['numeric', 'categorical']
>>> cfg.threshold.method
'quantile'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from trainer.errors import AnomonError
from trainer.secrets import REDACTED, Secret

FIELD_TYPES = ("numeric", "categorical", "boolean", "vector", "timestamp", "ignore")


class ConfigError(AnomonError):
    """A configuration problem, worded as one line that names the offending key."""


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """How one event field is read and encoded."""

    name: str
    type: str
    required: bool = False
    size: int | None = None  # vector length
    cyclic: bool = True  # timestamp: hour-of-day and day-of-week features
    log: bool | None = None  # numeric: signed log1p before scaling; None = yes, the distance scale from the data
    max_categories: int | None = None  # categorical: override of encoding.max_categories
    min_count: int | None = None  # categorical: override of encoding.min_count


@dataclasses.dataclass(frozen=True)
class EncodingConfig:
    max_categories: int = 100
    min_count: int = 2


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    layers: list[int] | None = None  # hidden sizes; None = sized from the input width
    activation: Literal["tanh", "relu", "sigmoid", "elu", "gelu"] = "tanh"
    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 0.002
    weight_decay: float = 0.0
    patience: int = 5
    min_improvement: float = 0.005  # relative validation-loss gain that resets early stopping
    holdout_fraction: float = 0.2
    seed: int = 0
    neighbours: int = 5  # k of the neighbour-distance score component (trainer.neighbours); 0 = off
    cross_fit_below: int = 1000  # fewer records: calibrate on out-of-fold scores instead of a held-out split
    folds: int = 5  # folds of that cross-fitting
    # Past this many records a uniform sample is trained on: the matrix of a million records and the
    # model's copies of it fit in well under 2 GB, and more records barely change the model.
    max_records: int | None = 1_000_000


@dataclasses.dataclass(frozen=True)
class ThresholdConfig:
    method: Literal["quantile", "max", "evt"] = "quantile"
    target_rate: float = 0.001
    margin: float = 0.0
    tail_fraction: float = 0.1  # evt: share of calibration scores used to fit the tail


@dataclasses.dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: str = "anomon.events"
    alert_topic: str = "anomon.alerts"
    dead_letter_topic: str = "anomon.dead-letter"
    control_topic: str = "anomon.control"  # drift events, model reloads and refusals (JSON)
    group_id: str = "anomon"
    client_id: str = "anomon"
    partitions: int = 4
    client: Literal["kafka-python", "confluent"] = "kafka-python"  # confluent: pip install 'anomon[confluent]'
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: Secret | None = None
    sasl_plain_password_file: str | None = None  # read at load time into sasl_plain_password
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: Secret | None = None  # of ssl_keyfile
    ssl_password_file: str | None = None  # read at load time into ssl_password
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000

    def client_security(self) -> dict[str, Any]:
        """The security settings as kafka-python keyword arguments, secrets revealed: for the client only.

        Settings left unset are left out (kafka-python's defaults apply), and so is everything
        about SSL or SASL when the protocol does not use it.
        """
        settings: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            settings.update(ssl_cafile=self.ssl_cafile, ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
                            ssl_password=self.ssl_password)
        if self.security_protocol.startswith("SASL_"):
            settings.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_plain_username,
                            sasl_plain_password=self.sasl_plain_password)
        return {name: value.reveal() if isinstance(value, Secret) else value
                for name, value in settings.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    # Per-batch costs (numpy and torch calls, commit) shared by more events: 5000 gave 0.82x the bare
    # kafka-python loop in bench/monitor_throughput.py, 2000 gave 0.66-0.69x.  Batches only fill up
    # when the monitor is behind; at the head of the topic they hold what arrived during one poll.
    max_batch_records: int = 5000
    # Also the consumer's fetch_max_wait_ms. Kafka answers a waiting fetch as soon as records come;
    # the embedded broker holds one that found nothing for the whole wait, so on it a shorter wait
    # is lower latency: 20 gave p99 32-37 ms where 50 gave 46 ms (bench, batching producer).
    max_wait_ms: int = 20
    max_message_bytes: int = 1_000_000
    top_contributions: int = 5
    # An unreadable value ("lots" for a number): scored as missing and listed in the alert, or
    # the whole event dead-lettered as wrong_type.
    invalid_values: Literal["score", "dead_letter"] = "score"
    # Checked on an event's bytes before decoding (monitor.limits): deeper or longer is oversized.
    max_nesting_depth: int = 16  # of a field's value: [1, 2] is 1, [[1]] is 2
    max_array_length: int = 10_000  # elements of any array (a vector field's size must fit)


DRIFT_DETECTORS = ("adwin", "kswin", "page_hinkley")
DriftDetector = Literal["adwin", "kswin", "page_hinkley"]


@dataclasses.dataclass(frozen=True)
class DriftFieldConfig:
    """Drift settings of one stream (a field, or the score); None takes the ``drift`` section's value."""

    enabled: bool = True
    detector: DriftDetector | None = None
    params: dict[str, int | float | str] | None = None  # River constructor arguments
    window: int | None = None


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """Drift detection in the monitor (see `monitor.drift`).

    Every stream is fed window aggregates of `window` events; `params` are passed to the River
    detector (River's defaults otherwise).  A detection counts only when the aggregate moved by
    at least `min_shift` standard deviations (z-score streams), `min_rate_shift` (the unseen/rare
    share) or `min_divergence_shift` bits (Jensen-Shannon divergence): small, statistically
    significant wobbles are not drift.  After a detection the stream's detector starts afresh
    and stays silent for `cooldown_windows` windows.
    """

    enabled: bool = True
    detector: DriftDetector = "adwin"
    params: dict[str, int | float | str] = dataclasses.field(default_factory=dict)
    window: int = 200
    min_shift: float = 0.5
    min_rate_shift: float = 0.02
    min_divergence_shift: float = 0.02
    cooldown_windows: int = 50
    score: DriftFieldConfig = DriftFieldConfig()
    fields: dict[str, DriftFieldConfig] = dataclasses.field(default_factory=dict)

    def stream(self, name: str | None) -> tuple[bool, str, dict[str, int | float | str], int]:
        """(enabled, detector, params, window) of a field's stream, or of the score's with None."""
        own = self.score if name is None else self.fields.get(name, DriftFieldConfig())
        return (self.enabled and own.enabled, own.detector or self.detector,
                dict(self.params if own.params is None else own.params), own.window or self.window)


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """``manual``: `anomon retrain` only; ``auto``: a confirmed drift retrains in a separate process."""

    mode: Literal["manual", "auto"] = "manual"
    min_records: int = 20_000  # records after the drift to train on
    # Fewer kept records: calibrate on out-of-fold scores of all of them rather than a 10% split.
    # At the default target rate of 0.001, 10% of 20,000 records expect 2 scores above the
    # threshold, too few to place it: on 10,000-event windows of demo traffic the held-out split
    # gave false-alarm rates of 0.01-0.72% (mean 0.34%), cross-fitting 0.00-0.10% (mean 0.05%).
    cross_fit_below: int = 50_000
    cooldown_s: float = 3600.0  # at least this long between automatic retrainings
    keep_versions: int = 5  # versions kept under models/NAME/versions (CURRENT always is)


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9108


@dataclasses.dataclass(frozen=True)
class Config:
    fields: tuple[FieldSpec, ...]
    key: str | None = None
    encoding: EncodingConfig = EncodingConfig()
    model: ModelConfig = ModelConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    kafka: KafkaConfig = KafkaConfig()
    monitor: MonitorConfig = MonitorConfig()
    metrics: MetricsConfig = MetricsConfig()
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()

    def secrets(self) -> list[str]:
        """The values of every secret setting, for log redaction."""
        k = self.kafka
        return [s.reveal() for s in (k.sasl_plain_password, k.ssl_password) if s is not None]

    @property
    def timestamp_field(self) -> str | None:
        """The event-time field: the first field of type `timestamp`."""
        return next((f.name for f in self.fields if f.type == "timestamp"), None)

    def schema_dict(self) -> dict[str, Any]:
        """The part of the config that defines a model bundle (fields, encoding, model, threshold)."""
        return {
            "fields": {f.name: _drop_defaults(f) for f in self.fields},
            "key": self.key,
            "encoding": dataclasses.asdict(self.encoding),
            "model": dataclasses.asdict(self.model),
            "threshold": dataclasses.asdict(self.threshold),
        }

    def schema_hash(self) -> str:
        """sha256 of `schema_dict` and the field order (it fixes the encoded columns), for the manifest."""
        schema = {**self.schema_dict(), "field_order": [f.name for f in self.fields]}
        canonical = json.dumps(schema, sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()


_SECTIONS = {
    "encoding": EncodingConfig,
    "model": ModelConfig,
    "threshold": ThresholdConfig,
    "kafka": KafkaConfig,
    "monitor": MonitorConfig,
    "metrics": MetricsConfig,
    "drift": DriftConfig,
    "retrain": RetrainConfig,
}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and return the YAML config at `path` (env overrides from `environ`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config: {path} is not valid YAML{where}") from None
    return config_from_dict(raw, environ=environ)


def config_from_dict(raw: Any, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed config mapping; see `load_config`."""
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping with a 'fields' key")
    unknown = set(raw) - {"fields", "key", *_SECTIONS}
    if unknown:
        raise ConfigError(f"config: unknown key '{sorted(unknown)[0]}'")
    fields = _parse_fields(raw.get("fields"))
    key = raw.get("key")
    if key is not None and key not in {f.name for f in fields}:
        raise ConfigError(f"config: 'key' names field '{key}', which is not in 'fields'")
    environ = os.environ if environ is None else environ
    sections = {
        name: _build_section(cls, raw.get(name) or {}, name, environ)
        for name, cls in _SECTIONS.items()
    }
    sections["kafka"] = _read_secret_files(sections["kafka"])
    config = Config(fields=fields, key=key, **sections)
    _check_ranges(config)
    _check_security(config.kafka)
    return config


def effective_config(config: Config) -> dict[str, Any]:
    """The config as a plain mapping, defaults and overrides applied, every secret as ``***``.

    >>> cfg = config_from_dict({"fields": {"x": "numeric"}, "kafka": {"security_protocol": "SASL_SSL",
    ...     "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "monitor"}},
    ...     environ={"ANOMON_KAFKA_SASL_PLAIN_PASSWORD": "hunter2"})
    >>> effective_config(cfg)["kafka"]["sasl_plain_password"], "hunter2" in json.dumps(effective_config(cfg))
    ('***', False)
    """
    def plain(value: Any) -> Any:
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def _read_secret_files(kafka: KafkaConfig) -> KafkaConfig:
    """Fill the passwords named by ``*_password_file`` settings (one trailing newline dropped)."""
    values = {}
    for name in ("sasl_plain_password", "ssl_password"):
        path = getattr(kafka, f"{name}_file")
        if path is None:
            continue
        if getattr(kafka, name) is not None:
            raise ConfigError(f"config: 'kafka.{name}' and 'kafka.{name}_file' are both set: keep one")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"config: cannot read 'kafka.{name}_file' {path}: {why}") from None
        values[name] = Secret(text[:-1] if text.endswith("\n") else text)
    return dataclasses.replace(kafka, **values) if values else kafka


def _check_security(kafka: KafkaConfig) -> None:
    """SASL settings only with a SASL protocol, and then complete; certificates only with SSL."""
    protocol = kafka.security_protocol
    sasl = {name: getattr(kafka, name) for name in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password")}
    if protocol.startswith("SASL_"):
        for name, value in sasl.items():
            if value is None:
                hint = " (or kafka.sasl_plain_password_file)" if name == "sasl_plain_password" else ""
                raise ConfigError(f"config: 'kafka.security_protocol' {protocol} needs 'kafka.{name}'{hint}")
    else:
        for name, value in sasl.items():
            if value is not None:
                raise ConfigError(f"config: 'kafka.{name}' is set but 'kafka.security_protocol' is {protocol}, "
                                  f"not SASL_PLAINTEXT or SASL_SSL")
    if protocol not in ("SSL", "SASL_SSL"):
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            if getattr(kafka, name) is not None:
                raise ConfigError(f"config: 'kafka.{name}' is set but 'kafka.security_protocol' is {protocol}, "
                                  f"not SSL or SASL_SSL")


def _parse_fields(raw: Any) -> tuple[FieldSpec, ...]:
    if raw is None:
        raise ConfigError("config: missing 'fields' (a mapping of field name to type)")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("config: 'fields' must be a non-empty mapping of field name to type")
    specs = []
    for name, value in raw.items():
        where = f"fields.{name}"
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise ConfigError(f"config: '{where}' must be a type name or a mapping")
        if "type" not in value:
            raise ConfigError(f"config: '{where}' has no 'type'")
        spec = _build_section(FieldSpec, {"name": str(name), **value}, where, environ={})
        if spec.type not in FIELD_TYPES:
            raise ConfigError(
                f"config: '{where}.type' must be one of {', '.join(FIELD_TYPES)}, got '{spec.type}'"
            )
        if spec.type == "vector" and (spec.size is None or spec.size < 1):
            raise ConfigError(f"config: '{where}' is a vector and needs a positive 'size'")
        specs.append(spec)
    if all(s.type == "ignore" for s in specs):
        raise ConfigError("config: 'fields' has no field to model (all are 'ignore')")
    return tuple(specs)


def _build_section(cls: type, raw: Any, where: str, environ: Mapping[str, str]) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: '{where}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"config: unknown key '{where}.{key}'")
    values = {}
    for name in names:
        env_name = f"ANOMON_{where}_{name}".upper().replace(".", "_")
        if env_name in environ:
            values[name] = _coerce_env(environ[env_name], hints[name], env_name)
        elif name in raw:
            values[name] = _check_type(raw[name], hints[name], f"{where}.{name}")
    return cls(**values)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ConfigError(f"config: '{where}' must be one of {choices}, got '{value}'")
        return value
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"config: '{where}' must be str, got {type(value).__name__}")  # never the value
        return Secret(value)
    if dataclasses.is_dataclass(hint):
        return _build_section(hint, value, where, environ={})
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config: '{where}' must be a mapping, got {_describe(value)}")
        return {str(k): _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config: '{where}' must be a list, got {_describe(value)}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"config: '{where}' must be {hint.__name__}, got {_describe(value)}")
    return value


def _coerce_env(text: str, hint: Any, env_name: str) -> Any:
    """Parse an environment override as YAML scalar, then type-check it like the file."""
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    if (_accepts(hint, str) or _accepts(hint, Secret)) and not isinstance(value, str) and value is not None:
        value = text
    return _check_type(value, hint, env_name)


def _accepts(hint: Any, kind: type) -> bool:
    return hint is kind or kind in typing.get_args(hint)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _check_ranges(config: Config) -> None:
    checks = [
        (0 < config.threshold.target_rate < 1, "threshold.target_rate", "between 0 and 1"),
        (0 < config.threshold.tail_fraction < 1, "threshold.tail_fraction", "between 0 and 1"),
        (0 < config.model.holdout_fraction < 1, "model.holdout_fraction", "between 0 and 1"),
        (config.model.epochs >= 1, "model.epochs", "at least 1"),
        (config.model.batch_size >= 1, "model.batch_size", "at least 1"),
        ((config.model.max_records or 1) >= 1, "model.max_records", "at least 1"),
        (config.model.learning_rate > 0, "model.learning_rate", "positive"),
        (config.model.neighbours >= 0, "model.neighbours", "0 (off) or more"),
        (config.model.folds >= 3, "model.folds", "at least 3"),
        (config.model.cross_fit_below >= 0, "model.cross_fit_below", "0 or more"),
        (0 <= config.model.min_improvement < 1, "model.min_improvement", "between 0 and 1"),
        (all(n >= 1 for n in config.model.layers or [1]), "model.layers", "positive sizes"),
        (config.encoding.max_categories >= 1, "encoding.max_categories", "at least 1"),
        (config.kafka.partitions >= 1, "kafka.partitions", "at least 1"),
        (config.monitor.max_batch_records >= 1, "monitor.max_batch_records", "at least 1"),
        (config.monitor.max_nesting_depth >= 1, "monitor.max_nesting_depth", "at least 1"),
        (config.monitor.max_array_length >= 1, "monitor.max_array_length", "at least 1"),
        (0 <= config.metrics.port < 65536, "metrics.port", "a port number"),
        (config.drift.window >= 1, "drift.window", "at least 1"),
        (all((f.window or 1) >= 1 for f in (config.drift.score, *config.drift.fields.values())),
         "drift.fields.*.window", "at least 1"),
        (config.drift.cooldown_windows >= 0, "drift.cooldown_windows", "at least 0"),
        (config.retrain.min_records >= 10, "retrain.min_records", "at least 10"),
        (config.retrain.cross_fit_below >= 0, "retrain.cross_fit_below", "0 or more"),
        (config.retrain.keep_versions >= 1, "retrain.keep_versions", "at least 1"),
    ]
    unknown = sorted(set(config.drift.fields) - {f.name for f in config.fields})
    if unknown:
        raise ConfigError(f"config: 'drift.fields.{unknown[0]}' is not in 'fields'")
    for ok, key, wanted in checks:
        if not ok:
            raise ConfigError(f"config: '{key}' must be {wanted}")


def _drop_defaults(spec: FieldSpec) -> dict[str, Any]:
    defaults = FieldSpec(name=spec.name, type=spec.type)
    return {
        k: v
        for k, v in dataclasses.asdict(spec).items()
        if k != "name" and (k == "type" or v != getattr(defaults, k))
    }
