"""The monitor's view of Kafka: read a batch, write results, commit.

`monitor.transport.base` holds the contract (the `Transport` and `Producer` protocols, `Message`,
`Record`, the errors, `next_offsets`) and imports no Kafka client; each client library has a
module beside it: `monitor.transport.kafka_python` (the default) and `monitor.transport.confluent`
(librdkafka, the ``confluent`` extra).  `client` picks one by the name in ``kafka.client``, and
importing this package imports no optional library.  The public names are re-exported here, so
``from monitor.transport import Record, KafkaPythonTransport`` works whichever module defines them.

>>> client("kafka-python").transport.__name__
'KafkaPythonTransport'
>>> client("kafka")
Traceback (most recent call last):
...
ValueError: kafka.client must be one of kafka-python, confluent, not 'kafka'
"""

from importlib import import_module

from monitor.transport.base import (
    SECURITY_SETTINGS,
    Client,
    CommitFailed,
    DeliveryFailed,
    DeliveryRefused,
    Headers,
    Message,
    Offsets,
    Producer,
    Record,
    Refused,
    TopicReader,
    Transport,
    TransportError,
    TransportUnavailable,
    next_offsets,
    security_settings,
)
from monitor.transport.kafka_python import KafkaPythonProducer, KafkaPythonReader, KafkaPythonTransport, ensure_topics

__all__ = [
    "CLIENTS",
    "client",
    "Client",
    "Message",
    "Record",
    "Producer",
    "Transport",
    "TopicReader",
    "KafkaPythonTransport",
    "KafkaPythonProducer",
    "KafkaPythonReader",
    "ensure_topics",
    "next_offsets",
    "security_settings",
    "TransportError",
    "TransportUnavailable",
    "DeliveryFailed",
    "DeliveryRefused",
    "Refused",
    "CommitFailed",
    "Headers",
    "Offsets",
    "SECURITY_SETTINGS",
]

# kafka.client name -> the module that defines its `Client` as CLIENT, and the extra that installs it.
_MODULES = {"kafka-python": ("monitor.transport.kafka_python", None),
            "confluent": ("monitor.transport.confluent", "confluent")}
CLIENTS = tuple(_MODULES)


def client(name: str) -> Client:
    """The client library called ``name`` (one of `CLIENTS`), imported on first use.

    Raises `TransportError` naming the extra to install when its library is missing.
    """
    if name not in _MODULES:
        raise ValueError(f"kafka.client must be one of {', '.join(CLIENTS)}, not {name!r}")
    module, extra = _MODULES[name]
    try:
        return import_module(module).CLIENT
    except ModuleNotFoundError as exc:
        raise TransportError(f"kafka.client {name!r} needs {exc.name}: pip install 'anomon[{extra}]'") from exc
