"""Figure 4: end-to-end latency, one message at a time, sigbroker vs raw pub/sub.

Each message is sent only after the previous one was acknowledged. The
latency of a message is from just before the send call (encoding included)
until its receiver runs in the consumer process, read on the machine-wide
monotonic clock (see :mod:`benchmarks.report`); the acknowledgement only paces
the next send, and takes the same path for both sides.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Iterator

import redis

import sigbroker
from benchmarks.harness import Row, Target, alternate, percentile
from benchmarks.processes import Reports
from benchmarks.workload import (
    NAMESPACE,
    RAW_LATENCY_CHANNEL,
    Order,
    latency_signal,
    payload,
    raw_message,
)

#: Longest wait for one acknowledgement.
ACK_TIMEOUT_S = 10.0
#: The percentiles reported, and their labels.
PERCENTILES = ((50.0, "p50"), (99.0, "p99"), (99.9, "p99.9"))

_SEQ: Iterator[int] = itertools.count(1)


def latency_round(
    send: Callable[[int], object], reports: Reports, source: str, n: int
) -> list[float]:
    """Send ``n`` probes one at a time through ``send(seq)``; return each one's latency (s)."""
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            seq = next(_SEQ)
            start = time.perf_counter()
            send(seq)
            samples.append(reports.wait_ack(source, seq, ACK_TIMEOUT_S) - start)
    finally:
        gc.enable()
    return samples


def sigbroker_probe(url: str) -> Callable[[int], object]:
    """``latency_signal.send`` through the default client, set up by ``configure()``."""
    sigbroker.configure(url=url, namespace=NAMESPACE, secret="", eager=False)
    return lambda seq: latency_signal.send(sender=Order, **payload(seq))


def percentile_rows(
    figure: str,
    label: str,
    ours: list[list[float]],
    base: list[list[float]],
    base_label: str,
    targets: dict[str, Target],
) -> list[Row]:
    """One row per percentile, each round's percentile a measurement; pooled ones in ``extra``."""
    rows = []
    pooled_ours = [x for samples in ours for x in samples]
    pooled_base = [x for samples in base for x in samples]
    for q, name in PERCENTILES:
        rows.append(
            Row(
                figure,
                f"{label} {name}",
                "us",
                [percentile(samples, q) for samples in ours],
                [percentile(samples, q) for samples in base],
                base_label,
                [targets[name]] if name in targets else [],
                extra={
                    "pooled_sigbroker": percentile(pooled_ours, q),
                    "pooled_baseline": percentile(pooled_base, q),
                    "messages_per_side": len(pooled_ours),
                },
            )
        )
    return rows


def latency_rows(url: str, reports: Reports, *, rounds: int, per_round: int) -> list[Row]:
    """Figure 4: sigbroker worker vs raw redis-py loop, both acknowledging each message."""
    raw = redis.Redis.from_url(url)
    ours = sigbroker_probe(url)

    def base(seq: int) -> object:
        return raw.publish(RAW_LATENCY_CHANNEL, raw_message(payload(seq)))

    try:
        result = alternate(
            {
                "sigbroker": lambda: latency_round(ours, reports, "sigbroker", per_round),
                "raw": lambda: latency_round(base, reports, "raw", per_round),
            },
            rounds,
        )
    finally:
        raw.close()
    target = Target("ratio", "<=", 1.20)
    return percentile_rows(
        "4. e2e latency",
        "Signal.send -> receiver",
        result["sigbroker"],
        result["raw"],
        "redis-py publish -> PubSub loop",
        {"p50": target, "p99": target},
    )
