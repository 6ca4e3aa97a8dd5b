"""The Celery app of figure 6: ``celery -A benchmarks.celery_app worker --pool solo``.

One task that acknowledges its start through the same report path as the
sigbroker receivers. The broker is the benchmark's own redis-server (database
1), passed in ``BENCH_CELERY_BROKER``; without it the app uses Celery's
in-memory transport, so importing this module never reaches a real server.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from benchmarks.report import Reporter

#: Environment variable holding the broker URL.
ENV_BROKER = "BENCH_CELERY_BROKER"
#: Queue the worker consumes (latency); the call-cost figure sends to an unconsumed one.
LATENCY_QUEUE = "bench-celery"
COST_QUEUE = "bench-celery-cost"

app = Celery("benchmarks", broker=os.environ.get(ENV_BROKER, "memory://"), set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=LATENCY_QUEUE,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

_reporter: list[Reporter] = []


@app.task(name="benchmarks.probe")  # type: ignore[untyped-decorator]
def probe(order_id: int, **kwargs: Any) -> None:
    """Acknowledge the task's start: ``order_id`` is the probe's sequence number."""
    if not _reporter:
        _reporter.append(Reporter.from_environment("celery"))
    _reporter[0].ack(order_id)
