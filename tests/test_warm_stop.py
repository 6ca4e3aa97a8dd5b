"""Stopping a worker: a warm stop loses nothing it holds; past the deadline it says what it drops.

Every test runs ``sigbroker worker`` in a subprocess against the real Redis and
stops it with OS signals, as an init system or an operator would: plainly, with
hiredis made unimportable (redis-py's parser), and under gevent monkey-patching.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from sigbroker import Client, Signal, Worker
from sigbroker.broker import list_workers
from sigbroker.codec import Codec
from tests.app.signals import backlog, block
from tests.helpers import ROOT, WorkerProcess, wait_for

#: Messages queued behind a slow receiver before the worker is told to stop.
BACKLOG = 1000
#: Time each backlog message's receiver takes, in seconds (a few seconds in all).
BACKLOG_RECEIVER_S = 0.004
#: A shutdown timeout that a warm stop of the backlog never reaches.
GENEROUS_TIMEOUT_S = 120
#: Messages sent behind the receivers that never return.
BEHIND_THE_BLOCK = 20
#: Longest a test waits for a worker to exit (a prompt exit takes about a second).
EXIT_WAIT_S = 30
#: Most sends after SIGTERM before the test gives up waiting for the unsubscription.
MAX_SENDS_WHILE_STOPPING = 200_000

#: A signal of the embedded test, whose receiver waits for the test to let it go.
held = Signal(providing_args=["n"])

#: How the worker process is started: the plain CLI, without hiredis, under gevent.
MODES: dict[str, dict[str, Any]] = {
    "plain": {},
    "no_hiredis": {
        "env": {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_hiredis"), str(ROOT)])}
    },
    "gevent": {"entry": ("-m", "tests.gevent_sigbroker")},
}


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    """Each way of running the worker process."""
    if request.param == "gevent" and importlib.util.find_spec("gevent") is None:
        pytest.fail("gevent is missing: install the dev extra (pip install -e '.[dev]')")
    return str(request.param)


@pytest.fixture
def capture(redis_url: str, namespace: str) -> Iterator[Callable[[], dict[str, str]]]:
    """Subscribe the test to the ``block`` channel; the function maps each token seen to its id."""
    channel = f"{namespace}:{block.name}"
    r = redis.Redis.from_url(redis_url)
    pubsub = r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    wait_for(lambda: pubsub.get_message(timeout=0.1) is None and pubsub.subscribed, 10, "sub")
    ids: dict[str, str] = {}
    codec = Codec()

    def read() -> dict[str, str]:
        while (message := pubsub.get_message(timeout=0.2)) is not None:
            envelope = codec.decode(message["data"])
            ids[envelope.kwargs["token"]] = envelope.id
        return ids

    try:
        yield read
    finally:
        pubsub.close()
        r.close()


def _start(
    start_worker: Callable[..., WorkerProcess],
    mode: str,
    concurrency: int,
    shutdown_timeout: float,
) -> WorkerProcess:
    extra = ["--concurrency", str(concurrency), "--shutdown-timeout", str(shutdown_timeout)]
    return start_worker(extra=extra, **MODES[mode])


def _assert_clean_log(worker: WorkerProcess) -> None:
    log = worker.output()
    assert "BlockingSwitchOutError" not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("concurrency", [1, 4])
def test_warm_stop_runs_every_message_redis_delivered(
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    namespace: str,
    mode: str,
    concurrency: int,
) -> None:
    worker = _start(start_worker, mode, concurrency, GENEROUS_TIMEOUT_S)
    worker.wait_subscribed(f"{namespace}:{backlog.name}")
    delivered: list[int] = []
    with Client(redis_url, namespace=namespace) as client:
        for i in range(BACKLOG):
            if client.send(backlog, i=i, seconds=BACKLOG_RECEIVER_S):
                delivered.append(i)
        worker.wait_records(5, receiver="backlog")
        worker.signal(signal.SIGTERM)
        # Keep sending while the worker stops: whatever Redis still delivers
        # to it (before it processes the UNSUBSCRIBE) must run too.
        for i in range(BACKLOG, BACKLOG + MAX_SENDS_WHILE_STOPPING):
            if not client.send(backlog, i=i, seconds=0):
                break
            delivered.append(i)
        else:
            pytest.fail(f"still subscribed after {MAX_SENDS_WHILE_STOPPING} sends")
        assert worker.wait(timeout=GENEROUS_TIMEOUT_S) == 0, worker.output()[-4000:]
        assert list_workers(client) == []
    processed = [r["i"] for r in worker.records() if r["receiver"] == "backlog"]
    # Usually some sends after SIGTERM still reach the worker (it needs a
    # supervise tick to act on the signal); on a loaded machine it may have
    # unsubscribed before the next send: then there are none, and that is fine.
    assert len(delivered) >= BACKLOG
    assert sorted(processed) == delivered, worker.output()[-4000:]
    if concurrency == 1:
        assert processed == delivered  # and in order
    log = worker.output()
    assert "Unsubscribed from" in log
    assert "abandons" not in log
    _assert_clean_log(worker)


def _in_flight_and_not_run(log: str) -> tuple[str, int]:
    match = re.search(r"receivers in flight: (.*); messages received and not run: (\d+)", log)
    assert match, log[-4000:]
    return match.group(1), int(match.group(2))


def _abandoned_stats(log: str) -> dict[str, Any]:
    """The counters of an abandoning worker's last log line."""
    found = re.findall(r"Worker \S+ stopped, abandoning what was logged: (\{.*\})", log)
    assert found, log[-4000:]
    stats: dict[str, Any] = ast.literal_eval(found[-1])
    return stats


