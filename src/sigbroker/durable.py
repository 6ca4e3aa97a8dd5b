"""Durable delivery's names: where its keys live.

This module only names things: it imports no Redis, so the worker, the CLI
and the tests agree on the keys.
"""

from __future__ import annotations

__all__ = ["dlq_key", "lost_key", "retry_key", "stream_key"]


def stream_key(namespace: str, signal_name: str) -> str:
    """The stream a durable signal is appended to."""
    return f"{namespace}:stream:{signal_name}"


def dlq_key(namespace: str, group: str) -> str:
    """The dead-letter stream of a consumer group."""
    return f"{namespace}:dlq:{group}"


def retry_key(namespace: str, group: str) -> str:
    """The hash of a group's messages being retried: attempts and receivers done."""
    return f"{namespace}:retry:{group}"


def lost_key(namespace: str, group: str) -> str:
    """The hash of the entries a group lost, per stream (trimmed or deleted unprocessed)."""
    return f"{namespace}:lost:{group}"
