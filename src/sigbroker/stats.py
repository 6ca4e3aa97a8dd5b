"""A worker's counters: what it processed, what failed, what it rejected and lost.

Shared by the parts of a worker (the dispatcher counts messages, the
subscription its resubscriptions) and read by its heartbeat.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Stats"]


@dataclass
class Stats:
    """What a worker has done so far; read by heartbeats and ``sigbroker workers``.

    ``processed`` counts messages decoded and dispatched, ``failed`` counts
    receiver calls that raised, ``rejected`` counts messages refused before
    any receiver ran, by reason in ``rejected_by`` (``invalid``: not a
    message the decoder accepts; ``signature``: unsigned or badly signed;
    ``replay``: already seen from its origin, or older than the replay
    window), ``lost`` counts messages that a sender published and this
    worker never received (gaps in an origin's sequence numbers; for a
    durable signal, entries trimmed or deleted before its group processed
    them), and ``resubscribes`` counts subscriptions after the first. Durable
    delivery adds ``retried`` (messages scheduled again for receivers that
    raised), ``dead_lettered`` (receivers' failures put in the group's dead
    letters) and ``claimed`` (messages taken over from a dead or idle consumer).
    """

    processed: int = 0
    failed: int = 0
    rejected: int = 0
    lost: int = 0
    resubscribes: int = 0
    retried: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reject(self, reason: str) -> None:
        """Count one rejected message under ``reason``."""
        with self.lock:
            self.rejected += 1
            self.rejected_by[reason] = self.rejected_by.get(reason, 0) + 1

    def add(self, **counts: int) -> None:
        """Add to counters by name, under the lock (from any thread)."""
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (for heartbeats and JSON output)."""
        with self.lock:
            return {
                "processed": self.processed,
                "failed": self.failed,
                "rejected": self.rejected,
                "rejected_by": dict(self.rejected_by),
                "lost": self.lost,
                "resubscribes": self.resubscribes,
                "retried": self.retried,
                "dead_lettered": self.dead_lettered,
                "claimed": self.claimed,
            }