def _send_blocks(
    redis_url: str, namespace: str, worker: WorkerProcess, concurrency: int
) -> list[str]:
    # One message per receiver thread (each never returns), then more behind them.
    tokens = [uuid.uuid4().hex for _ in range(concurrency + BEHIND_THE_BLOCK)]
    with Client(redis_url, namespace=namespace) as client:
        for token in tokens:
            assert client.send(block, token=token) == 2  # the worker and the test's capture
    started = worker.wait_records(concurrency, receiver="block_started")
    return [r["token"] for r in started]


def _wait_captured(capture: Callable[[], dict[str, str]], n: int) -> dict[str, str]:
    def enough() -> dict[str, str]:
        ids = capture()
        return ids if len(ids) >= n else {}

    return wait_for(enough, 10, f"the test to see {n} messages")


@pytest.mark.parametrize("concurrency", [1, 3])
def test_past_the_shutdown_timeout_the_worker_exits_and_logs_what_it_abandons(
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    namespace: str,
    mode: str,
    concurrency: int,
    capture: Callable[[], dict[str, str]],
) -> None:
    worker = _start(start_worker, mode, concurrency, 1)
    worker.wait_subscribed(f"{namespace}:{block.name}")
    with Client(redis_url, namespace=namespace) as client:
        wait_for(lambda: list_workers(client), 10, "a heartbeat")
    started = _send_blocks(redis_url, namespace, worker, concurrency)
    ids = _wait_captured(capture, concurrency + BEHIND_THE_BLOCK)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=EXIT_WAIT_S) == 1
    log = worker.output()
    in_flight, not_run = _in_flight_and_not_run(log)
    assert "shutdown timeout" in log
    assert sorted(in_flight.split(", ")) == sorted(
        f"{block.name} (message {ids[token]})" for token in started
    )
    assert not_run == BEHIND_THE_BLOCK
    assert _abandoned_stats(log)["lost"] == BEHIND_THE_BLOCK  # published, never to run
    assert len(worker.records()) == concurrency  # nothing behind the block ran
    with Client(redis_url, namespace=namespace) as client:
        assert list_workers(client) == []
    _assert_clean_log(worker)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_second_signal_exits_at_once_and_logs_what_it_abandons(
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    namespace: str,
    concurrency: int,
    capture: Callable[[], dict[str, str]],
) -> None:
    worker = _start(start_worker, "plain", concurrency, GENEROUS_TIMEOUT_S)
    worker.wait_subscribed(f"{namespace}:{block.name}")
    started = _send_blocks(redis_url, namespace, worker, concurrency)
    ids = _wait_captured(capture, concurrency + BEHIND_THE_BLOCK)
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in worker.output(), 10, "the warm stop to begin")
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=EXIT_WAIT_S) == 128 + signal.SIGINT
    log = worker.output()
    in_flight, not_run = _in_flight_and_not_run(log)
    assert "asked to stop now" in log
    assert sorted(in_flight.split(", ")) == sorted(
        f"{block.name} (message {ids[token]})" for token in started
    )
    assert not_run == BEHIND_THE_BLOCK
    assert _abandoned_stats(log)["lost"] == BEHIND_THE_BLOCK
    with Client(redis_url, namespace=namespace) as client:
        assert list_workers(client) == []
    _assert_clean_log(worker)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_embedded_stop_past_the_timeout_reports_the_abandon(
    redis_url: str, namespace: str, concurrency: int, caplog: pytest.LogCaptureFixture
) -> None:
    # In a host program nothing exits: stop() says the stop was abandoned,
    # and receivers let go later dispatch nothing more.
    release = threading.Event()
    started: list[int] = []

    def on_held(sender: object, n: int, **kwargs: Any) -> None:
        started.append(n)
        release.wait(60)

    held.connect(on_held)
    try:
        with Client(redis_url, namespace=namespace) as client:
            worker = Worker(client, signals=[held], concurrency=concurrency, shutdown_timeout_s=0.5)
            worker.start()
            try:
                assert worker.wait_ready(10)
                for n in range(concurrency + BEHIND_THE_BLOCK):
                    assert client.send(held, n=n) == 1
                wait_for(lambda: len(started) == concurrency, 10, "the held receivers")
                with caplog.at_level("ERROR", logger="sigbroker.broker"):
                    assert worker.stop(30) is False
                assert worker.abandoned
                assert f"messages received and not run: {BEHIND_THE_BLOCK}" in caplog.text
                assert worker.stats.lost == BEHIND_THE_BLOCK
                assert list_workers(client) == []
            finally:
                release.set()
                worker.stop(10)
    finally:
        held.disconnect(on_held)
    assert sorted(started) == list(range(concurrency))


