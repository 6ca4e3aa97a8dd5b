"""Figure 8: many threads sending through one client (issue 4, part 5).

Eight threads share one :class:`sigbroker.Client` on one side and one
``redis.Redis`` (one ``ConnectionPool``) on the other; each thread sends a
fixed number of messages and the figure is the total rate from the moment all
threads are released together until the last one finishes. A single-thread
send cost on the same two clients shows what a lone sender pays.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

import redis

from benchmarks.harness import Row, Target, alternate, cost_rows, timed
from benchmarks.workload import (
    RAW_SEND_CHANNEL,
    SEND_NAMESPACE,
    Order,
    payload,
    payload_signal,
    raw_message,
)
from sigbroker import Client

#: Sending threads (issue 4: 8).
THREADS = 8
#: Longest a round of threaded sends may take.
ROUND_TIMEOUT_S = 60.0


def run_threads(send: Callable[[], object], threads: int, per_thread: int) -> float:
    """Release ``threads`` threads together, each calling ``send`` ``per_thread`` times; msg/s."""
    barrier = threading.Barrier(threads + 1, timeout=ROUND_TIMEOUT_S)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                send()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    gc.collect()
    gc.disable()
    try:
        barrier.wait()
        start = time.perf_counter()
        for thread in pool:
            thread.join(ROUND_TIMEOUT_S)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if errors:
        raise RuntimeError(f"a sending thread failed: {errors[0]!r}") from errors[0]
    if any(thread.is_alive() for thread in pool):
        raise RuntimeError(f"sending threads still running after {ROUND_TIMEOUT_S:.0f}s")
    return threads * per_thread / elapsed


def thread_rows(url: str, *, rounds: int, per_thread: int, calls: int) -> list[Row]:
    """Figure 8: 8 threads on one Client vs 8 threads on one redis-py pool, and 1 thread each."""
    client = Client(url, namespace=SEND_NAMESPACE)
    raw = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url))
    kwargs = payload()

    def ours() -> object:
        return client.send(payload_signal, sender=Order, **kwargs)

    def base() -> object:
        return raw.publish(RAW_SEND_CHANNEL, raw_message(kwargs))

    try:
        threaded = alternate(
            {
                "sigbroker": lambda: run_threads(ours, THREADS, per_thread),
                "raw": lambda: run_threads(base, THREADS, per_thread),
            },
            rounds,
        )
        single = alternate(
            {"sigbroker": lambda: timed(ours, calls), "raw": lambda: timed(base, calls)}, rounds
        )
    finally:
        client.close()
        raw.close()
    return [
        Row(
            "8. threads",
            f"{THREADS} threads, one Client.send",
            "msg/s",
            threaded["sigbroker"],
            threaded["raw"],
            f"{THREADS} threads, one redis-py pool",
            [Target("ratio", ">=", 3.0)],
        ),
        *cost_rows(
            "8. threads",
            "1 thread, same Client.send",
            single["sigbroker"],
            single["raw"],
            "1 thread, same redis-py pool",
            [Target("ratio", "<=", 1.10)],
        ),
    ]
