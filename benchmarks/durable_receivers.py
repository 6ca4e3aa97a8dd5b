"""Receivers of figure 10: ``sigbroker worker -A benchmarks.durable_receivers --group bench``.

The same two receivers as :mod:`benchmarks.receivers` (one counts, one
acknowledges), on the durable signals. A module of their own: a worker that
has receivers of durable signals must be given ``--group``, and the workers of
figures 3 to 5 are not.
"""

from __future__ import annotations

from typing import Any

from benchmarks.durable_workload import durable_latency_signal, durable_payload_signal
from benchmarks.report import Reporter
from sigbroker import receiver

REPORTER = Reporter.from_environment("sigbroker-durable")


@receiver(durable_payload_signal)
def on_payload(sender: object, **kwargs: Any) -> None:
    """Do nothing with the message but count it."""
    REPORTER.count()


@receiver(durable_latency_signal)
def on_latency(sender: object, order_id: int, **kwargs: Any) -> None:
    """Acknowledge the message: ``order_id`` is the probe's sequence number."""
    REPORTER.ack(order_id)
