"""How subscribers tell the benchmark what happened: counts and acknowledgements.

Used by the sigbroker receivers, the raw redis-py subscriber loop and the
Celery task alike, so that the return path is identical on every side. Each
source publishes on ``bench-report:<source>``: ``count N T`` every
``BENCH_EVERY`` messages and ``ack SEQ T`` for each latency probe, where ``T``
is ``time.perf_counter()`` taken when the message reached the receiver. On
Linux that clock is ``CLOCK_MONOTONIC``, shared by every process of the
machine, so the benchmark compares it with its own readings. Import-light on
purpose (redis only): the raw loop's memory figure must not carry sigbroker.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import redis

#: Prefix of the report channels; the source name follows.
REPORT_PREFIX = "bench-report:"
#: Environment variables that configure a reporter in a subprocess.
ENV_URL, ENV_SOURCE, ENV_EVERY = "BENCH_REPORT_URL", "BENCH_SOURCE", "BENCH_EVERY"
#: Default number of messages between two count reports.
DEFAULT_EVERY = 10_000


class Reporter:
    """Counts messages and acknowledges probes on the source's report channel."""

    def __init__(self, url: str, source: str, every: int = DEFAULT_EVERY) -> None:
        self.channel = REPORT_PREFIX + source
        self.every = every
        self._redis = redis.Redis.from_url(url)
        # next() on itertools.count is atomic under the GIL: safe for a thread pool.
        self._counter = itertools.count(1)

    @classmethod
    def from_environment(cls, default_source: str) -> Reporter:
        """A reporter configured by ``BENCH_REPORT_URL``, ``BENCH_SOURCE`` and ``BENCH_EVERY``.

        There is no default URL: the benchmark never touches a Redis it did not start.
        """
        url = os.environ.get(ENV_URL)
        if not url:
            raise RuntimeError(f"{ENV_URL} is not set: start the benchmark with benchmarks/run.py")
        return cls(
            url,
            os.environ.get(ENV_SOURCE, default_source),
            int(os.environ.get(ENV_EVERY, DEFAULT_EVERY)),
        )

    def count(self) -> None:
        """Count one message; every ``every`` messages, report the count and the time."""
        n = next(self._counter)
        if n % self.every == 0:
            self._redis.publish(self.channel, f"count {n} {time.perf_counter()!r}")

    def ack(self, seq: int) -> None:
        """Report that probe ``seq`` reached the receiver, and when."""
        stamp = time.perf_counter()
        self._redis.publish(self.channel, f"ack {seq} {stamp!r}")

    def handlers(
        self, payload: bytes, latency: bytes
    ) -> dict[bytes, Callable[[dict[str, Any]], None]]:
        """A raw loop's receivers, by channel or stream: one counts, one acknowledges.

        The same work as the sigbroker receivers of :mod:`benchmarks.receivers`.
        """

        def on_payload(message: dict[str, Any]) -> None:
            self.count()

        def on_latency(message: dict[str, Any]) -> None:
            self.ack(message["order_id"])

        return {payload: on_payload, latency: on_latency}


def stop_on_sigterm() -> list[int]:
    """Have SIGTERM end a raw loop: the list returned is empty until it came.

    A list rather than a function: the loop tests it as cheaply as a local flag.
    """
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    return received