def test_after_stop_now_a_late_pulse_does_not_bring_the_heartbeat_back(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pulse is held while it builds a heartbeat record, past the moment
    # the abandoning stop removed the heartbeat: let go, it must not write it.
    monkeypatch.setattr("sigbroker.broker.PULSE_INTERVAL_S", 0.05)
    gate, held_pulse = threading.Event(), threading.Event()
    pulses: list[threading.Thread] = []

    def on_held(sender: object, n: int, **kwargs: Any) -> None:
        pass

    held.connect(on_held)
    try:
        with Client(redis_url, namespace=namespace) as client:
            worker = Worker(client, signals=[held])
            real_heartbeat = worker.heartbeat

            def heartbeat() -> dict[str, Any]:
                if worker._stop_now_requested:
                    pulses.append(threading.current_thread())
                    held_pulse.set()
                    gate.wait(60)
                return real_heartbeat()

            monkeypatch.setattr(worker, "heartbeat", heartbeat)
            worker.start()
            try:
                assert worker.wait_ready(10)
                wait_for(lambda: list_workers(client), 10, "a heartbeat")
                worker.stop_now()
                wait_for(held_pulse.is_set, 10, "the pulse to be held")
                thread = worker._thread
                assert thread is not None
                thread.join(EXIT_WAIT_S)
                assert not thread.is_alive() and worker.abandoned
                assert list_workers(client) == []
            finally:
                gate.set()
            pulses[0].join(EXIT_WAIT_S)
            assert not pulses[0].is_alive()
            assert list_workers(client) == []
    finally:
        held.disconnect(on_held)
