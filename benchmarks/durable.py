"""Figure 10: durable signals (Redis Streams) against raw redis-py on the same streams.

* **Send cost**: ``Signal(durable=True).send`` against ``Redis.xadd(stream,
  {"d": msgpack.packb(...)}, maxlen=100_000, approximate=True)``, on streams
  nobody consumes (run in the fresh sending process, as figure 1).
* **Drain**: one consumer process, frozen with SIGSTOP while a backlog of N
  entries is appended to its stream (its consumer group exists already, at the
  stream's end), then the clock runs from SIGCONT until the receiver reports
  the N-th message, as in figure 3. sigbroker: ``sigbroker worker -A
  benchmarks.durable_receivers --group bench --concurrency 1``; raw:
  :mod:`benchmarks.raw_stream_consumer`. The process's CPU time over the round
  is read from its CPU-time clock; per message it is a row for context.
* **Latency**: durable send -> receiver against ``XADD`` -> the raw loop, one
  message at a time (the method of figure 4).
* **FastStream**, for context: its Redis Streams subscriber with a consumer
  group (:mod:`benchmarks.faststream_consumer`) on the same drain.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import redis

import sigbroker
from benchmarks.durable_workload import (
    DURABLE_NAMESPACE,
    FASTSTREAM_FIELD,
    FASTSTREAM_STREAM,
    FIELD,
    GROUP,
    MAXLEN,
    RAW_LATENCY_STREAM,
    RAW_PAYLOAD_STREAM,
    RAW_SEND_STREAM,
    durable_latency_signal,
    durable_payload_signal,
    stream,
)
from benchmarks.feeder import Feeder
from benchmarks.harness import Row, Target, Timing, alternate, cost_rows, timed
from benchmarks.latency import latency_round, percentile_rows
from benchmarks.processes import (
    BenchmarkError,
    Reports,
    Subscriber,
    sigbroker_worker,
    supervised,
    wait_until,
)
from benchmarks.worker import DISTINCT_MESSAGES, MIN_RATE
from benchmarks.workload import SEND_NAMESPACE, Order, payload, raw_message
from sigbroker import Client

FIGURE = "10. durable"
#: Report sources (the report channels) of figure 10's consumers.
SIGBROKER, RAW, FASTSTREAM = "sigbroker-durable", "raw-stream", "faststream"
#: Namespace that captured durable messages are sent under (no group reads it).
CAPTURE_NAMESPACE = "bench-durable-capture"
#: Longest a consumer may take to create its consumer groups.
START_TIMEOUT_S = 60.0
#: Why the FastStream rows are empty when it is not installed.
FASTSTREAM_MISSING = "FastStream not installed (pip install -e '.[bench]')"

_SEND_TARGET = Target("ratio", "<=", 1.15)
_DRAIN_TARGET = Target("ratio", ">=", 1.0)
_LATENCY_TARGET = Target("ratio", "<=", 1.30)
_RAW_DRAIN = "redis-py XREADGROUP COUNT 100 loop + unpackb + types, XACK per batch"


def faststream_available() -> bool:
    """Whether FastStream's Redis broker can be imported (the ``bench`` extra)."""
    return importlib.util.find_spec("faststream") is not None


# --- send cost (runs in the sending process, see benchmarks.sender) -----------------


def send_rows(url: str, *, rounds: int, calls: int, hiredis: bool) -> list[Row]:
    """Durable ``Signal.send`` vs ``Redis.xadd`` of the raw message, per call."""
    sigbroker.configure(url=url, namespace=SEND_NAMESPACE, secret="", eager=False)
    kwargs = payload()
    raw = redis.Redis.from_url(url)
    try:

        def ours() -> Timing:
            return timed(lambda: durable_payload_signal.send(sender=Order, **kwargs), calls)

        def base() -> Timing:
            return timed(
                lambda: raw.xadd(
                    RAW_SEND_STREAM,
                    {FIELD: raw_message(kwargs)},
                    maxlen=MAXLEN,
                    approximate=True,
                ),
                calls,
            )

        result = alternate({"sigbroker": ours, "raw": base}, rounds)
    finally:
        raw.close()
    parser = "hiredis" if hiredis else "no hiredis"
    return cost_rows(
        FIGURE,
        f"Signal(durable=True).send, {parser}, unsigned",
        result["sigbroker"],
        result["raw"],
        f"redis-py xadd(maxlen=~100k) + packb ({parser})",
        [_SEND_TARGET],
    )


# --- consumers ---------------------------------------------------------------------


@dataclass
class StreamConsumer:
    """A consuming subprocess, the stream its payload goes to, and what it has handled."""

    sub: Subscriber
    stream: str
    messages: list[bytes]
    field: str = FIELD
    #: Whether ``messages`` are sigbroker's: each copy appended gets the next sequence number.
    sequenced: bool = False
    appended: int = 0
    counted: int = 0

    def fill(self, feeder: Feeder, total: int) -> None:
        """Append ``total`` more entries to this consumer's stream."""
        first = self.appended + 1 if self.sequenced else None
        feeder.append(
            self.stream, self.messages, total, field=self.field, maxlen=MAXLEN, first_seq=first
        )
        self.appended += total


