"""Where the worker's time goes: a py-spy profile of a worker draining a backlog.

``make profile`` (or ``python -m benchmarks.profile``) starts its own
``redis-server``, a ``sigbroker worker`` with the benchmark's no-op receiver
(the process of figure 3), freezes it, queues more messages than it can drain
in the sampling window, then samples it with py-spy from the moment it
resumes. It prints the lines that take the most samples themselves and the
functions that take the most in all, and keeps the raw stacks (collapsed
format, for flamegraph tools) in ``benchmarks/profile.txt``. With
``--durable`` it profiles figure 10's worker instead (``--group bench``, durable
signals), frozen while the backlog is appended to its stream.

py-spy comes with the ``bench`` extra. It reads the worker's memory with
ptrace: as root, or where ``kernel.yama.ptrace_scope`` is 0.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import redis

from benchmarks.feeder import Feeder
from benchmarks.processes import ROOT, BenchmarkError, sigbroker_worker
from benchmarks.worker import capture_sigbroker_messages
from benchmarks.workload import NAMESPACE, channel, latency_signal, payload_signal
from sigbroker.devserver import DevServer

#: Messages queued before sampling: more than the worker drains in the window.
BACKLOG_PER_SECOND = 250_000
#: The same for the durable worker (a stream keeps every entry: Redis memory grows).
DURABLE_BACKLOG_PER_SECOND = 100_000
#: Sampling rate (samples per second).
RATE = 500
#: Rows printed per table.
TOP = 20
#: How much longer than the window py-spy may take before it is stopped.
GRACE_S = 30.0
#: Time given to py-spy to attach before the frozen worker resumes.
ATTACH_S = 0.5


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument(
        "--seconds", type=_seconds, default=6, help="sampling window, 1 to 60 (default 6)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "benchmarks" / "profile.txt",
        help="where the raw stacks go (default: benchmarks/profile.txt)",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="profile the durable worker of figure 10 (--group) draining a stream",
    )
    return parser.parse_args(argv)


def _seconds(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds from 1 to 60")
    return int(text)


def py_spy() -> str:
    """The py-spy executable next to this Python, or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchmarkError("py-spy is not installed: pip install -e '.[bench]'")
    return found


def sample(pid: int, seconds: int, output: Path, resume: Callable[[], None]) -> None:
    """Start py-spy on ``pid``, let it attach, call ``resume``; wait for the samples."""
    args = [py_spy(), "record", "-p", str(pid), "-d", str(seconds), "-r", str(RATE)]
    args += ["--gil", "--format", "raw", "-o", str(output)]  # --gil: threads that run
    spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(ATTACH_S)  # py-spy says nothing when it has attached
        resume()
        _, err = spy.communicate(timeout=seconds + GRACE_S)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"py-spy did not finish within {seconds + GRACE_S:.0f}s") from None
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode != 0 or not output.exists():
        raise BenchmarkError(f"py-spy failed: {err.decode(errors='replace').strip()}")


def summarize(lines: Iterable[str]) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Total samples, the top lines by own samples, the top functions by all their samples.

    ``lines`` are py-spy's collapsed stacks: ``frame;frame;...;frame COUNT``,
    each frame ``function (file:line)``.
    """
    own: collections.Counter[str] = collections.Counter()
    total_of: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for function in {frame.rsplit(":", 1)[0] for frame in frames}:
            total_of[function] += n
    # The frames above the read loop are in every sample: they say nothing.
    everywhere = max(total_of.values(), default=0)
    callers = collections.Counter({f: n for f, n in total_of.items() if n < everywhere})
    return total, own.most_common(TOP), callers.most_common(TOP)


def _profile_pubsub(url: str, args: argparse.Namespace) -> None:
    feeder = Feeder(url)
    worker = sigbroker_worker(
        url, "sigbroker", namespace=NAMESPACE, concurrency=1, every=10_000, report_url=url
    )
    try:
        worker.wait_subscribed(
            url, [channel(payload_signal, NAMESPACE), channel(latency_signal, NAMESPACE)]
        )
        messages = capture_sigbroker_messages(url)
        worker.pause()
        feeder.publish(
            channel(payload_signal, NAMESPACE),
            messages,
            BACKLOG_PER_SECOND * args.seconds,
            first_seq=1,
        )
        sample(worker.pid, args.seconds, args.output, worker.resume)
    finally:
        worker.stop()
        feeder.close()


def _profile_durable(url: str, args: argparse.Namespace) -> None:
    # Imported here: figure 10's module needs the durable signals of sigbroker's core.
    from benchmarks import durable
    from benchmarks.durable_workload import (
        DURABLE_NAMESPACE,
        GROUP,
        durable_latency_signal,
        durable_payload_signal,
        stream,
    )

    feeder = Feeder(url)
    worker = sigbroker_worker(
        url,
        durable.SIGBROKER,
        namespace=DURABLE_NAMESPACE,
        concurrency=1,
        every=10_000,
        report_url=url,
        app="benchmarks.durable_receivers",
        options=["--group", GROUP],
    )
    try:
        streams = [
            stream(s, DURABLE_NAMESPACE) for s in (durable_payload_signal, durable_latency_signal)
        ]
        durable.wait_groups(url, worker, streams)
        messages = durable.capture_durable_messages(url)
        worker.pause()
        backlog = DURABLE_BACKLOG_PER_SECOND * args.seconds
        # MAXLEN above the backlog: nothing unread may be trimmed (it would count as lost).
        feeder.append(streams[0], messages, backlog, maxlen=backlog + 1000, first_seq=1)
        sample(worker.pid, args.seconds, args.output, worker.resume)
    finally:
        worker.stop()
        feeder.close()


def main(argv: list[str]) -> int:
    """Profile the worker; print the tables."""
    args = parse(argv)
    with DevServer(backend="redis-server") as server, redis.Redis.from_url(server.url) as admin:
        admin.config_set("client-output-buffer-limit", "pubsub 0 0 0")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.unlink(missing_ok=True)
        if args.durable:
            _profile_durable(server.url, args)
        else:
            _profile_pubsub(server.url, args)
    total, own, inclusive = summarize(args.output.read_text().splitlines())
    if not total:
        raise BenchmarkError(f"py-spy took no samples of the worker ({args.output} is empty)")
    print(f"{total} samples of the worker over {args.seconds} s: {args.output}")
    print("\nlines by their own samples:")
    for frame, n in own:
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\nfunctions by all their samples (callees included; not those in every sample):")
    for function, n in inclusive:
        print(f"  {100 * n / total:5.1f}%  {function})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchmarkError as exc:
        print(f"profile failed: {exc}", file=sys.stderr)
        sys.exit(1)
