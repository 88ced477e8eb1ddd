"""Config loading: types, defaults, one-line errors naming the key, environment overrides."""

import pytest

from trainer.config import ConfigError, config_from_dict, load_config

BASE = {"fields": {"bytes": "numeric", "proto": "categorical", "pixels": {"type": "vector", "size": 4}}}


def test_defaults_and_field_specs():
    cfg = config_from_dict(BASE, environ={})
    assert [(f.name, f.type) for f in cfg.fields] == [("bytes", "numeric"), ("proto", "categorical"), ("pixels", "vector")]
    assert cfg.fields[2].size == 4
    assert cfg.threshold.method == "quantile" and cfg.threshold.target_rate == 0.001
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.metrics.port == 9108


def test_seed_architecture_is_expressible():
    cfg = config_from_dict({**BASE, "model": {"layers": [100, 50, 100], "activation": "tanh"}}, environ={})
    assert cfg.model.layers == [100, 50, 100]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({}, "missing 'fields'"),
        ({"fields": {}}, "'fields' must be a non-empty mapping"),
        ({**BASE, "kafka": {"bootsrap_servers": "x"}}, "unknown key 'kafka.bootsrap_servers'"),
        ({**BASE, "modle": {}}, "unknown key 'modle'"),
        ({**BASE, "model": {"epochs": "ten"}}, "'model.epochs' must be int, got str 'ten'"),
        ({**BASE, "model": {"epochs": True}}, "'model.epochs' must be int"),
        ({**BASE, "model": {"layers": [10, "x"]}}, "'model.layers[1]' must be int"),
        ({**BASE, "threshold": {"method": "magic"}}, "'threshold.method' must be one of quantile, max, evt"),
        ({**BASE, "threshold": {"target_rate": 2}}, "'threshold.target_rate' must be between 0 and 1"),
        ({"fields": {"a": "numbr"}}, "'fields.a.type' must be one of"),
        ({"fields": {"a": {"size": 3}}}, "'fields.a' has no 'type'"),
        ({"fields": {"a": "vector"}}, "'fields.a' is a vector and needs a positive 'size'"),
        ({"fields": {"a": "ignore"}}, "no field to model"),
        ({**BASE, "key": "user"}, "'key' names field 'user'"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, environ={})
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_environment_overrides_scalars():
    env = {
        "ANOMON_KAFKA_BOOTSTRAP_SERVERS": "broker:29092",
        "ANOMON_METRICS_PORT": "9200",
        "ANOMON_THRESHOLD_TARGET_RATE": "0.01",
        "ANOMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ANOMON_KAFKA_SASL_MECHANISM": "PLAIN",
        "ANOMON_KAFKA_SASL_PLAIN_USERNAME": "monitor",
        "ANOMON_KAFKA_SASL_PLAIN_PASSWORD": "123456",  # a YAML integer: kept as the text it is
    }
    cfg = config_from_dict(BASE, environ=env)
    assert cfg.kafka.bootstrap_servers == "broker:29092"
    assert cfg.metrics.port == 9200
    assert cfg.threshold.target_rate == 0.01
    assert cfg.kafka.sasl_mechanism == "PLAIN"
    assert cfg.kafka.sasl_plain_password.reveal() == "123456"


def test_environment_override_is_type_checked():
    with pytest.raises(ConfigError, match="ANOMON_METRICS_PORT' must be int"):
        config_from_dict(BASE, environ={"ANOMON_METRICS_PORT": "lots"})


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fields: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


def test_schema_hash_ignores_kafka_settings():
    a = config_from_dict(BASE, environ={})
    b = config_from_dict({**BASE, "kafka": {"input_topic": "other"}}, environ={})
    c = config_from_dict({**BASE, "model": {"epochs": 3}}, environ={})
    assert a.schema_hash() == b.schema_hash() != c.schema_hash()


def test_schema_hash_depends_on_field_order():
    reordered = {"fields": dict(reversed(list(BASE["fields"].items())))}
    assert config_from_dict(BASE, environ={}).schema_hash() != config_from_dict(reordered, environ={}).schema_hash()
