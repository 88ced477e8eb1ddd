"""Secrets in the configuration (Kafka passwords): kept out of reprs, config dumps and log lines.

A `Secret` holds a password read from the YAML file, an environment variable or a file
(``kafka.sasl_plain_password_file``).  Its ``repr`` and ``str`` are ``***``: a config printed,
logged or put in an exception message shows no password.  Only `Secret.reveal` gives the value,
and only the code that hands it to the Kafka client calls it.

Libraries log what they were given (kafka-python's admin client logs its whole configuration,
password included, at DEBUG): `RedactingFormatter` replaces every known secret in every
formatted line, tracebacks included, whatever logger wrote it.

>>> secret = Secret("hunter2")
>>> secret, f"password={secret}", secret.reveal()
(Secret('***'), 'password=***', 'hunter2')
>>> redact("login alice:hunter2 failed", ["hunter2"])
'login alice:*** failed'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

REDACTED = "***"


class Secret:
    """A string that never shows itself: ``repr``, ``str`` and formatting give ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a secret is a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The value itself: for the Kafka client, nothing else."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return format(REDACTED, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every (non-empty) secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats a record with `inner`, then redacts `secrets` from the whole line (and traceback)."""

    def __init__(self, inner: logging.Formatter | None, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        # Longest first: a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)


def redact_logging(secrets: Iterable[str], logger: logging.Logger | None = None) -> None:
    """Make every handler of `logger` (default: the root logger) redact `secrets` from its lines."""
    secrets = list(secrets)
    for handler in (logger or logging.getLogger()).handlers:
        current = handler.formatter
        if isinstance(current, RedactingFormatter):  # installed before: add to its secrets
            handler.setFormatter(RedactingFormatter(current.inner, [*current.secrets, *secrets]))
        else:
            handler.setFormatter(RedactingFormatter(current, secrets))
