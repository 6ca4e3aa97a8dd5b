"""Concurrent senders on one Client: grouped into pipelines, each with its own result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from sigbroker import Client, Signal
from sigbroker.devserver import DevServer
from sigbroker.errors import BrokerUnavailable
from tests.helpers import wait_for

grouped = Signal(providing_args=["thread", "seq"])


def collect(url: str, channel: str, stop: threading.Event, out: list[bytes]) -> threading.Thread:
    ready = threading.Event()

    def run() -> None:
        with redis.Redis.from_url(url) as r:
            sub = r.pubsub(ignore_subscribe_messages=True)
            sub.subscribe(channel)
            ready.set()
            while not stop.is_set():
                message = sub.get_message(timeout=0.1)
                if message is not None:
                    out.append(message["data"])
            sub.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    return thread


@pytest.fixture(params=["hiredis", "redis-py-parser"])
def reply_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with our own hiredis reply reader, and with redis-py's parser instead."""
    if request.param == "hiredis":
        pytest.importorskip("hiredis")
    else:
        monkeypatch.setattr("sigbroker.transport.redis_endpoint.hiredis", None)
    return str(request.param)


def test_many_threads_each_get_their_count_and_keep_their_order(
    redis_url: str, namespace: str, reply_parser: str
) -> None:
    threads, per_thread = 8, 150
    received: list[bytes] = []
    stop = threading.Event()
    with Client(redis_url, namespace=namespace) as client:
        collector = collect(redis_url, client.channel(grouped), stop, received)
        wait_for(lambda: client.channels(), 10, "the subscriber")
        results: dict[int, list[int]] = {}

        def sender(t: int) -> None:
            results[t] = [client.send(grouped, thread=t, seq=i) for i in range(per_thread)]

        workers = [threading.Thread(target=sender, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        wait_for(lambda: len(received) == threads * per_thread, 15, "every message")
        stop.set()
        collector.join(10)
        decoded = [client.codec.decode(d).kwargs for d in received]
    assert all(results[t] == [1] * per_thread for t in range(threads))
    for t in range(threads):
        assert [k["seq"] for k in decoded if k["thread"] == t] == list(range(per_thread))


def test_sends_queued_behind_a_round_trip_go_as_one_pipeline(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(redis_url, namespace=namespace) as client:
        publisher = client.transport._publisher
        real = publisher._round_trip
        release = threading.Event()
        sizes: list[int] = []

        def slow_first(payload: bytes, replies: int) -> Any:
            sizes.append(replies)
            if len(sizes) == 1:
                release.wait(10)
            return real(payload, replies)

        monkeypatch.setattr(publisher, "_round_trip", slow_first)
        counts: list[int] = []
        first = threading.Thread(target=lambda: counts.append(client.send("a.b", n=0)))
        first.start()
        wait_for(lambda: sizes, 5, "the first round trip")
        followers = [
            threading.Thread(target=lambda i=i: counts.append(client.send("a.b", n=i)))
            for i in range(1, 4)
        ]
        for f in followers:
            f.start()
        wait_for(lambda: len(publisher._queue) == 3, 5, "three queued senders")
        release.set()
        for t in [first, *followers]:
            t.join(10)
    assert sizes == [1, 3]
    assert counts == [0, 0, 0, 0]


def test_every_queued_sender_gets_the_error(
    redis_factory: Callable[[], DevServer], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_factory()
    with Client(server.url, namespace=namespace, timeout_s=1) as client:
        publisher = client.transport._publisher
        real = publisher._round_trip
        release = threading.Event()
        calls: list[int] = []

        def slow_first(payload: bytes, replies: int) -> Any:
            calls.append(replies)
            if len(calls) == 1:
                release.wait(10)
                server.kill()
            return real(payload, replies)

        monkeypatch.setattr(publisher, "_round_trip", slow_first)
        errors: list[BaseException] = []

        def send() -> None:
            try:
                client.send("a.b", n=1)
            except BrokerUnavailable as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send) for _ in range(4)]
        threads[0].start()
        wait_for(lambda: calls, 5, "the first round trip")
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(publisher._queue) == 3, 5, "three queued senders")
        start = time.monotonic()
        release.set()
        for t in threads:
            t.join(20)
        assert time.monotonic() - start < 20
    assert len(errors) == 4 and calls == [1, 3]