def wait_groups(url: str, sub: Subscriber, streams: Sequence[str]) -> None:
    """Wait until group :data:`GROUP` exists on each of ``streams`` (the consumer made it).

    From then on every entry appended reaches the group, whether or not the
    consumer has sent its first read yet (Redis 7.0 lists a consumer only
    after a read of it returned).
    """
    with redis.Redis.from_url(url) as r:

        def ready() -> bool:
            sub.check_alive()
            for name in streams:
                try:
                    groups = r.xinfo_groups(name)
                except redis.ResponseError:  # no such key yet
                    return False
                if not any(g["name"] == GROUP.encode() for g in groups):
                    return False
            return True

        wait_until(ready, START_TIMEOUT_S, f"{sub.name} to create group {GROUP}")


@contextlib.contextmanager
def consumers(url: str, *, every: int, with_faststream: bool) -> Iterator[dict[str, Subscriber]]:
    """Start figure 10's consumers, wait until their groups exist, stop them all on exit."""
    with supervised() as subs:
        subs[SIGBROKER] = sigbroker_worker(
            url,
            SIGBROKER,
            namespace=DURABLE_NAMESPACE,
            concurrency=1,
            every=every,
            report_url=url,
            app="benchmarks.durable_receivers",
            options=["--group", GROUP],
        )
        subs[RAW] = Subscriber(
            RAW,
            [sys.executable, "-m", "benchmarks.raw_stream_consumer", url, GROUP],
            report_url=url,
            every=every,
        )
        if with_faststream:
            subs[FASTSTREAM] = Subscriber(
                FASTSTREAM,
                [sys.executable, "-m", "benchmarks.faststream_consumer", url, GROUP],
                report_url=url,
                every=every,
            )
        signals = (durable_payload_signal, durable_latency_signal)
        wait_groups(url, subs[SIGBROKER], [stream(s, DURABLE_NAMESPACE) for s in signals])
        wait_groups(url, subs[RAW], [RAW_PAYLOAD_STREAM, RAW_LATENCY_STREAM])
        if with_faststream:
            wait_groups(url, subs[FASTSTREAM], [FASTSTREAM_STREAM])
        yield subs


def capture_durable_messages(url: str, count: int = DISTINCT_MESSAGES) -> list[bytes]:
    """Real durable messages of the payload signal, made by ``Client.batch()``.

    Sent on a namespace no group reads and read back from the stream's ``d``
    fields (then the stream is deleted), so the feeder can append them to the
    worker's stream exactly as a durable send does.
    """
    key = stream(durable_payload_signal, CAPTURE_NAMESPACE)
    with Client(url, namespace=CAPTURE_NAMESPACE) as client, client.batch() as batch:
        for i in range(count):
            batch.send(durable_payload_signal, sender=Order, **payload(i))
    with redis.Redis.from_url(url) as r:
        entries = r.xrange(key)
        r.delete(key)
    captured = [fields[FIELD.encode()] for _, fields in entries]
    if len(captured) != count:
        raise BenchmarkError(f"captured {len(captured)} durable messages, expected {count}")
    return captured


# --- drain -------------------------------------------------------------------------


class Drained(NamedTuple):
    """One drain round: messages per second, and the consumer's CPU seconds per message."""

    rate: float
    cpu: float


def drain_round(consumer: StreamConsumer, n: int, feeder: Feeder, reports: Reports) -> Drained:
    """Freeze the consumer, append ``n`` entries, time it from SIGCONT to the n-th message."""
    consumer.sub.pause()
    try:
        consumer.fill(feeder, n)
    finally:
        cpu_start = consumer.sub.cpu_seconds()
        start = time.perf_counter()
        consumer.sub.resume()
    target = consumer.counted + n
    end = reports.wait_count(consumer.sub.name, target, 30 + n / MIN_RATE)
    cpu = consumer.sub.cpu_seconds() - cpu_start
    consumer.counted = target
    return Drained(n / (end - start), cpu / n)


def drain_rows(
    ours: StreamConsumer,
    raw: StreamConsumer,
    feeder: Feeder,
    reports: Reports,
    *,
    backlog: int,
    rounds: int,
) -> list[Row]:
    """The sigbroker worker against the raw loop, draining ``backlog`` entries per round."""
    result = alternate(
        {
            "sigbroker": lambda: drain_round(ours, backlog, feeder, reports),
            "raw": lambda: drain_round(raw, backlog, feeder, reports),
        },
        rounds,
    )
    return _drain_pair(
        f"worker --group, --concurrency 1, no-op receiver, {backlog:,} backlog",
        result["sigbroker"],
        result["raw"],
        _RAW_DRAIN,
        [_DRAIN_TARGET],
    )


