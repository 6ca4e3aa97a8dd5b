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
from bisect import bisect_right
from collections.abc import Callable
from typing import Any, Final

from .stats import Stats
from .throttle import Throttle

__all__ = ["MAX_OPEN_GAPS", "MAX_ORIGINS", "MAX_SETTLED_GAPS", "SETTLE_S", "Sequences"]

#: Time a gap in an origin's sequence stays open for late arrivals before it counts as lost.
SETTLE_S: Final = 1.0
#: Origins whose sequence a worker follows per signal; the older half is forgotten past it.
MAX_ORIGINS: Final = 10_000
#: Gaps of one origin left open at once; past it the oldest counts as lost at once.
MAX_OPEN_GAPS: Final = 64
#: Gaps of one origin remembered after they were counted, for messages that arrive later still.
MAX_SETTLED_GAPS: Final = 64


class Sequences:
    """The sequence numbers of one channel's origins: counts what never arrived.

    Every sender numbers its messages per channel (1, 2, 3...). A number
    that follows the last one seen from its origin is the common case, which
    the dispatcher handles itself with one dict lookup in :attr:`highest`.
    A jump opens a gap: its numbers stay *open* for ``settle_s`` (threads of
    one sender may publish a little out of order), then count as lost, with
    one (rate-limited) log line naming the count and the likely cause. A
    number that arrives after its gap was counted still runs, and the count
    goes down again. A number at or below the highest seen that is in no gap
    was seen before: a replay.

    Called from one reading thread; only the unusual paths take the lock,
    which :meth:`settle` (called by the worker's pulse) shares. Each origin
    keeps at most :data:`MAX_OPEN_GAPS` open and :data:`MAX_SETTLED_GAPS`
    counted gaps, so a sender that skips numbers on purpose costs bounded
    time and memory.
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
        # origin -> open gaps [first, last, opened at, resubscribed meanwhile], by first;
        # opened in increasing order, so also by the time they were opened
        self._open: dict[str, list[list[Any]]] = {}
        # origin -> gaps already counted as lost [first, last], oldest first
        self._settled: dict[str, list[list[int]]] = {}
        # origin -> the worker's resubscription count when it was last seen off the common path
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
                    self._open_gap(origin, last + 1, seq - 1)
                return True
            return self._arrived_late(origin, seq)

    def _open_gap(self, origin: str, first: int, last: int) -> None:
        # The likely cause is known now: did the worker resubscribe since it
        # last looked at this origin?
        resubscribes = self.stats.resubscribes
        resubscribed = resubscribes > self._resubscribes.get(origin, resubscribes)
        self._resubscribes[origin] = resubscribes
        gaps = self._open.setdefault(origin, [])
        gaps.append([first, last, self._clock(), resubscribed])
        if len(gaps) > MAX_OPEN_GAPS:
            self._count(origin, gaps[:1])
            del gaps[0]

    def _arrived_late(self, origin: str, seq: int) -> bool:
        gaps = self._open.get(origin)
        if gaps and _take(gaps, seq):
            if not gaps:
                del self._open[origin]
            return True
        settled = self._settled.get(origin)
        if settled and _take(settled, seq):
            with self.stats.lock:
                self.stats.lost -= 1  # counted as lost, and here it is after all
            return True
        return False

    def _forget_oldest(self) -> None:
        # Senders come and go (a web server replaces its processes): keep the
        # newer half. What a forgotten origin still had open counts as lost.
        for origin in list(self.highest)[: MAX_ORIGINS // 2]:
            del self.highest[origin]
            self._resubscribes.pop(origin, None)
            self._settled.pop(origin, None)
            gaps = self._open.pop(origin, None)
            if gaps:
                self._count(origin, gaps)

    def _count(self, origin: str, gaps: list[list[Any]]) -> int:
        """Count ``gaps`` of ``origin`` as lost, log them, and remember them (under the lock)."""
        count: int = sum(gap[1] - gap[0] + 1 for gap in gaps)
        settled = self._settled.setdefault(origin, [])
        settled += ([gap[0], gap[1]] for gap in gaps)
        del settled[:-MAX_SETTLED_GAPS]
        with self.stats.lock:
            self.stats.lost += count
        noun = "message" if count == 1 else "messages"
        cause = _likely_cause(any(gap[3] for gap in gaps))
        self.throttle.warning(
            f"lost:{self.signal}", f"Lost {count} {noun} of {self.signal} from {origin}: {cause}"
        )
        return count

    def settle(self, *, everything: bool = False) -> int:
        """Count the gaps open for ``settle_s`` or longer (all with ``everything``) as lost."""
        horizon = self._clock() - self.settle_s
        total = 0
        with self._lock:
            for origin, gaps in list(self._open.items()):
                due = len(gaps)
                if not everything:
                    # Opened in order: the gaps due are the first ones.
                    due = next((i for i, gap in enumerate(gaps) if gap[2] > horizon), due)
                if due:
                    total += self._count(origin, gaps[:due])
                    del gaps[:due]
                    if not gaps:
                        del self._open[origin]
        return total


def _take(gaps: list[Any], seq: int) -> bool:
    """Remove ``seq`` from the sorted, disjoint ``gaps`` it falls in; False if in none."""
    at = bisect_right(gaps, seq, key=_first) - 1
    if at < 0 or gaps[at][1] < seq:
        return False
    gap = gaps[at]
    first, last = gap[0], gap[1]
    if first == last:
        del gaps[at]
    elif seq == first:
        gap[0] = seq + 1
    elif seq == last:
        gap[1] = seq - 1
    else:  # split in two; the second half keeps what else the gap carries
        gaps.insert(at + 1, [seq + 1, last, *gap[2:]])
        gap[1] = seq - 1
    return True


def _first(gap: list[Any]) -> int:
    first: int = gap[0]
    return first


def _likely_cause(resubscribed: bool) -> str:
    if resubscribed:
        return (
            "the subscription was re-made meanwhile (a reconnect, or Redis cut this worker "
            "off at its client-output-buffer-limit for pubsub because it fell behind)"
        )
    return "no reconnect meanwhile, so most likely sends that failed at the sender"
