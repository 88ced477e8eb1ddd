"""The synthetic traffic generator: reproducible, seasonal, correctly labelled."""

import doctest
import json
import statistics
from collections import Counter
from datetime import datetime, timedelta, timezone
from itertools import islice

import pytest

from monitor import traffic
from monitor.traffic import ANOMALY_KINDS, TRAFFIC_FIELDS, TRAFFIC_KEY, TrafficGenerator

# 150 events an hour: 12,000 events span more than three days and nights.
SETTINGS = dict(seed=3, events_per_hour=150)
N = 12_000
RATE = 0.1
BUSINESS_HOURS = range(8, 18)
# The field types anomon.yaml accepts; a key is a field too, typed `ignore`.
FIELD_TYPES = {"numeric", "categorical", "boolean", "vector", "timestamp", "ignore"}


def _hour(event: dict) -> int:
    return datetime.fromisoformat(event["event_time"]).hour


@pytest.fixture(scope="module")
def clean():
    return TrafficGenerator(**SETTINGS).generate(N)


@pytest.fixture(scope="module")
def events():
    return TrafficGenerator(**SETTINGS, anomaly_rate=RATE).generate(N)


@pytest.fixture(scope="module")
def by_label(events):
    groups = {}
    for event in events:
        groups.setdefault(event["label"], []).append(event)
    return groups


@pytest.fixture(scope="module")
def home_countries(clean):
    return {event["country"] for event in clean}


def test_same_seed_same_stream():
    a = TrafficGenerator(seed=11, anomaly_rate=0.2)
    b = TrafficGenerator(seed=11, anomaly_rate=0.2)
    assert a.generate(3_000) == b.generate(3_000)
    assert a.generate(500) == list(islice(a.stream(), 500)) == list(islice(a, 500))


def test_different_seeds_differ():
    a = TrafficGenerator(seed=1).generate(200)
    b = TrafficGenerator(seed=2).generate(200)
    assert a != b


def test_normal_events_do_not_depend_on_the_anomaly_rate(clean, events):
    changed = 0
    for before, after in zip(clean, events):
        if after["label"] == "normal":
            assert after == before
        else:
            assert after["event_time"] == before["event_time"]
            assert after != {**before, "label": after["label"]}
            changed += 1
    assert changed > 0


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.1, 0.5, 1.0])
def test_anomaly_rate_close_to_requested(rate):
    events = TrafficGenerator(seed=5, anomaly_rate=rate).generate(10_000)
    share = sum(event["label"] != "normal" for event in events) / len(events)
    assert share == pytest.approx(rate, abs=0.015)


def test_every_kind_appears(by_label):
    assert set(by_label) == {"normal", *ANOMALY_KINDS}
    assert len(ANOMALY_KINDS) == len(set(ANOMALY_KINDS)) == 5
    for kind in ANOMALY_KINDS:
        assert len(by_label[kind]) >= 10, kind


def test_normal_events_look_normal(by_label, home_countries):
    assert home_countries.isdisjoint({"RU", "CN", "NG", "VN", "KZ"})
    for event in by_label["normal"]:
        assert event["bytes_out"] < 50e6
        assert event["latency_ms"] < 8_000
        assert event["failed_logins"] <= 3
        assert event["status"] != 504
        if event["endpoint"].startswith("/admin/"):
            assert _hour(event) in BUSINESS_HOURS
            assert (event["method"], event["endpoint"]) != ("DELETE", "/admin/users")


def test_exfiltration_label(by_label):
    for event in by_label["exfiltration"]:
        assert (event["method"], event["endpoint"]) == ("GET", "/api/download")
        assert event["bytes_out"] >= 50e6


def test_brute_force_label(by_label):
    for event in by_label["brute_force"]:
        assert (event["method"], event["endpoint"]) == ("POST", "/login")
        assert event["status"] == 401
        assert event["failed_logins"] >= 10


def test_impossible_travel_label(by_label, home_countries):
    for event in by_label["impossible_travel"]:
        assert (event["endpoint"], event["status"]) == ("/login", 200)
        assert event["country"] not in home_countries