def faststream_rows(
    ours: StreamConsumer,
    fast: StreamConsumer | None,
    feeder: Feeder,
    reports: Reports,
    *,
    backlog: int,
    rounds: int,
) -> list[Row]:
    """For context: the sigbroker worker against FastStream's stream subscriber, same drain."""
    label = f"worker --group drain, {backlog:,} backlog, against FastStream"
    base_label = "FastStream StreamSub(group=...) subscriber, ack per message"
    if fast is None:
        return [
            Row(FIGURE, label, "msg/s", [], [], base_label, missing=FASTSTREAM_MISSING),
            Row(
                FIGURE,
                f"{label} (CPU time per message)",
                "us",
                [],
                [],
                f"{base_label} (CPU time per message)",
                missing=FASTSTREAM_MISSING,
            ),
        ]
    # FastStream drains some 5k msg/s: no warm-up round of 20,000 more (its first
    # round comes after the groups and connections are up, as the others' do).
    result = alternate(
        {
            "sigbroker": lambda: drain_round(ours, backlog, feeder, reports),
            "faststream": lambda: drain_round(fast, backlog, feeder, reports),
        },
        rounds,
        warmup=False,
    )
    return _drain_pair(label, result["sigbroker"], result["faststream"], base_label, [])


def _drain_pair(
    label: str,
    ours: Sequence[Drained],
    base: Sequence[Drained],
    base_label: str,
    targets: list[Target],
) -> list[Row]:
    return [
        Row(
            FIGURE,
            label,
            "msg/s",
            [d.rate for d in ours],
            [d.rate for d in base],
            base_label,
            targets,
        ),
        Row(
            FIGURE,
            f"{label} (CPU time per message)",
            "us",
            [d.cpu for d in ours],
            [d.cpu for d in base],
            f"{base_label} (CPU time per message)",
        ),
    ]


# --- latency -----------------------------------------------------------------------


def latency_rows(url: str, reports: Reports, *, rounds: int, per_round: int) -> list[Row]:
    """Durable send -> receiver against raw XADD -> the raw XREADGROUP loop."""
    sigbroker.configure(url=url, namespace=DURABLE_NAMESPACE, secret="", eager=False)
    raw = redis.Redis.from_url(url)

    def ours(seq: int) -> object:
        return durable_latency_signal.send(sender=Order, **payload(seq))

    def base(seq: int) -> object:
        return raw.xadd(
            RAW_LATENCY_STREAM,
            {FIELD: raw_message(payload(seq))},
            maxlen=MAXLEN,
            approximate=True,
        )

    try:
        result = alternate(
            {
                "sigbroker": lambda: latency_round(ours, reports, SIGBROKER, per_round),
                "raw": lambda: latency_round(base, reports, RAW, per_round),
            },
            rounds,
        )
    finally:
        raw.close()
    return percentile_rows(
        FIGURE,
        "durable send -> receiver",
        result["sigbroker"],
        result["raw"],
        "redis-py xadd -> XREADGROUP loop",
        {"p50": _LATENCY_TARGET, "p99": _LATENCY_TARGET},
    )


# --- the figure --------------------------------------------------------------------


def consumer_rows(
    url: str,
    *,
    backlog: int,
    rounds: int,
    faststream_rounds: int,
    latency_per_round: int,
    every: int,
    progress: Callable[[str], None],
) -> list[Row]:
    """Figure 10's drain, latency and FastStream rows, with its consumers running."""
    with_faststream = faststream_available()
    sources = [SIGBROKER, RAW, FASTSTREAM]
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        reports = Reports(url, sources)
        stack.callback(reports.close)
        feeder = Feeder(url)
        stack.callback(feeder.close)
        progress("figure 10: starting the durable consumers")
        subs = stack.enter_context(consumers(url, every=every, with_faststream=with_faststream))
        captured = capture_durable_messages(url)
        raw_payloads = [raw_message(payload(i)) for i in range(DISTINCT_MESSAGES)]
        ours = StreamConsumer(
            subs[SIGBROKER],
            stream(durable_payload_signal, DURABLE_NAMESPACE),
            captured,
            sequenced=True,
        )
        raw = StreamConsumer(subs[RAW], RAW_PAYLOAD_STREAM, raw_payloads)
        progress("figure 10: durable end-to-end latency")
        rows += latency_rows(url, reports, rounds=rounds, per_round=latency_per_round)
        progress(f"figure 10: durable drain of {backlog:,} messages")
        rows += drain_rows(ours, raw, feeder, reports, backlog=backlog, rounds=rounds)
        fast = None
        if with_faststream:
            progress(f"figure 10: FastStream drain, {faststream_rounds} rounds (slow)")
            fast = StreamConsumer(
                subs[FASTSTREAM], FASTSTREAM_STREAM, raw_payloads, field=FASTSTREAM_FIELD
            )
        rows += faststream_rows(
            ours, fast, feeder, reports, backlog=backlog, rounds=faststream_rounds
        )
    return rows
