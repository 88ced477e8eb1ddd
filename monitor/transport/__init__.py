"""The monitor's view of Kafka: read a batch, write results, commit.

`monitor.transport.base` holds the contract (the `Transport` protocol, `Message`, `Record`, the
errors, `next_offsets`) and imports no Kafka client; each client library has a module beside it
(`monitor.transport.kafka_python`). This package re-exports the public names, so
``from monitor.transport import Record, KafkaPythonTransport`` works whichever module defines them.
"""

from monitor.transport.base import (
    SECURITY_SETTINGS,
    CommitFailed,
    DeliveryFailed,
    Headers,
    Message,
    Offsets,
    Record,
    Transport,
    TransportError,
    TransportUnavailable,
    next_offsets,
)
from monitor.transport.kafka_python import KafkaPythonTransport, ensure_topics

__all__ = [
    "Message",
    "Record",
    "Transport",
    "KafkaPythonTransport",
    "ensure_topics",
    "next_offsets",
    "TransportError",
    "TransportUnavailable",
    "DeliveryFailed",
    "CommitFailed",
    "Headers",
    "Offsets",
    "SECURITY_SETTINGS",
]
