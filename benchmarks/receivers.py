"""The receivers of the benchmark worker: ``sigbroker worker -A benchmarks.receivers``.

A no-op receiver that only counts (worker throughput and memory), and one that
acknowledges each message with the time it arrived (end-to-end latency). The
raw redis-py loop in :mod:`benchmarks.raw_subscriber` does exactly the same.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report import Reporter
from benchmarks.workload import latency_signal, payload_signal
from sigbroker import receiver

REPORTER = Reporter.from_environment("sigbroker")


@receiver(payload_signal)
def on_payload(sender: object, **kwargs: Any) -> None:
    """Do nothing with the message but count it."""
    REPORTER.count()


@receiver(latency_signal)
def on_latency(sender: object, order_id: int, **kwargs: Any) -> None:
    """Acknowledge the message: ``order_id`` is the probe's sequence number."""
    REPORTER.ack(order_id)
