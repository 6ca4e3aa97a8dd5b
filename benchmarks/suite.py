"""The whole benchmark: one redis-server, the figures in order, every process stopped.

The sending figures (1, 2, 7, 8, 9 and 10's send cost) run first, each group in
a fresh process, while nothing else runs. Then the consumers start (the
sigbroker worker, a second one with ``--concurrency 4``, the raw redis-py loop,
a Celery worker) and the figures that need them run: latency (4), Celery (6),
throughput (3) and memory (5). Those stop, and the durable consumers of figure
10 start (a ``--group`` worker, the raw XREADGROUP loop, FastStream): durable
latency and drain. Whatever fails, every subprocess and the server are stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from benchmarks import celery_bench, durable
from benchmarks.feeder import Feeder
from benchmarks.harness import Row, misses, summary, table
from benchmarks.latency import latency_rows
from benchmarks.machine import describe, load_average
from benchmarks.processes import (
    ROOT,
    BenchmarkError,
    Reports,
    Subscriber,
    clean_environment,
    raw_subscriber,
    sigbroker_worker,
    supervised,
)
from benchmarks.readme import write_readme
from benchmarks.sender import WITHOUT_HIREDIS
from benchmarks.worker import (
    Consumer,
    capture_sigbroker_messages,
    memory_rows,
    raw_messages,
    rss_readings,
    throughput_rows,
)
from benchmarks.workload import (
    NAMESPACE,
    RAW_LATENCY_CHANNEL,
    RAW_PAYLOAD_CHANNEL,
    channel,
    latency_signal,
    payload_signal,
)
from sigbroker.devserver import DevServer
from sigbroker.errors import SigbrokerError

#: Longest a sending-figures subprocess may run.
SENDER_TIMEOUT_S = 150.0
#: Messages between two count reports of a consumer.
REPORT_EVERY = 5_000
#: Namespace of the ``--concurrency 4`` worker (its own channels, the same messages).
C4_NAMESPACE = "bench-c4"
#: Pause after the consumers subscribed, before their idle memory is read.
SETTLE_S = 0.5


@dataclass(frozen=True)
class Plan:
    """How much each figure runs: the default fits ``make bench`` in under 3 minutes."""

    rounds: int = 7
    send_calls: int = 2000
    batches: int = 100
    per_thread: int = 500
    codec_calls: int = 5000
    worker_rounds: int = 5
    latency_per_round: int = 1000
    celery_calls: int = 500
    celery_per_round: int = 1000  # as latency_per_round: figures 4 and 6 measure alike
    drain_messages: int = 100_000
    memory_total: int = 1_000_000
    durable_backlog: int = 20_000  # issue 11: a 20,000-message backlog
    faststream_rounds: int = 3  # FastStream drains ~5k msg/s: 4 s a round


#: A short run to check that everything works (about 40 s); its numbers are rough.
QUICK = replace(
    Plan(),
    rounds=5,
    send_calls=500,
    batches=20,
    per_thread=200,
    codec_calls=1000,
    latency_per_round=200,
    celery_calls=100,
    celery_per_round=50,
    drain_messages=20_000,
    memory_total=200_000,
    durable_backlog=10_000,
    faststream_rounds=1,
)


class Progress:
    """Progress lines on stderr, with the time since the start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, what: str) -> None:
        print(f"[{time.perf_counter() - self.start:5.1f}s] {what}", file=sys.stderr, flush=True)


