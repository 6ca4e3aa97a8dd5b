"""Figures 1 and 2: the cost of one send, and the throughput of batched sends.

Both sides publish to channels nobody subscribes to, so PUBLISH costs the same
on the server and the figure is the client's own work: encoding, the command,
the round trip. sigbroker sends through ``Signal.send`` with the default client
that ``sigbroker.configure()`` sets up; raw redis-py calls ``Redis.publish`` with
a dict packed by ``msgpack.packb`` in the same call.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

import sigbroker
from benchmarks.harness import Row, Target, Timing, alternate, cost_rows, seconds_per_call, timed
from benchmarks.workload import (
    RAW_SEND_CHANNEL,
    SEND_NAMESPACE,
    Order,
    declared_signal,
    payload,
    payload_signal,
    raw_message,
)
from sigbroker import Client, Signal

#: The secret of the signed variant.
SECRET = "benchmark-secret"
#: Messages per batch (issue 4: batches of 100).
BATCH_SIZE = 100

_SEND_TARGET = Target("ratio", "<=", 1.10)
_SIGNED_TARGET = Target("ratio", "<=", 1.25)


def _send_variant(
    url: str, signal: Signal, secret: str | None, rounds: int, calls: int
) -> tuple[list[Timing], list[Timing]]:
    sigbroker.configure(url=url, namespace=SEND_NAMESPACE, secret=secret or "", eager=False)
    kwargs = payload()
    raw = redis.Redis.from_url(url)
    try:

        def ours() -> Timing:
            return timed(lambda: signal.send(sender=Order, **kwargs), calls)

        def base() -> Timing:
            return timed(lambda: raw.publish(RAW_SEND_CHANNEL, raw_message(kwargs)), calls)

        result = alternate({"sigbroker": ours, "raw": base}, rounds)
    finally:
        raw.close()
        sigbroker.configure(url=url, namespace=SEND_NAMESPACE, secret="")
    return result["sigbroker"], result["raw"]


def send_rows(url: str, *, rounds: int, calls: int, hiredis: bool, full: bool) -> list[Row]:
    """Figure 1: ``Signal.send`` vs ``Redis.publish``, per call.

    ``full`` adds the variant with ``providing_args`` (checked at every send);
    ``hiredis`` only labels the rows: the caller decides whether hiredis loads.
    """
    parser = "hiredis" if hiredis else "no hiredis"
    variants: list[tuple[str, Signal, str | None, Target]] = [
        (f"Signal.send, {parser}, unsigned", payload_signal, None, _SEND_TARGET),
        (f"Signal.send, {parser}, signed", payload_signal, SECRET, _SIGNED_TARGET),
    ]
    if full:
        variants.insert(
            1,
            (
                f"Signal.send, {parser}, unsigned, providing_args",
                declared_signal,
                None,
                _SEND_TARGET,
            ),
        )
    rows = []
    for label, signal, secret, target in variants:
        ours, base = _send_variant(url, signal, secret, rounds, calls)
        base_label = f"redis-py publish + packb ({parser})"
        rows += cost_rows("1. send cost", label, ours, base, base_label, [target])
    return rows


def batch_rows(url: str, *, rounds: int, batches: int) -> list[Row]:
    """Figure 2: ``Client.batch()`` of 100 sends vs a redis-py pipeline of 100 publishes."""
    client = Client(url, namespace=SEND_NAMESPACE)
    raw = redis.Redis.from_url(url)
    kwargs = payload()
    messages = batches * BATCH_SIZE

    def ours_batch() -> None:
        with client.batch() as batch:
            for _ in range(BATCH_SIZE):
                batch.send(payload_signal, sender=Order, **kwargs)

    def raw_batch() -> None:
        pipe = raw.pipeline(transaction=False)
        for _ in range(BATCH_SIZE):
            pipe.publish(RAW_SEND_CHANNEL, raw_message(kwargs))
        pipe.execute()

    def rate(one_batch: Callable[[], None]) -> Callable[[], float]:
        return lambda: messages / (seconds_per_call(one_batch, batches) * batches)

    try:
        result = alternate({"sigbroker": rate(ours_batch), "raw": rate(raw_batch)}, rounds)
    finally:
        client.close()
        raw.close()
    return [
        Row(
            "2. batch send",
            f"Client.batch(), {BATCH_SIZE} sends per batch",
            "msg/s",
            result["sigbroker"],
            result["raw"],
            "redis-py pipeline(transaction=False)",
            [Target("ratio", ">=", 0.90)],
        )
    ]
