"""Durable delivery's names and policy: where its keys live and its defaults.

A durable signal (``Signal(durable=True)``) is appended to a Redis stream
instead of published; each consumer group (a service, ``--group``) gets every
entry once, its workers share the load, and a receiver that raises is retried
alone and, past ``max_deliveries``, dead-lettered (see
:mod:`sigbroker.transport.redis_streams`). This module only names things: it
imports no Redis, so the worker, the CLI and the tests agree on the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = [
    "CLAIM_IDLE_S",
    "DEFAULT_MAXLEN",
    "DLQ_MAXLEN",
    "MAX_DELIVERIES",
    "ConsumerOptions",
    "dlq_key",
    "lost_key",
    "retry_field",
    "retry_key",
    "stream_key",
]

#: Entries a durable signal's stream keeps by default (an approximate MAXLEN).
DEFAULT_MAXLEN = 100_000
#: Entries a group's dead-letter stream keeps (an approximate MAXLEN).
DLQ_MAXLEN = 100_000
#: Attempts of a receiver on one message before the message is dead-lettered.
MAX_DELIVERIES = 5
#: A pending entry idle this long is claimed by another worker of its group, whoever holds it.
CLAIM_IDLE_S = 60.0


@dataclass(frozen=True)
class ConsumerOptions:
    """How a worker consumes durable signals (``sigbroker worker --group``)."""

    #: The consumer group: one per service; its workers share the messages.
    group: str
    #: A group created by this worker starts at the stream's first entry, not its end.
    from_start: bool = False
    #: Attempts of a receiver on one message before the message is dead-lettered.
    max_deliveries: int = MAX_DELIVERIES
    #: Pending entries idle this long are claimed from whoever holds them.
    claim_idle_s: float = CLAIM_IDLE_S

    def __post_init__(self) -> None:
        if not self.group or not isinstance(self.group, str) or any(c in self.group for c in " *"):
            raise ConfigurationError(f"invalid group name {self.group!r}")
        if self.max_deliveries < 1:
            raise ConfigurationError("max_deliveries must be at least 1")
        if not self.claim_idle_s >= 10:
            raise ConfigurationError("claim_idle_s must be at least 10 seconds")


def stream_key(namespace: str, signal_name: str) -> str:
    """The stream a durable signal is appended to."""
    return f"{namespace}:stream:{signal_name}"


def dlq_key(namespace: str, group: str) -> str:
    """The dead-letter stream of a consumer group."""
    return f"{namespace}:dlq:{group}"


def retry_key(namespace: str, group: str) -> str:
    """The hash of a group's messages being retried: attempts and receivers done."""
    return f"{namespace}:retry:{group}"


def retry_field(stream: str, entry: str) -> str:
    """The field of one message in :func:`retry_key`'s hash."""
    return f"{stream}|{entry}"


def lost_key(namespace: str, group: str) -> str:
    """The hash of the entries a group lost, per stream (trimmed or deleted unprocessed)."""
    return f"{namespace}:lost:{group}"
