"""``sigbroker demo``: the whole thing end to end, in a few seconds.

Uses the configured Redis (``--url``, ``SIGBROKER_URL``, ``REDIS_URL``) or else
starts one on a free port (``redis-server`` from ``PATH``, else fakeredis),
runs ``sigbroker worker -A sigbroker.demo.receivers`` in a subprocess, sends
the sample signals from this process and one from another process, shows what
the worker's receivers printed, measures latency, and stops everything it
started, on errors and Ctrl-C too. Everything it runs ships in the package: it
works from a wheel, in any directory.

Latency is the time from the call to ``send()`` here to the receiver running in
the worker: each probe carries ``time.time()`` taken just before ``send()`` and
the receiver prints ``time.time()`` minus that on arrival (both processes read
the one clock of this host). It covers encoding, PUBLISH, Redis, the worker's
read, decoding and dispatch. Probes go out one at a time, ``LATENCY_GAP_S``
apart, so this is latency without a queue; throughput is ``benchmarks/``'s job.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import queue
import shlex
import signal as os_signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType, ModuleType
from typing import Any

from ..client import Client, mask_url
from ..devserver import DevServer, redis_server_path
from ..errors import BrokerUnavailable, SigbrokerError
from ..signal import Signal

__all__ = ["DemoError", "run_demo", "summarize_latency"]

#: The module whose receivers the demo's worker runs.
WORKER_MODULE = "sigbroker.demo.receivers"
#: What the demo says when it has no Redis to start (one line: the CLI prints it as is).
NO_REDIS = (
    "the demo needs a Redis: install redis-server (apt-get install redis-server, "
    "brew install redis) or fakeredis (pip install fakeredis), "
    "or pass --url redis://HOST:PORT/0"
)
#: Latency probes sent, one at a time.
LATENCY_MESSAGES = 200
#: Pause between two latency probes, so each one meets an idle worker.
LATENCY_GAP_S = 0.001
#: Time the worker gets to start and subscribe.
WORKER_READY_TIMEOUT_S = 30.0
#: Time the worker gets to print what one send made it do.
OUTPUT_TIMEOUT_S = 15.0
#: Time given to the ``sigbroker send`` subprocess and to the worker's warm stop.
PROCESS_TIMEOUT_S = 30.0
#: Worker output that arrives within this after a headline belongs to the same message.
QUIET_S = 0.1

Echo = Callable[[str], Any]


class DemoError(SigbrokerError):
    """A step of the demo failed; the message says which and why."""


def summarize_latency(samples_ms: Sequence[float]) -> str:
    """``p50 .. p90 .. p99 .. max ..`` of the samples (nearest-rank percentiles)."""
    if not samples_ms:
        return "no samples"
    ordered = sorted(samples_ms)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    parts = [f"p{p} {rank(p):.2f} ms" for p in (50, 90, 99)]
    return "   ".join([*parts, f"max {ordered[-1]:.2f} ms"])


class _WorkerProcess:
    """``sigbroker worker`` in a subprocess; a thread reads its output line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.args = ["sigbroker", "worker", "-A", WORKER_MODULE, "--loglevel", "WARNING"]
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.last_line = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="demo-worker", daemon=True)

    def start(self) -> int:
        """Start the worker; return its pid."""
        # Its own session: Ctrl-C in the terminal reaches the demo alone, which then
        # stops the worker warmly instead of both racing to shut down.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args, "--shutdown-timeout", "5"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader.start()
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.last_line = line.rstrip("\n")
            self._lines.put(self.last_line)
        self._lines.put(None)

    def check_alive(self) -> None:
        """Raise DemoError, with the worker's last words, if it has exited."""
        code = None if self.proc is None else self.proc.poll()
        if code is not None:
            self._reader.join(PROCESS_TIMEOUT_S)  # its last line may still be in the pipe
            last = self.last_line.strip().removeprefix("Error: ")
            raise DemoError(f"the worker exited with code {code}" + (f": {last}" if last else ""))

    def read_until(self, done: Callable[[str], bool], what: str) -> list[str]:
        """Output lines up to the first one that is ``done``, and those right behind it."""
        deadline = time.monotonic() + OUTPUT_TIMEOUT_S
        lines: list[str] = []
        while not lines or not done(lines[-1]):
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DemoError(f"no {what} within {OUTPUT_TIMEOUT_S:g}s") from None
            if line is None:
                assert self.proc is not None
                self.proc.wait(PROCESS_TIMEOUT_S)
                self.check_alive()
            lines.append(line or "")
        # A receiver prints its lines in one write: they arrive together.
        with contextlib.suppress(queue.Empty):
            while (line := self._lines.get(timeout=QUIET_S)) is not None:
                lines.append(line)
            self._lines.put(None)  # keep the end of output for the next reader
        return lines

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL after the timeout; return the exit code. Idempotent."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(PROCESS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(PROCESS_TIMEOUT_S)
        if proc is None:
            return None
        if self._reader.is_alive():
            self._reader.join(PROCESS_TIMEOUT_S)  # up to the end of the output
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    # `kill` or a supervisor's timeout then cleans up like Ctrl-C: the finally
    # blocks run and nothing started here is left behind.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = os_signal.signal(os_signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        os_signal.signal(os_signal.SIGTERM, previous)


def _choose_redis(url: str | None, stack: contextlib.ExitStack) -> tuple[str, str]:
    if url:
        return url, "from --url"
    for variable in ("SIGBROKER_URL", "REDIS_URL"):
        if os.environ.get(variable):
            return os.environ[variable], f"from ${variable}"
    if redis_server_path() is None and importlib.util.find_spec("fakeredis") is None:
        raise DemoError(NO_REDIS)
    server = DevServer(port=0)
    stack.callback(server.close)
    server.start()
    return server.url, f"{server.backend} started for the demo"


