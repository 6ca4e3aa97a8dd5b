"""Subprocesses of the benchmark: start, pause, resume, measure and always stop them.

A :class:`Subscriber` is one consuming process (the sigbroker worker, the raw
redis-py loop, a Celery worker) whose output goes to a log file. It can be
frozen with SIGSTOP while messages queue up in Redis, resumed with SIGCONT,
and its resident memory read from ``/proc``. :meth:`Subscriber.stop` works
whatever state the process is in, and is safe to call twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import redis

from benchmarks.report import ENV_EVERY, ENV_SOURCE, ENV_URL, REPORT_PREFIX

ROOT = Path(__file__).resolve().parent.parent

#: How long a subscriber may take to start and subscribe.
START_TIMEOUT_S = 60.0
#: How long a subscriber gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 10.0


class BenchmarkError(RuntimeError):
    """Something the benchmark depends on failed; the message says what."""


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without ``SIGBROKER_*``, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBROKER_")}
    path = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(extra)
    return env


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; raise BenchmarkError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.02)


class Subscriber:
    """One consuming subprocess, started with the report settings in its environment."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        report_url: str,
        every: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"bench-{name}-", suffix=".log", delete=False
        )
        full_env = clean_environment(
            **{ENV_URL: report_url, ENV_SOURCE: name, ENV_EVERY: str(every)}
        )
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's output, for error messages."""
        try:
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise BenchmarkError, with the log, if the process has exited."""
        if self.proc.poll() is not None:
            raise BenchmarkError(
                f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}"
            )

    def wait_subscribed(
        self, url: str, channels: Sequence[str], timeout_s: float = START_TIMEOUT_S
    ) -> None:
        """Wait until Redis counts a subscriber on each of ``channels``."""
        with redis.Redis.from_url(url) as r:

            def subscribed() -> bool:
                self.check_alive()
                counts = dict(r.pubsub_numsub(*channels))
                return all(counts.get(c.encode(), 0) >= 1 for c in channels)

            wait_until(subscribed, timeout_s, f"{self.name} to subscribe to {', '.join(channels)}")

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): messages sent now queue up in Redis."""
        self.check_alive()
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a frozen process run again (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far, all its threads, user + system (seconds).

        Read through the process's CPU-time clock (``clock_getcpuclockid``'s id,
        ``(~pid << 3) | 2`` on Linux): nanosecond resolution, where ``/proc``'s
        ticks have 10 ms.
        """
        self.check_alive()
        return time.clock_gettime(((~self.pid) << 3) | 2)

    def rss_bytes(self) -> int:
        """Resident memory of the process now, from ``/proc/<pid>/status`` (VmRSS)."""
        self.check_alive()
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchmarkError(f"no VmRSS for {self.name} (pid {self.pid})")

    def stop(self) -> None:
        """SIGTERM (and SIGCONT, in case it is frozen), then SIGKILL; safe to call twice."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                os.kill(self.pid, signal.SIGCONT)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()

    @property
    def log_path(self) -> str:
        """Where the process's output goes."""
        return self._log.name

    def remove_log(self) -> None:
        """Delete the log file (after a successful run)."""
        Path(self._log.name).unlink(missing_ok=True)


@contextlib.contextmanager
def supervised() -> Iterator[dict[str, Subscriber]]:
    """A dict for the subscribers a figure starts; all of them are stopped on exit.

    On a clean exit each is checked to be still alive and its log removed; on
    an error the path of every log is printed, for the reader to look at.
    """
    subs: dict[str, Subscriber] = {}
    try:
        yield subs
        for sub in subs.values():
            sub.check_alive()
            sub.remove_log()
    except BaseException:
        for sub in subs.values():
            print(f"log of {sub.name}: {sub.log_path}", file=sys.stderr)
        raise
    finally:
        for sub in subs.values():
            sub.stop()


def sigbroker_worker(
    url: str,
    name: str,
    *,
    namespace: str,
    concurrency: int,
    every: int,
    report_url: str,
    app: str = "benchmarks.receivers",
    options: Sequence[str] = (),
) -> Subscriber:
    """``python -m sigbroker worker -A benchmarks.receivers`` (or ``app``) in a subprocess.

    ``options`` go after the worker's own (``--group NAME`` for figure 10).
    """
    args = [
        sys.executable,
        "-m",
        "sigbroker",
        "--url",
        url,
        "--namespace",
        namespace,
        "worker",
        "-A",
        app,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "WARNING",
        *options,
    ]
    return Subscriber(name, args, report_url=report_url, every=every)


def raw_subscriber(url: str, name: str, *, every: int, report_url: str) -> Subscriber:
    """The raw redis-py subscriber loop in a subprocess."""
    args = [sys.executable, "-m", "benchmarks.raw_subscriber", url]
    return Subscriber(name, args, report_url=report_url, every=every)


class Reports:
    """The benchmark's end of the report channels: waits for counts and acks.

    Subscribes to the report channel of each source (see :mod:`benchmarks.report`)
    and reads them with redis-py; every wait has a deadline.
    """

    def __init__(self, url: str, sources: Sequence[str], timeout_s: float = 10.0) -> None:
        self._redis = redis.Redis.from_url(url)
        self._pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
        channels = [REPORT_PREFIX + s for s in sources]
        self._pubsub.subscribe(*channels)
        confirmed = 0
        deadline = time.monotonic() + timeout_s
        while confirmed < len(channels):  # reports sent before this would be lost
            message = self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                confirmed += 1
            elif time.monotonic() > deadline:
                raise BenchmarkError("could not subscribe to the report channels")

    def _wait(self, source: str, kind: str, key: int, timeout_s: float) -> float:
        channel = (REPORT_PREFIX + source).encode()
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchmarkError(
                    f"timed out after {timeout_s:.0f}s waiting for {source} {kind} {key}"
                )
            message = self._pubsub.get_message(timeout=left)
            if message is None or message["type"] != "message" or message["channel"] != channel:
                continue
            got_kind, got_key, stamp = message["data"].decode().split()
            if got_kind == kind and int(got_key) == key:
                return float(stamp)
            if got_kind == "count" and kind == "count" and int(got_key) > key:
                raise BenchmarkError(f"{source} counted past {key} ({got_key}): stray messages")

    def wait_count(self, source: str, count: int, timeout_s: float) -> float:
        """Wait until ``source`` reports having handled ``count`` messages; return when it did."""
        return self._wait(source, "count", count, timeout_s)

    def wait_ack(self, source: str, seq: int, timeout_s: float) -> float:
        """Wait for ``source``'s ack of probe ``seq``; return when the probe reached it."""
        return self._wait(source, "ack", seq, timeout_s)

    def close(self) -> None:
        """Unsubscribe and close the connection."""
        self._pubsub.close()
        self._redis.close()