def sender_figures(url: str, plan: Plan, *, hiredis: bool, figures: str) -> list[Row]:
    """Run figures in a fresh ``benchmarks.sender`` process, with or without hiredis."""
    start = ["-m", "benchmarks.sender"] if hiredis else ["-c", WITHOUT_HIREDIS]
    options = {
        "--figures": figures,
        "--rounds": plan.rounds,
        "--send-calls": plan.send_calls,
        "--batches": plan.batches,
        "--per-thread": plan.per_thread,
        "--codec-calls": plan.codec_calls,
    }
    args = [sys.executable, *start, url, *(str(x) for kv in options.items() for x in kv)]
    proc = subprocess.run(
        args,
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=SENDER_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchmarkError(f"the sending figures ({figures}) failed:\n{proc.stderr[-3000:]}")
    data = json.loads(proc.stdout)
    if data["hiredis"] != hiredis:
        raise BenchmarkError(f"expected hiredis {'loaded' if hiredis else 'absent'}, it was not")
    return [Row.from_json(row) for row in data["rows"]]


@contextlib.contextmanager
def consumers(url: str, with_celery: bool) -> Iterator[dict[str, Subscriber]]:
    """Start every consuming process, wait until each listens, stop them all on exit."""
    with supervised() as subs:
        for name, namespace, concurrency in (
            ("sigbroker", NAMESPACE, 1),
            ("sigbroker-c4", C4_NAMESPACE, 4),
        ):
            subs[name] = sigbroker_worker(
                url,
                name,
                namespace=namespace,
                concurrency=concurrency,
                every=REPORT_EVERY,
                report_url=url,
            )
        subs["raw"] = raw_subscriber(url, "raw", every=REPORT_EVERY, report_url=url)
        if with_celery:
            subs["celery"] = celery_bench.start_worker(url, url)
        for name, namespace in (("sigbroker", NAMESPACE), ("sigbroker-c4", C4_NAMESPACE)):
            subs[name].wait_subscribed(
                url, [channel(payload_signal, namespace), channel(latency_signal, namespace)]
            )
        subs["raw"].wait_subscribed(url, [RAW_PAYLOAD_CHANNEL, RAW_LATENCY_CHANNEL])
        yield subs


def consumer_figures(url: str, plan: Plan, with_celery: bool, progress: Progress) -> list[Row]:
    """Figures 4, 6, 3 and 5, with the consumers running."""
    rows: list[Row] = []
    sources = ["sigbroker", "sigbroker-c4", "raw", "celery"]
    with contextlib.ExitStack() as stack:
        reports = Reports(url, sources)
        stack.callback(reports.close)
        feeder = Feeder(url)
        stack.callback(feeder.close)
        progress("starting the consumers")
        subs = stack.enter_context(consumers(url, with_celery))
        time.sleep(SETTLE_S)
        n = plan.drain_messages
        captured = capture_sigbroker_messages(url)
        ours = Consumer(
            subs["sigbroker"], channel(payload_signal, NAMESPACE), captured, n, sequenced=True
        )
        ours.rss_idle = rss_readings(ours.sub)
        raw = Consumer(subs["raw"], RAW_PAYLOAD_CHANNEL, raw_messages(), n)
        raw.rss_idle = rss_readings(raw.sub)
        # For context only, and slow: a quarter of the messages keeps its rounds short.
        c4_drain = max(REPORT_EVERY, n // 4 // REPORT_EVERY * REPORT_EVERY)
        c4 = Consumer(
            subs["sigbroker-c4"],
            channel(payload_signal, C4_NAMESPACE),
            captured,
            c4_drain,
            sequenced=True,
        )

        progress("figure 4: end-to-end latency")
        rows += latency_rows(
            url, reports, rounds=plan.worker_rounds, per_round=plan.latency_per_round
        )

        progress("figure 6: Celery")
        rows += _celery(url, plan, subs.get("celery"), reports)

        progress("figure 3: worker throughput")
        rows += throughput_rows(
            {"sigbroker": ours, "raw": raw, "sigbroker-c4": c4},
            feeder,
            reports,
            rounds=plan.worker_rounds,
        )
        progress(f"figure 5: worker memory ({plan.memory_total:,} messages)")
        rows += memory_rows(ours, raw, feeder, reports, total=plan.memory_total)
        progress("stopping the consumers")
    return rows


def _celery(url: str, plan: Plan, worker: Subscriber | None, reports: Reports) -> list[Row]:
    if worker is None:
        reason = celery_bench.MISSING if not celery_bench.available() else "skipped (--no-celery)"
        return celery_bench.missing_rows(reason)
    celery_bench.wait_ready(url, worker, reports)
    return celery_bench.celery_rows(
        url,
        reports,
        rounds=plan.worker_rounds,
        calls=plan.celery_calls,
        per_round=plan.celery_per_round,
    )


def measure(
    plan: Plan, *, with_celery: bool, progress: Progress
) -> tuple[dict[str, str], list[Row]]:
    """Start a redis-server, run every figure, return the header and the rows."""
    with DevServer(backend="redis-server") as server, redis.Redis.from_url(server.url) as admin:
        url = server.url
        # A frozen subscriber must not be disconnected while messages pile up for it.
        admin.config_set("client-output-buffer-limit", "pubsub 0 0 0")
        header = describe(str(admin.info("server")["redis_version"]))
        progress(f"redis-server {header['Redis server']} on {url}")
        progress("figures 7, 1, 2, 8, 10: codec, send cost, batch, threads, durable send")
        rows = sender_figures(url, plan, hiredis=True, figures="codec,send,batch,threads,durable")
        progress("figure 1: send cost (without hiredis)")
        rows += sender_figures(url, plan, hiredis=False, figures="send")
        progress("figure 9: Django model instance vs dict (a process with Django set up)")
        rows += sender_figures(url, plan, hiredis=True, figures="django")
        rows += consumer_figures(url, plan, with_celery, progress)
        rows += durable.consumer_rows(
            url,
            backlog=plan.durable_backlog,
            rounds=plan.worker_rounds,
            faststream_rounds=plan.faststream_rounds,
            latency_per_round=plan.latency_per_round,
            every=REPORT_EVERY,
            progress=progress,
        )
    return header, rows


_ORDER = ["1.", "2.", "3.", "4.", "5.", "6.", "7.", "8.", "9.", "10"]


def _sorted(rows: list[Row]) -> list[Row]:
    # Stable: within a figure the rows keep the order they were measured in.
    return sorted(rows, key=lambda row: _ORDER.index(row.figure[:2]))


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line of ``benchmarks/run.py``."""
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run to check the harness")
    parser.add_argument("--no-celery", action="store_true", help="skip figure 6")
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "benchmarks",
        help="where README.md and results.json go (default: benchmarks/)",
    )
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    """Run the benchmark; print the table and write README.md and results.json."""
    args = parse(argv)
    plan = QUICK if args.quick else Plan()
    with_celery = not args.no_celery and celery_bench.available()
    progress = Progress()
    load_at_start = load_average()
    try:
        header, rows = measure(plan, with_celery=with_celery, progress=progress)
    except (
        BenchmarkError,
        SigbrokerError,
        redis.RedisError,
        OSError,
        subprocess.SubprocessError,
    ) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    rows = _sorted(rows)
    header["load average (1 min)"] = f"{load_at_start} at the start, {load_average()} at the end"
    header["runtime"] = f"{time.perf_counter() - progress.start:.0f} s" + (
        " (--quick)" if args.quick else ""
    )
    passed, total = summary(rows)
    text = table(rows)
    print("\n".join(f"{k}: {v}" for k, v in header.items()))
    print()
    print(text)
    print(f"\ntargets met: {passed} of {total}")
    for line in misses(rows):
        print(f"  MISS {line}")
    args.output.mkdir(parents=True, exist_ok=True)
    write_readme(args.output / "README.md", header, text, (passed, total), plan.__dict__)
    results: dict[str, Any] = {
        "header": header,
        "plan": plan.__dict__,
        "rows": [row.as_dict() for row in rows],
    }
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0
