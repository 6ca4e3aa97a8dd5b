"""Worker embedded in a host program: start()/stop() in a thread, both read paths."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sigbroker import Client, Signal, Worker
from sigbroker.transport.redis_pubsub import RedisPubSub
from tests.helpers import wait_for

embedded = Signal(providing_args=["n"])


@pytest.fixture(params=[True, False], ids=["hiredis-loop", "redis-py-parser"])
def use_hiredis(request: pytest.FixtureRequest) -> bool:
    if request.param:
        pytest.importorskip("hiredis")
    return bool(request.param)


@pytest.fixture
def received() -> Iterator[list[tuple[Any, int, str]]]:
    got: list[tuple[Any, int, str]] = []

    def on_embedded(sender: Any, n: int, **kwargs: Any) -> None:
        got.append((sender, n, threading.current_thread().name))

    embedded.connect(on_embedded)
    yield got
    embedded.disconnect(on_embedded)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_embedded_worker_delivers_in_order_and_stops(
    redis_url: str,
    namespace: str,
    use_hiredis: bool,
    concurrency: int,
    received: list[tuple[Any, int, str]],
) -> None:
    transport = RedisPubSub(redis_url, use_hiredis=use_hiredis)
    with Client(namespace=namespace, transport=transport) as client:
        worker = Worker(client, signals=[embedded], concurrency=concurrency)
        worker.start()
        try:
            assert worker.wait_ready(10)
            with client.batch() as batch:
                for n in range(200):
                    batch.send(embedded, sender="host", n=n)
            assert batch.results == [1] * 200
            wait_for(lambda: len(received) == 200, 10, "200 messages")
        finally:
            assert worker.stop(10)
    numbers = [n for _, n, _ in received]
    if concurrency == 1:
        assert numbers == list(range(200))
    else:
        assert sorted(numbers) == list(range(200))
    assert {s for s, _, _ in received} == {"host"}
    assert worker.stats.processed == 200 and worker.stats.failed == 0
    assert not worker.ready
