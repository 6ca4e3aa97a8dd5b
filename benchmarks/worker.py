"""Figures 3 and 5: how fast one worker process drains messages, and its memory.

Throughput: the consumer is frozen with SIGSTOP, N messages are queued in
Redis (its pub/sub output buffer limit is lifted for this), and the clock runs
from SIGCONT until the receiver reports the N-th message. The sigbroker worker
and the raw redis-py loop get the same feeder, the same number of distinct
messages and the same report path; only what each does with a message differs.

Memory: resident set size (``VmRSS``) of the consumer process after startup,
and again once it has handled 10^6 messages (those of the throughput rounds
included), fed as fast as the feeder can.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from benchmarks.feeder import Feeder
from benchmarks.harness import Row, Target, alternate
from benchmarks.processes import BenchmarkError, Reports, Subscriber
from benchmarks.workload import Order, channel, payload, payload_signal, raw_message
from sigbroker import Client

#: Distinct messages each consumer cycles through (ids, order ids and send times differ).
DISTINCT_MESSAGES = 1000
#: Slowest drain rate allowed before a wait gives up (messages per second).
MIN_RATE = 5_000
#: RSS samples taken for one memory reading, and the pause between them.
RSS_SAMPLES, RSS_INTERVAL_S = 5, 0.05
#: Namespace that captured messages are sent under (nobody else listens there).
CAPTURE_NAMESPACE = "bench-capture"


@dataclass
class Consumer:
    """A consuming subprocess, where its payload messages go, and what it has handled."""

    sub: Subscriber
    channel: str
    messages: list[bytes]
    #: Messages queued per throughput round (a multiple of the subscriber's report interval).
    drain: int = 100_000
    counted: int = 0
    rss_idle: list[float] = field(default_factory=list)
    #: Whether ``messages`` are sigbroker's: each copy published gets the next sequence number.
    sequenced: bool = False
    published: int = 0

    def publish(self, feeder: Feeder, total: int) -> None:
        """Queue ``total`` more messages for this consumer."""
        first = self.published + 1 if self.sequenced else None
        feeder.publish(self.channel, self.messages, total, first_seq=first)
        self.published += total


def capture_sigbroker_messages(url: str, count: int = DISTINCT_MESSAGES) -> list[bytes]:
    """Real sigbroker messages of the payload signal, made by the public API.

    They are sent with ``Client.batch()`` on a namespace nobody else listens to
    and read back raw from the channel, so the feeder can replay them to a
    worker exactly as ``Signal.send`` makes them, whatever the codec's internals.
    """
    r = redis.Redis.from_url(url)
    pubsub = r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(channel(payload_signal, CAPTURE_NAMESPACE))
        while not pubsub.subscribed:
            pubsub.get_message(timeout=1.0)
        with Client(url, namespace=CAPTURE_NAMESPACE) as client, client.batch() as batch:
            for i in range(count):
                batch.send(payload_signal, sender=Order, **payload(i))
        captured: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(captured) < count:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"captured only {len(captured)} of {count} messages")
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                captured.append(message["data"])
        return captured
    finally:
        pubsub.close()
        r.close()


def raw_messages(count: int = DISTINCT_MESSAGES) -> list[bytes]:
    """The raw side's messages: the same payloads, packed the raw way."""
    return [raw_message(payload(i)) for i in range(count)]


def rss_readings(sub: Subscriber) -> list[float]:
    """A few readings of a process's resident memory, in bytes."""
    readings = []
    for _ in range(RSS_SAMPLES):
        readings.append(float(sub.rss_bytes()))
        time.sleep(RSS_INTERVAL_S)
    return readings


def _drain_round(consumer: Consumer, feeder: Feeder, reports: Reports) -> float:
    n = consumer.drain
    consumer.sub.pause()
    try:
        consumer.publish(feeder, n)
    finally:
        start = time.perf_counter()
        consumer.sub.resume()
    target = consumer.counted + n
    end = reports.wait_count(consumer.sub.name, target, 30 + n / MIN_RATE)
    consumer.counted = target
    return n / (end - start)


def throughput_rows(
    consumers: dict[str, Consumer], feeder: Feeder, reports: Reports, *, rounds: int
) -> list[Row]:
    """Figure 3: drain rate of each consumer, in alternating rounds.

    ``consumers`` holds ``"sigbroker"`` and ``"raw"``, and optionally
    ``"sigbroker-c4"`` (a worker with ``--concurrency 4``, for context).
    """
    sides = {name: (lambda c=c: _drain_round(c, feeder, reports)) for name, c in consumers.items()}
    result = alternate(sides, rounds)
    fig = "3. worker throughput"
    base_label = "redis-py PubSub.get_message loop + unpackb"
    rows = [
        Row(
            fig,
            "worker --concurrency 1, no-op receiver",
            "msg/s",
            result["sigbroker"],
            result["raw"],
            base_label,
            [Target("ratio", ">=", 1.5), Target("value", ">=", 140_000)],
        )
    ]
    if "sigbroker-c4" in result:
        rows.append(
            Row(
                fig,
                "worker --concurrency 4 (thread pool), for context",
                "msg/s",
                result["sigbroker-c4"],
                result["raw"],
                base_label,
            )
        )
    return rows


def _feed_to(consumer: Consumer, feeder: Feeder, reports: Reports, total: int) -> None:
    remaining = total - consumer.counted
    if remaining > 0:
        consumer.publish(feeder, remaining)
        reports.wait_count(consumer.sub.name, total, 60 + remaining / MIN_RATE)
        consumer.counted = total


def memory_rows(
    ours: Consumer, raw: Consumer, feeder: Feeder, reports: Reports, *, total: int
) -> list[Row]:
    """Figure 5: RSS idle (read at startup) and after ``total`` messages in all."""
    after: dict[str, list[float]] = {}
    for name, consumer in (("sigbroker", ours), ("raw", raw)):
        _feed_to(consumer, feeder, reports, total)
        after[name] = rss_readings(consumer.sub)

    def growth(consumer: Consumer, readings: Sequence[float]) -> list[float]:
        idle = sorted(consumer.rss_idle)[len(consumer.rss_idle) // 2]
        return [r - idle for r in readings]

    fig = "5. worker memory"
    base_label = "raw redis-py loop"
    return [
        Row(
            fig,
            "RSS idle, after startup",
            "MB",
            ours.rss_idle,
            raw.rss_idle,
            base_label,
            [Target("value", "<=", 40e6)],
        ),
        Row(
            fig, f"RSS after {total:,} messages", "MB", after["sigbroker"], after["raw"], base_label
        ),
        Row(
            fig,
            f"RSS growth after {total:,} messages",
            "MB",
            growth(ours, after["sigbroker"]),
            growth(raw, after["raw"]),
            base_label,
            [Target("value", "<=", 5e6)],
            compare=False,
        ),
    ]
