"""Helpers for tests that run workers and listeners in real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis

from tests.app.recorder import read_records

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def subscribers(url: str, channel: str) -> int:
    """How many subscribers Redis counts on ``channel`` right now."""
    with redis.Redis.from_url(url) as r:
        return int(dict(r.pubsub_numsub(channel)).get(channel.encode(), 0))


class _Recording:
    """What a worker's receivers recorded to ``self.out`` (see tests/app/recorder.py)."""

    out: Path

    def output(self) -> str:
        raise NotImplementedError

    def records(self) -> list[dict[str, Any]]:
        """Everything the worker's receivers recorded so far."""
        return read_records(self.out)

    def wait_records(self, n: int, timeout: float = 10.0, **match: Any) -> list[dict[str, Any]]:
        """Wait until at least ``n`` records matching ``match`` exist; return them."""

        def found() -> list[dict[str, Any]]:
            rows = [r for r in self.records() if all(r.get(k) == v for k, v in match.items())]
            return rows if len(rows) >= n else []

        try:
            return wait_for(found, timeout, f"{n} records matching {match}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{self.output()[-4000:]}") from None


class WorkerProcess(_Recording):
    """``sigbroker worker`` in a subprocess, recording what its receivers get.

    ``entry`` is what follows the interpreter on the command line, before the
    CLI's own arguments: ``-m sigbroker`` unless a test runs the CLI another way.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        out: Path,
        *,
        modules: Sequence[str] = ("tests.app.receivers",),
        extra: Sequence[str] = (),
        global_extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        entry: Sequence[str] = ("-m", "sigbroker"),
    ) -> None:
        self.url, self.namespace, self.out = url, namespace, out
        args = [
            sys.executable,
            *entry,
            "--url",
            url,
            "--namespace",
            namespace,
            *global_extra,
            "worker",
            "--loglevel",
            "DEBUG",
        ]
        for module in modules:
            args += ["-A", module]
        args += list(extra)
        self.log = out.with_suffix(".log")
        full_env = {
            **os.environ,
            "SIGBROKER_TEST_OUT": str(out),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def wait_subscribed(self, channel: str, timeout: float = 15.0) -> None:
        """Wait until this worker's subscription to ``channel`` is live."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            return "Subscribed to" in self.output()

        wait_for(ready, timeout, "the worker to subscribe")

    def output(self) -> str:
        """The worker's log so far."""
        return self.log.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send an OS signal to the worker."""
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the worker to exit; return its exit code."""
        return self.proc.wait(timeout=timeout)

    def warm_stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, as a deploy stops it; return whether it exited 0 (nothing abandoned)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout) == 0

    def stop(self) -> None:
        """Stop the worker (kill it if it will not stop); safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


class InProcessWorker(_Recording):
    """A :class:`~sigbroker.Worker` in a thread of the test process, read like a WorkerProcess.

    It runs the receivers of ``tests.app.receivers`` (imported here) on the
    client's transport; its log lines (tracebacks included) are collected
    for :meth:`output`, and its receivers record to ``out`` as a worker
    process's do.
    """

    def __init__(self, client: Any, out: Path, monkeypatch: Any) -> None:
        import logging

        import tests.app.receivers  # noqa: F401 - connects the receivers
        from sigbroker import Worker
        from sigbroker.signal import all_signals

        monkeypatch.setenv("SIGBROKER_TEST_OUT", str(out))
        self.out = out
        self._lines: list[str] = []
        self._handler = logging.Handler(logging.DEBUG)
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
        self._handler.emit = lambda rec: self._lines.append(formatter.format(rec))  # type: ignore[method-assign]
        self._logger = logging.getLogger("sigbroker")
        self._level = self._logger.level
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)
        signals = [  # tests/app's pub/sub signals, as `sigbroker worker -A tests.app.receivers`
            s
            for s in all_signals()
            if s.name.startswith("tests.app.") and s.has_remote_receivers() and not s.durable
        ]
        self.worker = Worker(client, signals=signals)
        self.worker.start()

    def wait_subscribed(self, channel: str = "", timeout: float = 15.0) -> None:
        """Wait until the worker receives."""
        assert self.worker.wait_ready(timeout), "the in-process worker did not start"

    def output(self) -> str:
        """The worker's log lines so far."""
        return "\n".join(self._lines)

    def warm_stop(self, timeout: float = 30.0) -> bool:
        """Stop warmly; return whether everything received ran."""
        return self.worker.stop(timeout)

    def stop(self) -> None:
        """Stop the worker; safe to call twice."""
        self.worker.stop(10)
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)
