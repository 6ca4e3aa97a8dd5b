"""Warnings that input can trigger, logged at most once per interval.

A worker logs what it rejects and what it lost. Both are triggered by what
others send: one line per message would let a flood of bad messages turn
into a flood of log lines (and then into lost messages, while the worker is
busy writing them). A :class:`Throttle` logs the first line of a kind at once
and only counts the others until the interval ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["LOG_INTERVAL_S", "Throttle"]

#: Shortest interval between two log lines of one kind.
LOG_INTERVAL_S: Final = 10.0


class Throttle:
    """Log lines that input can trigger, at most one per key per interval.

    The first line of a key is logged at once; the ones that follow within
    ``interval_s`` are only counted, and the count is logged with the next
    line of that key or by :meth:`flush`. A flood of bad messages thus costs
    a few lines per interval, never one per message (STYLE 13).
    """

    def __init__(
        self,
        log: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [time of the last line logged, lines suppressed since, the last text]
        self._keys: dict[str, list[Any]] = {}

    def warning(self, key: str, text: str) -> None:
        """Log ``text`` unless a line of ``key`` was logged within the interval."""
        now = self._clock()
        with self._lock:
            entry = self._keys.get(key)
            if entry is not None and now - entry[0] < self.interval_s:
                entry[1] += 1
                entry[2] = text
                return
            suppressed = entry[1] if entry is not None else 0
            self._keys[key] = [now, 0, text]
        if suppressed:
            text += f" ({suppressed} more like it in the last {self.interval_s:g}s)"
        self.log.warning("%s", text)

    def flush(self) -> None:
        """Log the count of lines suppressed in intervals that have ended."""
        now = self._clock()
        due = []
        with self._lock:
            for entry in self._keys.values():
                if entry[1] and now - entry[0] >= self.interval_s:
                    due.append((entry[1], entry[2]))
                    entry[0], entry[1] = now, 0
        for count, text in due:
            self.log.warning(
                "%d more like this in the last %gs; the latest: %s", count, self.interval_s, text
            )
