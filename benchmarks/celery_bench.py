"""Figure 6: Celery 5 on the same redis-server, for context.

The call cost of ``apply_async`` (to a queue nobody consumes, as the sends of
figure 1 go to channels nobody subscribes to) against ``Signal.send``, and the
latency from ``apply_async`` to the task's start in a ``--pool solo`` worker
against sigbroker's send-to-receiver latency, in alternating rounds.
"""

from __future__ import annotations

import sys
from typing import Any

import redis

import sigbroker
from benchmarks.harness import Row, Target, alternate, cost_rows, timed
from benchmarks.latency import latency_round, percentile_rows, sigbroker_probe
from benchmarks.processes import Reports, Subscriber
from benchmarks.workload import SEND_NAMESPACE, Order, payload, payload_signal

FIGURE = "6. Celery"
#: What the table says when Celery can not be imported.
MISSING = "Celery is not installed (make bench installs it: pip install -e '.[bench]')"
#: Longest wait for the Celery worker's first task (its startup is slow).
READY_TIMEOUT_S = 60.0


def celery_url(url: str) -> str:
    """Celery's broker: database 1 of the benchmark's redis-server."""
    return url.rsplit("/", 1)[0] + "/1"


def available() -> bool:
    """Whether Celery can be imported."""
    try:
        import celery  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def start_worker(url: str, report_url: str) -> Subscriber:
    """``celery -A benchmarks.celery_app worker --pool solo`` in a subprocess."""
    from benchmarks.celery_app import ENV_BROKER, LATENCY_QUEUE

    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "benchmarks.celery_app",
        "worker",
        "--pool",
        "solo",
        "--queues",
        LATENCY_QUEUE,
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "WARNING",
    ]
    env = {ENV_BROKER: celery_url(url)}
    return Subscriber("celery", args, report_url=report_url, every=10_000, env=env)


def _app(url: str) -> Any:
    # The app was made with the in-memory broker (no BENCH_CELERY_BROKER here):
    # point it at the benchmark's server before its first connection.
    from benchmarks.celery_app import app

    app.conf.broker_url = celery_url(url)
    return app


def wait_ready(url: str, worker: Subscriber, reports: Reports) -> None:
    """Run one task through the worker; the first one waits for the worker's startup."""
    _app(url)
    from benchmarks.celery_app import probe

    worker.check_alive()
    probe.apply_async(kwargs=payload(0))
    reports.wait_ack("celery", 0, READY_TIMEOUT_S)


def missing_rows(reason: str) -> list[Row]:
    """The rows of this figure when it could not run."""
    return [
        Row(FIGURE, "apply_async call cost", "us", [], [], "Celery apply_async", missing=reason),
        Row(
            FIGURE,
            "send -> receiver start p50",
            "us",
            [],
            [],
            "Celery apply_async -> task start (solo pool)",
            [Target("ratio", "<=", 0.10)],
            missing=reason,
        ),
    ]


def celery_rows(
    url: str, reports: Reports, *, rounds: int, calls: int, per_round: int
) -> list[Row]:
    """Figure 6: call cost and latency, sigbroker against Celery."""
    _app(url)
    from benchmarks.celery_app import COST_QUEUE, probe

    kwargs = payload()
    sigbroker.configure(url=url, namespace=SEND_NAMESPACE, secret="", eager=False)
    cost = alternate(
        {
            "sigbroker": lambda: timed(lambda: payload_signal.send(sender=Order, **kwargs), calls),
            "celery": lambda: timed(
                lambda: probe.apply_async(kwargs=kwargs, queue=COST_QUEUE), calls
            ),
        },
        rounds,
    )
    with redis.Redis.from_url(celery_url(url)) as r:
        r.delete(COST_QUEUE)  # never consumed: drop what the cost rounds queued

    ours = sigbroker_probe(url)
    latency = alternate(
        {
            "sigbroker": lambda: latency_round(ours, reports, "sigbroker", per_round),
            "celery": lambda: latency_round(
                lambda seq: probe.apply_async(kwargs=payload(seq)), reports, "celery", per_round
            ),
        },
        rounds,
    )

    rows = cost_rows(
        FIGURE, "Signal.send call cost", cost["sigbroker"], cost["celery"], "Celery apply_async"
    )
    rows += percentile_rows(
        FIGURE,
        "send -> receiver start",
        latency["sigbroker"],
        latency["celery"],
        "Celery apply_async -> task start (solo pool)",
        {"p50": Target("ratio", "<=", 0.10)},
    )
    return rows
