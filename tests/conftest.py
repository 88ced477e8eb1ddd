"""Shared fixtures: one embedded Kafka broker per test session, unique topic names, each Kafka client."""

from __future__ import annotations

import uuid
from typing import Callable, Iterator

import pytest

from monitor.broker import EmbeddedBroker
from monitor.transport import CLIENTS


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """A running embedded broker on a free port, shared by the whole session.

    No skip on failure: CI installs the ``embedded`` extra, so a broker that
    cannot start is an error worth seeing.
    """
    broker = EmbeddedBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique_topic() -> Callable[[str], str]:
    """Factory of topic names no other test uses: ``unique_topic("events")``.

    The broker is shared by the session, so tests must never share topics
    (or consumer groups: use the same factory for group ids).
    """

    def make(prefix: str = "topic") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture(params=CLIENTS)
def client_name(request) -> str:
    """Each Kafka client library in turn (``kafka.client``): a test taking it runs once per library."""
    return request.param