def test_latency_spike_label(by_label):
    for event in by_label["latency_spike"]:
        assert event["latency_ms"] >= 8_000


def test_odd_hour_admin_label(by_label):
    admins = {
        event["user"]
        for event in by_label["normal"]
        if event["endpoint"].startswith("/admin/")
    }
    assert admins
    for event in by_label["odd_hour_admin"]:
        assert event["endpoint"].startswith("/admin/")
        assert event["method"] in {"PUT", "DELETE"}
        assert _hour(event) < 6
        assert event["user"] not in admins


def test_records_follow_the_schema(events):
    assert set(TRAFFIC_FIELDS.values()) <= FIELD_TYPES
    assert TRAFFIC_FIELDS["label"] == "ignore"
    assert TRAFFIC_FIELDS["event_time"] == "timestamp"
    assert TRAFFIC_FIELDS[TRAFFIC_KEY] == "ignore"
    numeric = [name for name, kind in TRAFFIC_FIELDS.items() if kind == "numeric"]
    assert numeric == ["bytes_out", "latency_ms", "failed_logins"]
    for event in events:
        assert list(event) == list(TRAFFIC_FIELDS)
        assert datetime.fromisoformat(event["event_time"]).utcoffset() == timedelta(0)
        for name in numeric:
            assert type(event[name]) in (int, float) and event[name] >= 0
        assert type(event["is_mobile"]) is bool
        assert isinstance(event["status"], int) and 200 <= event["status"] < 600
        for name in ("user", "country", "method", "endpoint", "label"):
            assert type(event[name]) is str


def test_records_are_json_serialisable(events):
    assert json.loads(json.dumps(events)) == events


def test_a_few_hundred_users_and_skewed_countries(clean):
    assert 200 <= len({event["user"] for event in clean}) <= 300
    countries = Counter(event["country"] for event in clean).most_common()
    assert countries[0][0] == "US"
    assert countries[0][1] > 0.3 * len(clean) > countries[-1][1]


def test_bytes_out_is_heavy_tailed(clean):
    sizes = [event["bytes_out"] for event in clean]
    assert max(sizes) > 100 * statistics.median(sizes)


def test_events_are_in_time_order_from_start():
    start = datetime(2023, 6, 1, 12)  # naive: taken as UTC
    events = TrafficGenerator(seed=0, start=start).generate(2_000)
    times = [datetime.fromisoformat(event["event_time"]) for event in events]
    assert times == sorted(times)
    assert start.replace(tzinfo=timezone.utc) < times[0] < times[-1]


def test_volume_follows_the_daily_cycle(clean):
    first = datetime.fromisoformat(clean[0]["event_time"]).date()
    last = datetime.fromisoformat(clean[-1]["event_time"]).date()
    per_hour = Counter(
        (event["event_time"][:10], _hour(event))
        for event in clean
        if first < datetime.fromisoformat(event["event_time"]).date() < last
    )
    night = statistics.mean(n for (_, hour), n in per_hour.items() if hour < 5)
    day = statistics.mean(n for (_, hour), n in per_hour.items() if 11 <= hour < 17)
    assert day > 3 * night


def test_latency_follows_the_daily_cycle(clean):
    def mean_latency(hours):
        return statistics.mean(
            event["latency_ms"]
            for event in clean
            if event["endpoint"] == "/api/items" and _hour(event) in hours
        )

    assert mean_latency(range(11, 17)) > 1.4 * mean_latency(range(0, 5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"anomaly_rate": -0.1},
        {"anomaly_rate": 1.5},
        {"events_per_hour": 0},
        {"n_users": 1},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        TrafficGenerator(**kwargs)


def test_repr():
    assert repr(TrafficGenerator(seed=4)).startswith("TrafficGenerator(seed=4, ")


def test_docstring_examples():
    result = doctest.testmod(traffic)
    assert result.attempted > 0 and result.failed == 0
