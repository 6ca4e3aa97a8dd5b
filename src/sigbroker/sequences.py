"""Counting what never arrived: the sequence numbers of each sending process.

Every sender numbers its messages per channel (1, 2, 3...; see
:mod:`sigbroker.codec`). A worker that follows those numbers per origin knows
exactly how many messages it missed, whatever the cause (a reconnect, Redis
cutting it off at its output buffer limit, a stop), and which message it has
seen before (a replay). Nothing here talks to Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .stats import Stats
from .throttle import Throttle

__all__ = ["MAX_ORIGINS", "SETTLE_S", "Sequences"]

#: Time a gap in an origin's sequence stays open for late arrivals before it counts as lost.
SETTLE_S: Final = 1.0
#: Origins whose sequence a worker follows per signal; the older half is forgotten past it.
MAX_ORIGINS: Final = 10_000


class Sequences:
    """The sequence numbers of one channel's origins: counts what never arrived.

    Every sender numbers its messages per channel (1, 2, 3...). A number
    that follows the last one seen from its origin is the common case and
    costs one dict lookup. A jump opens a gap: its numbers are *pending* for
    ``settle_s`` (threads of one sender may publish a little out of order),
    then counted as lost with one (rate-limited) log line naming the count
    and the likely cause. A number at or below the last one seen that is not
    pending was seen before: a replay. Called from one reading thread; only
    the unusual paths take the lock, which :meth:`settle` shares.
    """

    def __init__(
        self,
        signal: str,
        stats: Stats,
        throttle: Throttle,
        *,
        settle_s: float = SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signal = signal
        self.stats = stats
        self.throttle = throttle
        self.settle_s = settle_s
        self._clock = clock
        #: The highest sequence number seen from each origin.
        self.highest: dict[str, int] = {}
        # origin -> [first, last, noticed at] ranges of numbers not received yet
        self._pending: dict[str, list[list[Any]]] = {}
        # origin -> the worker's resubscription count when its last gap was checked
        self._resubscribes: dict[str, int] = {}
        self._lock = threading.Lock()

    def accept(self, origin: str, seq: int) -> bool:
        """Record ``seq`` from ``origin`` (not the next one); False for a message seen before."""
        with self._lock:
            last = self.highest.get(origin)
            if last is None:
                if len(self.highest) >= MAX_ORIGINS:
                    self._forget_oldest()
                self.highest[origin] = seq
                self._resubscribes[origin] = self.stats.resubscribes
                return True
            if seq > last:
                self.highest[origin] = seq
                if seq > last + 1:
                    self._pending.setdefault(origin, []).append([last + 1, seq - 1, self._clock()])
                return True
            return self._arrived_late(origin, seq)

    def _arrived_late(self, origin: str, seq: int) -> bool:
        ranges = self._pending.get(origin, [])
        for gap in ranges:
            first, last = gap[0], gap[1]
            if first <= seq <= last:
                if first == last:
                    ranges.remove(gap)
                elif seq == first:
                    gap[0] = seq + 1
                elif seq == last:
                    gap[1] = seq - 1
                else:  # split in two, both noticed when the whole gap was
                    gap[1] = seq - 1
                    ranges.append([seq + 1, last, gap[2]])
                return True
        return False

    def _forget_oldest(self) -> None:
        # Senders come and go (a web server replaces its processes): keep the
        # newer half. A forgotten origin that sends again starts afresh.
        for origin in list(self.highest)[: MAX_ORIGINS // 2]:
            del self.highest[origin]
            self._resubscribes.pop(origin, None)
            self._pending.pop(origin, None)

    def settle(self, *, everything: bool = False) -> int:
        """Count the gaps pending for longer than ``settle_s`` (all with ``everything``) as lost."""
        now = self._clock()
        found: list[tuple[str, int, str]] = []
        with self._lock:
            for origin, ranges in list(self._pending.items()):
                due = [g for g in ranges if everything or now - g[2] >= self.settle_s]
                if not due:
                    continue
                count = sum(g[1] - g[0] + 1 for g in due)
                ranges[:] = [g for g in ranges if g not in due]
                if not ranges:
                    del self._pending[origin]
                resubscribes = self.stats.resubscribes
                before = self._resubscribes.get(origin, resubscribes)
                self._resubscribes[origin] = resubscribes
                found.append((origin, count, _likely_cause(resubscribes > before)))
        total = 0
        for origin, count, cause in found:
            total += count
            noun = "message" if count == 1 else "messages"
            self.throttle.warning(
                f"lost:{self.signal}",
                f"Lost {count} {noun} of {self.signal} from {origin}: {cause}",
            )
        if total:
            with self.stats.lock:
                self.stats.lost += total
        return total


def _likely_cause(resubscribed: bool) -> str:
    if resubscribed:
        return (
            "the subscription was re-made meanwhile (a reconnect, or Redis cut this worker "
            "off at its client-output-buffer-limit for pubsub because it fell behind)"
        )
    return "no reconnect meanwhile, so most likely sends that failed at the sender"
