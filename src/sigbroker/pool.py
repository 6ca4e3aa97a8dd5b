"""The threads that call receivers for a worker started with ``concurrency`` above 1.

The reader thread hands each message's receivers to :class:`Pool`; a bound
on what the pool holds makes a slow receiver slow the reader down rather than
grow a queue without limit, and its counts tell a stop what is still to run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Pool"]

#: Messages a pool may hold per thread before the reader waits (a slow receiver slows reading).
POOL_BACKLOG_PER_THREAD = 4
#: Longest the reader waits for a free slot before it checks for a cancel.
SLOT_TICK_S = 0.25


class Pool:
    """Threads that call receivers, with a bound on the messages handed to them.

    The bound makes a slow receiver slow the reader down rather than grow a
    queue without limit; the counts tell a stop what is still to run.
    """

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="sigbroker-recv")
        self._slots = threading.Semaphore(threads * POOL_BACKLOG_PER_THREAD)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._in_hand = 0  # a message the reader holds while it waits for a slot
        self._queued = 0  # handed to the executor, not started
        self._running = 0
        self._cancelled = False

    def submit(self, call: Callable[[], None]) -> None:
        """Have a thread run ``call``; wait, a tick at a time, while the pool is full."""
        if not self._slots.acquire(blocking=False) and not self._wait_for_slot():
            return  # cancelled meanwhile: counted by cancel() as in hand
        with self._lock:
            if self._cancelled:
                return  # counted by cancel() if it was in hand
            self._in_hand = 0
            self._queued += 1
            self._executor.submit(self._run, call)

    def _wait_for_slot(self) -> bool:
        with self._lock:
            if self._cancelled:
                return False
            self._in_hand = 1
        while not self._slots.acquire(timeout=SLOT_TICK_S):
            if self._cancelled:
                return False
        return True

    def _run(self, call: Callable[[], None]) -> None:
        with self._lock:
            self._queued -= 1
            if self._cancelled:
                return  # counted by cancel() as queued
            self._running += 1
        try:
            call()
        finally:
            self._slots.release()
            with self._lock:
                self._running -= 1
                if not (self._running or self._queued):
                    self._changed.notify_all()

    def idle(self) -> bool:
        """True when nothing is queued, running, or waiting for a slot."""
        with self._lock:
            return not (self._in_hand or self._queued or self._running)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the pool to be idle; return whether it is."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not (self._in_hand or self._queued or self._running), timeout_s
            )

    def cancel(self) -> int:
        """Start nothing more; return how many messages were handed over and not started."""
        with self._lock:
            self._cancelled = True
            self._executor.shutdown(wait=False, cancel_futures=True)
            return self._in_hand + self._queued

    def close(self) -> None:
        """Let the idle threads go (quick: the worker waited for the pool to empty)."""
        self._executor.shutdown(wait=True)
