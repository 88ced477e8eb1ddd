"""Synthetic web traffic with labelled anomalies, so the demo needs no external data.

Each event is a login or web request by one of a few hundred users. Traffic
follows a daily cycle in UTC (the site's local time): volume peaks at 14:00
and bottoms out at 02:00, latency grows with load, and phones are used more
in the evening. Anomalies are injected into this stream at a chosen rate and
named in the ``label`` field:

``exfiltration``
    A download of 50 MB or more (normal downloads are about 500 kB).
``brute_force``
    A failed ``/login`` after 10 to 60 failed attempts (normal: at most 3),
    answered unusually fast, half of the time from a foreign country.
``impossible_travel``
    A successful ``/login`` from a country none of the users lives in, slow,
    and from the other kind of device (phone or computer) than usual.
``latency_spike``
    A request taking 8 s or more, mostly answered with a 504 status.
``odd_hour_admin``
    A ``PUT /admin/config`` or ``DELETE /admin/users`` between 00:00 and 06:00
    by a regular user, mostly from a phone. Admins work from 08:00 to 18:00.

Examples
--------
>>> from monitor.traffic import TRAFFIC_FIELDS, TrafficGenerator
>>> events = TrafficGenerator(seed=7, anomaly_rate=0.05).generate(2000)
>>> list(events[0]) == list(TRAFFIC_FIELDS)
True
>>> sum(event["label"] != "normal" for event in events)
88

"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import accumulate, islice

from monitor.resources import demo_config_mapping

__all__ = [
    "ANOMALY_KINDS",
    "HISTORY_START",
    "NORMAL",
    "SITE_SEED",
    "TRAFFIC_FIELDS",
    "TRAFFIC_KEY",
    "TrafficGenerator",
    "live_stream",
    "week_of_history",
]

# The ``fields:`` and ``key:`` of the demo config (monitor/resources/demo.yaml, their one
# definition). The user is the key that alerts name, not a feature: hundreds of user names as
# categories would mostly teach the model who is busy.
_DEMO_SCHEMA = demo_config_mapping()
TRAFFIC_FIELDS: dict[str, str] = dict(_DEMO_SCHEMA["fields"])
TRAFFIC_KEY: str = _DEMO_SCHEMA["key"]

ANOMALY_KINDS: tuple[str, ...] = (
    "exfiltration",
    "brute_force",
    "impossible_travel",
    "latency_spike",
    "odd_hour_admin",
)

NORMAL = "normal"  # the label of events that are not anomalies

# Where users live: a skewed distribution, as for most sites.
_COUNTRIES = {
    "US": 0.45, "GB": 0.12, "DE": 0.10, "FR": 0.07, "IN": 0.06, "CA": 0.05,
    "BR": 0.04, "JP": 0.03, "AU": 0.03, "ES": 0.02, "NL": 0.02, "SE": 0.01,
}  # fmt: skip
_COUNTRY_NAMES = list(_COUNTRIES)
_COUNTRY_CUM_WEIGHTS = list(accumulate(_COUNTRIES.values()))
# No user lives here, so a login from one of them is a new category.
_FOREIGN_COUNTRIES = ("RU", "CN", "NG", "VN", "KZ")

_PEAK_HOUR = 14.0
_AMPLITUDE = 0.8  # volume swings between 0.2x and 1.8x its daily mean
_BUSINESS_HOURS = range(8, 18)
_NIGHT_HOURS = range(0, 6)
_EVENING_HOURS = range(18, 24)
_TRAVEL_RATE = 0.01  # share of normal events sent from a trip to another country
_ADMIN_SHARE = 0.05


@dataclass(frozen=True)
class _Endpoint:
    path: str
    method: str
    weight: float  # share of requests
    bytes_out: float  # median response size
    latency_ms: float  # median latency at average load


_ENDPOINTS = (
    _Endpoint("/login", "POST", 0.10, 1_200, 120),
    _Endpoint("/api/search", "GET", 0.20, 8_000, 80),
    _Endpoint("/api/items", "GET", 0.25, 4_000, 40),
    _Endpoint("/api/items", "POST", 0.08, 900, 60),
    _Endpoint("/api/items", "DELETE", 0.02, 300, 50),
    _Endpoint("/api/download", "GET", 0.05, 500_000, 300),
    _Endpoint("/api/upload", "POST", 0.04, 600, 400),
    _Endpoint("/static", "GET", 0.28, 30_000, 10),
)
# Only admins call these, and only during business hours.
_ADMIN_ENDPOINTS = _ENDPOINTS + (
    _Endpoint("/admin/users", "GET", 0.25, 20_000, 150),
    _Endpoint("/admin/config", "PUT", 0.10, 2_000, 200),
)
_CUM_WEIGHTS = list(accumulate(e.weight for e in _ENDPOINTS))
_ADMIN_CUM_WEIGHTS = list(accumulate(e.weight for e in _ADMIN_ENDPOINTS))


@dataclass(frozen=True)
class _User:
    name: str
    country: str
    mobile_share: float
    is_admin: bool


def _make_users(rng: random.Random, n: int) -> tuple[list[_User], list[float]]:
    """Users and their cumulative activity weights (a few are very active)."""
    countries = rng.choices(_COUNTRY_NAMES, cum_weights=_COUNTRY_CUM_WEIGHTS, k=n)
    n_admins = max(1, round(n * _ADMIN_SHARE))
    users = [
        _User(f"user{i:03d}", country, rng.betavariate(2, 4), i < n_admins)
        for i, country in enumerate(countries)
    ]
    activity = list(accumulate(rng.lognormvariate(0, 1) for _ in users))
    return users, activity


def _daily_load(t: datetime) -> float:
    """Traffic volume at ``t`` relative to the daily mean (mean 1 over a day)."""
    hour = t.hour + t.minute / 60 + t.second / 3600
    return 1 + _AMPLITUDE * math.cos(2 * math.pi * (hour - _PEAK_HOUR) / 24)


def _next_time(rng: random.Random, t: datetime, events_per_hour: float) -> datetime:
    """Next arrival of a Poisson process whose rate follows the daily cycle.

    Thinning: draw arrivals at the peak rate, keep each with probability
    ``load / peak load``.
    """
    peak = 1 + _AMPLITUDE
    while True:
        t += timedelta(hours=rng.expovariate(events_per_hour * peak))
        if rng.random() * peak < _daily_load(t):
            return t


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normal_event(
    rng: random.Random, t: datetime, users: list[_User], activity: list[float]
) -> dict:
    user = rng.choices(users, cum_weights=activity)[0]
    if user.is_admin and t.hour in _BUSINESS_HOURS:
        endpoint = rng.choices(_ADMIN_ENDPOINTS, cum_weights=_ADMIN_CUM_WEIGHTS)[0]
    else:
        endpoint = rng.choices(_ENDPOINTS, cum_weights=_CUM_WEIGHTS)[0]

    country = user.country
    if rng.random() < _TRAVEL_RATE:
        country = rng.choices(_COUNTRY_NAMES, cum_weights=_COUNTRY_CUM_WEIGHTS)[0]
    mobile_share = user.mobile_share * (1.5 if t.hour in _EVENING_HOURS else 1.0)
    is_mobile = rng.random() < mobile_share

    failed_logins, status = 0, 200
    draw = rng.random()
    if endpoint.path == "/login" and draw < 0.08:  # a mistyped password or two
        failed_logins = rng.randint(1, 3)
        status = 401 if draw < 0.04 else 200
    elif draw < 0.01:
        status = 404
    elif draw < 0.013:
        status = 500
    elif endpoint.path == "/static" and draw < 0.3:
        status = 304

    # Phones get lighter pages over slower links.
    bytes_out = endpoint.bytes_out * rng.lognormvariate(0, 1.0)
    bytes_out *= 0.5 if is_mobile else 1.0
    latency = endpoint.latency_ms * (0.6 + 0.4 * _daily_load(t))
    latency *= rng.lognormvariate(0, 0.4) * (1.3 if is_mobile else 1.0)
    return {
        "event_time": _iso(t),
        "user": user.name,
        "country": country,
        "method": endpoint.method,
        "endpoint": endpoint.path,
        "status": status,
        "bytes_out": 0 if status == 304 else round(bytes_out),
        "latency_ms": round(latency, 1),
        "failed_logins": failed_logins,
        "is_mobile": is_mobile,
        "label": NORMAL,
    }


# Injectors turn a normal event into an anomaly of their kind, in place. They
# share one signature; only odd_hour_admin needs the regular users.


def _exfiltration(rng: random.Random, event: dict, regular: list[_User]) -> None:
    size = 50e6 + rng.lognormvariate(math.log(150e6), 0.6)
    event.update(
        method="GET",
        endpoint="/api/download",
        status=200,
        bytes_out=round(size),
        latency_ms=round(size / rng.uniform(20e3, 60e3), 1),  # 20-60 MB/s
        failed_logins=0,
        is_mobile=False,
    )


def _brute_force(rng: random.Random, event: dict, regular: list[_User]) -> None:
    if rng.random() < 0.5:
        event["country"] = rng.choice(_FOREIGN_COUNTRIES)
    event.update(
        method="POST",
        endpoint="/login",
        status=401,
        bytes_out=rng.randint(200, 400),
        latency_ms=round(rng.uniform(5, 30), 1),  # scripted: no human pause
        failed_logins=rng.randint(10, 60),
        is_mobile=False,
    )


def _impossible_travel(rng: random.Random, event: dict, regular: list[_User]) -> None:
    event.update(
        country=rng.choice(_FOREIGN_COUNTRIES),
        method="POST",
        endpoint="/login",
        status=200,
        bytes_out=round(1_200 * rng.lognormvariate(0, 0.3)),
        latency_ms=round(rng.uniform(500, 1_500), 1),  # a long way round
        failed_logins=0,
        is_mobile=not event["is_mobile"],
    )


def _latency_spike(rng: random.Random, event: dict, regular: list[_User]) -> None:
    event.update(
        status=504 if rng.random() < 0.6 else 200,
        latency_ms=round(8_000 + rng.lognormvariate(math.log(8_000), 0.5), 1),
    )


def _odd_hour_admin(rng: random.Random, event: dict, regular: list[_User]) -> None:
    user = rng.choice(regular)
    path, method = rng.choice((("/admin/config", "PUT"), ("/admin/users", "DELETE")))
    event.update(
        user=user.name,
        country=user.country,
        method=method,
        endpoint=path,
        status=200,
        bytes_out=rng.randint(500, 5_000),
        latency_ms=round(rng.uniform(100, 400), 1),
        failed_logins=0,
        is_mobile=rng.random() < 0.7,
    )


_INJECTORS = {
    "exfiltration": _exfiltration,
    "brute_force": _brute_force,
    "impossible_travel": _impossible_travel,
    "latency_spike": _latency_spike,
    "odd_hour_admin": _odd_hour_admin,
}
_DAY_KINDS = tuple(kind for kind in ANOMALY_KINDS if kind != "odd_hour_admin")


class TrafficGenerator:
    """Endless, reproducible stream of web traffic events with labelled anomalies.

    Parameters
    ----------
    seed
        Seeds everything: users, timing, values and anomalies.
    anomaly_rate
        Probability that an event is turned into an anomaly. The kind is drawn
        uniformly among those possible at that hour (``odd_hour_admin`` only
        happens between 00:00 and 06:00 UTC). The normal events do not depend
        on this rate: raising it replaces some of them, leaving the rest as
        they were.
    start
        Time of the stream's start; naive datetimes are taken as UTC.
    events_per_hour
        Mean number of events per hour over a day (0.2x at 02:00, 1.8x at 14:00).
    n_users
        Number of users; 5 % of them (at least one) are admins.

    Examples
    --------
    >>> gen = TrafficGenerator(seed=1, anomaly_rate=0.1, events_per_hour=60)
    >>> event = next(iter(gen))
    >>> event["event_time"], event["user"], event["endpoint"], event["label"]
    ('2024-01-01T00:04:58.211Z', 'user103', '/api/items', 'normal')
    >>> gen.generate(500) == gen.generate(500)
    True
    >>> import json
    >>> print(json.dumps(gen.generate(3)[2]))  # doctest: +NORMALIZE_WHITESPACE
    {"event_time": "2024-01-01T00:10:22.558Z", "user": "user050", "country": "US",
     "method": "POST", "endpoint": "/api/upload", "status": 200, "bytes_out": 333,
     "latency_ms": 369.5, "failed_logins": 0, "is_mobile": false, "label": "normal"}

    """

    def __init__(
        self,
        seed: int = 0,
        anomaly_rate: float = 0.0,
        start: datetime = datetime(2024, 1, 1, tzinfo=timezone.utc),
        events_per_hour: float = 600.0,
        n_users: int = 300,
    ) -> None:
        if not 0.0 <= anomaly_rate <= 1.0:
            raise ValueError(f"anomaly_rate must be in [0, 1], got {anomaly_rate}")
        if events_per_hour <= 0:
            raise ValueError(f"events_per_hour must be positive, got {events_per_hour}")
        if n_users < 2:
            raise ValueError(f"n_users must be at least 2, got {n_users}")
        self.seed = seed
        self.anomaly_rate = anomaly_rate
        self.start = (
            start.replace(tzinfo=timezone.utc)
            if start.tzinfo is None
            else start.astimezone(timezone.utc)
        )
        self.events_per_hour = events_per_hour
        self.n_users = n_users

    def __repr__(self) -> str:
        return (
            f"TrafficGenerator(seed={self.seed}, anomaly_rate={self.anomaly_rate}, "
            f"start={self.start.isoformat()!r}, "
            f"events_per_hour={self.events_per_hour}, n_users={self.n_users})"
        )

    def __iter__(self) -> Iterator[dict]:
        return self.stream()

    def stream(self) -> Iterator[dict]:
        """Yield events forever, in time order; each call restarts the same stream."""
        rng = random.Random(self.seed)
        # A separate generator for injection keeps the normal events independent
        # of the anomaly rate.
        injection = random.Random(f"{self.seed}:anomalies")
        users, activity = _make_users(rng, self.n_users)
        regular = [user for user in users if not user.is_admin]
        t = self.start
        while True:
            t = _next_time(rng, t, self.events_per_hour)
            event = _normal_event(rng, t, users, activity)
            if injection.random() < self.anomaly_rate:
                kind = injection.choice(
                    ANOMALY_KINDS if t.hour in _NIGHT_HOURS else _DAY_KINDS
                )
                _INJECTORS[kind](injection, event, regular)
                event["label"] = kind
            yield event

    def generate(self, n: int) -> list[dict]:
        """The first ``n`` events of :meth:`stream`."""
        return list(islice(self.stream(), n))


# The site of the demo and of `anomon generate`: its history and its live traffic come from the
# same users, so a model trained on one fits the other.
SITE_SEED = 1
HISTORY_START = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a Monday


def week_of_history(n: int, *, anomaly_rate: float = 0.0, seed: int = SITE_SEED) -> list[dict]:
    """``n`` events over about a week from `HISTORY_START` (``n / 168`` an hour on average): every
    hour of every weekday.  The same on every call, so a model trained on it (and the demo's
    figures) are too.

    >>> history = week_of_history(1000)
    >>> sorted({datetime.fromisoformat(e["event_time"]).strftime("%a") for e in history})
    ['Fri', 'Mon', 'Sat', 'Sun', 'Thu', 'Tue', 'Wed']
    >>> history == week_of_history(1000)
    True
    """
    return TrafficGenerator(seed=seed, anomaly_rate=anomaly_rate, start=HISTORY_START,
                            events_per_hour=n / (7 * 24)).generate(n)


def live_stream(rate: float, *, anomaly_rate: float, seed: int = SITE_SEED,
                start: datetime | None = None) -> Iterator[dict]:
    """Endless traffic for sending at ``rate`` events/s from ``start`` (default now), in order.

    The event time is left out: the sender stamps the send time, as a live source would.

    >>> event = next(live_stream(100, anomaly_rate=0.0))
    >>> "event_time" in event, event["label"]
    (False, 'normal')
    """
    generator = TrafficGenerator(seed=seed, anomaly_rate=anomaly_rate,
                                 start=start or datetime.now(timezone.utc), events_per_hour=rate * 3600)
    for event in generator.stream():
        del event["event_time"]
        yield event