def _wait_subscribed(client: Client, worker: _WorkerProcess, channels: list[str]) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while True:
        counts = client.channels()
        if all(counts.get(channel, 0) > 0 for channel in channels):
            return
        worker.check_alive()
        if time.monotonic() > deadline:
            raise DemoError(f"the worker did not subscribe within {WORKER_READY_TIMEOUT_S:g}s")
        time.sleep(0.02)


def _version(client: Client) -> str:
    client.ping()  # raises BrokerUnavailable with the reason when Redis is not there
    try:  # fakeredis has no INFO
        return f" {client.server_info()['redis_version']}"
    except (BrokerUnavailable, KeyError):
        return ""


def _label(sender: object) -> str:
    return sender.__name__ if isinstance(sender, type) else repr(sender)


def _show(echo: Echo, lines: Iterable[str]) -> None:
    for line in lines:
        echo(f"  [worker] {line}")


def _headline(name: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(name)


def _send_samples(echo: Echo, client: Client, worker: _WorkerProcess, emit: ModuleType) -> None:
    echo(f"Sending from this process (pid {os.getpid()}):")
    for signal, sender, kwargs in emit.samples():
        short = signal.name.rpartition(".")[2]
        count = client.send(signal, sender, **kwargs)
        noun = "worker" if count == 1 else "workers"
        echo(f"  {short}.send(sender={_label(sender)}, ...) -> {count} {noun}")
        if count == 0:
            raise DemoError(f"no worker received {signal.name}")
        _show(echo, worker.read_until(_headline(short), f"the worker to print {short}"))


def _send_from_another_process(
    echo: Echo, env: dict[str, str], worker: _WorkerProcess, signals: ModuleType
) -> None:
    args = ["sigbroker", "send", signals.order_shipped.name, "--sender", "warehouse"]
    args += ["-a", "order_id=1002", "-a", "carrier=UPS", "-a", "tracking=1Z999AA1"]
    echo("")
    echo("Sending from another process:")
    echo(f"  $ {shlex.join(args)}")
    try:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"`sigbroker send` took more than {PROCESS_TIMEOUT_S:g}s") from None
    if done.returncode != 0:
        raise DemoError(f"`sigbroker send` failed: {done.stderr.strip() or done.returncode}")
    echo(f"  {done.stdout.strip()}")
    _show(echo, worker.read_until(_headline("order_shipped"), "the worker to print order_shipped"))


def _measure_latency(
    echo: Echo, client: Client, worker: _WorkerProcess, signals: ModuleType
) -> None:
    for seq in range(LATENCY_MESSAGES):
        client.send(signals.latency_probe, None, seq=seq, sent_at=time.time())
        time.sleep(LATENCY_GAP_S)
    samples_ms: list[float] = []

    def collect(line: str) -> bool:
        if line.startswith("latency "):
            samples_ms.append(float(line.rpartition("ms=")[2]))
        return len(samples_ms) == LATENCY_MESSAGES

    others = worker.read_until(collect, f"{LATENCY_MESSAGES} latency reports")
    _show(echo, (line for line in others if not line.startswith("latency ")))
    echo(
        f"Latency from send() to the receiver in the worker: {LATENCY_MESSAGES} messages, "
        f"{LATENCY_GAP_S * 1000:g} ms apart"
    )
    echo(f"  {summarize_latency(samples_ms)}")


def run_demo(url: str | None, echo: Echo) -> int:
    """Run the demo end to end, printing through ``echo``; return the exit code (0).

    Raises :class:`DemoError` (or :class:`BrokerUnavailable`) when a step
    fails, with a one-line message; whatever happens, the worker and any Redis
    started here are stopped.
    """
    from . import emit, signals  # the demo's signals exist only once it runs

    namespace = f"demo-{uuid.uuid4().hex[:8]}"
    origin = ""
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_sigterm_as_interrupt())
            url, origin = _choose_redis(url, stack)
            client = stack.enter_context(Client(url, namespace=namespace))
            echo(f"Redis{_version(client)} at {mask_url(url)} ({origin})")
            env = {**os.environ, "SIGBROKER_URL": url, "SIGBROKER_NAMESPACE": namespace}
            env.pop("SIGBROKER_EAGER", None)
            worker = _WorkerProcess(env)
            stack.callback(worker.stop)
            started = time.monotonic()
            pid = worker.start()
            channels = sorted(
                client.channel(s) for s in vars(signals).values() if isinstance(s, Signal)
            )
            _wait_subscribed(client, worker, channels)
            echo(
                f"Worker pid {pid} ({shlex.join(worker.args[:4])}) subscribed to "
                f"{len(channels)} signals in {time.monotonic() - started:.2f}s, "
                f"namespace {namespace}"
            )
            echo("")
            _send_samples(echo, client, worker, emit)
            _send_from_another_process(echo, env, worker, signals)
            echo("")
            _measure_latency(echo, client, worker, signals)
            code = worker.stop()
            if code != 0:
                raise DemoError(f"the worker exited with code {code} on SIGTERM (expected 0)")
    except KeyboardInterrupt:
        echo(f"Interrupted: stopped the worker{_and_redis(origin)}")
        return 130
    echo("")
    echo(f"Stopped the worker (SIGTERM, exit code 0){_and_redis(origin)}")
    return 0


def _and_redis(origin: str) -> str:
    return " and Redis" if origin.endswith("started for the demo") else ""
