"""A send whose command may have reached Redis is never sent again (DESIGN §4).

A proxy lets the PUBLISH through to Redis and keeps its reply from the client
(it drops it, or closes the connection): the send must raise DeliveryUnknown,
which says the message may have been delivered, and a subscriber must see the
message exactly once. An error before any byte was written is still retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.connection

from sigbroker import Client, Signal
from sigbroker.devserver import DevServer
from sigbroker.errors import BrokerUnavailable, DeliveryUnknown
from tests.helpers import wait_for
from tests.proxy import FreezingProxy

once = Signal(providing_args=["n"])


@pytest.fixture
def proxy(real_redis: DevServer) -> Iterator[FreezingProxy]:
    """A proxy to the session's redis-server; the test injects faults into it."""
    proxy = FreezingProxy(real_redis.port)
    try:
        yield proxy
    finally:
        proxy.close()


class Subscriber:
    """A raw redis-py subscriber on ``channel``, straight to Redis, collecting messages."""

    def __init__(self, url: str, channel: str) -> None:
        self._redis = redis.Redis.from_url(url)
        self._sub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._sub.subscribe(channel)
        self.data: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._sub.get_message(timeout=0.1)
            if message is not None:
                self.data.append(message["data"])

    def values(self, client: Client) -> list[Any]:
        """The ``n`` of every message received so far, in order."""
        return [client.codec.decode(d).kwargs["n"] for d in list(self.data)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sub.close()
        self._redis.close()


@pytest.fixture
def subscribe(real_redis: DevServer) -> Iterator[Callable[[str], Subscriber]]:
    """Start raw subscribers on the session's Redis; all are closed after the test."""
    started: list[Subscriber] = []

    def start(channel: str) -> Subscriber:
        sub = Subscriber(real_redis.url, channel)
        started.append(sub)
        with redis.Redis.from_url(real_redis.url) as r:
            wait_for(lambda: dict(r.pubsub_numsub(channel)).get(channel.encode()), 10, "subscribe")
        return sub

    try:
        yield start
    finally:
        for sub in started:
            sub.close()


def _settle(sub: Subscriber, client: Client, last: int) -> list[Any]:
    # A message sent after the others arrives after them: once it is in,
    # nothing sent before it (a duplicate included) is still on its way.
    assert client.send(once, n=last) == 1
    wait_for(lambda: last in sub.values(client), 10, "the closing message")
    return [n for n in sub.values(client) if n != last]


@pytest.mark.parametrize("parser", ["hiredis", "redis-py"])
@pytest.mark.parametrize("fault", ["swallow_replies", "close_after_reply"])
def test_a_send_written_then_unanswered_is_not_retried(
    proxy: FreezingProxy,
    subscribe: Callable[[str], Subscriber],
    namespace: str,
    fault: str,
    parser: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if parser == "redis-py":  # the publisher reads replies with redis-py's parser instead
        monkeypatch.setattr("sigbroker.transport.redis_endpoint.hiredis", None)
    with Client(proxy.url, namespace=namespace, socket_timeout_s=0.5, timeout_s=5) as client:
        sub = subscribe(client.channel(once))
        assert client.send(once, n=1) == 1  # the publisher's connection is open
        assert getattr(proxy, fault)() >= 1
        with pytest.raises(DeliveryUnknown, match="may have been delivered") as info:
            client.send(once, n=2)
        assert isinstance(info.value, BrokerUnavailable)
        assert _settle(sub, client, last=3) == [1, 2]


def test_every_send_of_a_written_pipeline_gets_delivery_unknown(
    proxy: FreezingProxy,
    subscribe: Callable[[str], Subscriber],
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Client(proxy.url, namespace=namespace, socket_timeout_s=0.5, timeout_s=5) as client:
        sub = subscribe(client.channel(once))
        publisher = client.transport._publisher
        real = publisher._round_trip
        release = threading.Event()
        calls: list[int] = []

        def slow_first(payload: bytes, replies: int) -> Any:
            # The first round trip goes through, then holds the lead until
            # three more sends queue behind it: they leave as one pipeline.
            result = real(payload, replies)
            calls.append(replies)
            if len(calls) == 1:
                release.wait(10)
            return result

        monkeypatch.setattr(publisher, "_round_trip", slow_first)
        outcomes: dict[int, object] = {}

        def send(n: int) -> None:
            try:
                outcomes[n] = client.send(once, n=n)
            except BrokerUnavailable as exc:
                outcomes[n] = exc

        threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        threads[0].start()
        wait_for(lambda: calls, 5, "the first round trip")
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(publisher._queue) == 3, 5, "three queued senders")
        assert proxy.close_after_reply() >= 1
        release.set()
        for t in threads:
            t.join(20)
        assert outcomes[0] == 1
        for n in (1, 2, 3):
            assert isinstance(outcomes[n], DeliveryUnknown), outcomes[n]
            assert "may have been delivered" in str(outcomes[n])
        assert sorted(_settle(sub, client, last=4)) == [0, 1, 2, 3]


def test_asend_written_then_unanswered_is_not_retried(
    proxy: FreezingProxy, subscribe: Callable[[str], Subscriber], namespace: str
) -> None:
    client = Client(proxy.url, namespace=namespace, socket_timeout_s=0.5, timeout_s=5)
    sub = subscribe(client.channel(once))

    async def main() -> BaseException | None:
        try:
            assert await client.asend(once, n=1) == 1  # its pooled connection is open
            assert proxy.swallow_replies() >= 1
            try:
                await client.asend(once, n=2)
            except BrokerUnavailable as exc:
                return exc
            return None
        finally:
            await client.aclose()

    error = asyncio.run(main())
    assert isinstance(error, DeliveryUnknown)
    assert "may have been delivered" in str(error)
    with client:
        assert _settle(sub, client, last=3) == [1, 2]


def _publish_calls(url: str) -> int:
    with redis.Redis.from_url(url) as r:
        stats = r.info("commandstats").get("cmdstat_publish", {})
        return int(stats.get("calls", 0))


@pytest.mark.parametrize("path", ["send", "asend"])
def test_a_refused_send_is_retried_until_redis_is_back(
    redis_factory: Callable[[], DevServer],
    namespace: str,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    server = redis_factory()
    client = Client(server.url, namespace=namespace, timeout_s=30, retries=1000)
    outcome: list[object] = []

    async def asend_twice() -> None:
        try:
            await client.asend(once, n=1)  # a pooled connection, stale once Redis restarts
            server.kill()
            outcome.append(await client.asend(once, n=2))
        finally:
            await client.aclose()

    def sender() -> None:
        try:
            if path == "send":
                client.send(once, n=1)  # the publisher's connection goes stale below
                server.kill()
                outcome.append(client.send(once, n=2))
            else:
                asyncio.run(asend_twice())
        except Exception as exc:  # handed to the test thread
            outcome.append(exc)

    with caplog.at_level(logging.DEBUG, logger="sigbroker.transport"):
        thread = threading.Thread(target=sender)
        thread.start()
        wait_for(lambda: "retry 2 " in caplog.text, 15, "two refused attempts")
        server.start()
        thread.join(30)
    client.close()
    assert outcome == [0]
    # The restarted server ran that PUBLISH exactly once.
    assert _publish_calls(server.url) == 1


#: How long the test lets an asend wait for a reply before cancelling it.
CANCEL_AFTER_S = 0.3


@pytest.mark.parametrize("redis_py", ["disconnects", "keeps_the_connection"])
def test_a_cancelled_asend_leaves_no_reply_for_the_next_one(
    proxy: FreezingProxy,
    subscribe: Callable[[str], Subscriber],
    namespace: str,
    redis_py: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cancelled asend's reply arrives late, right after the next command
    # was written on its connection: that command must not take it as its own.
    # redis-py closes a connection whose read was cancelled, an undocumented
    # behaviour: the client must not depend on it.
    if redis_py == "keeps_the_connection":
        real_read = redis.asyncio.connection.Connection.read_response

        async def keeping(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await real_read(self, *args, **{**kwargs, "disconnect_on_error": False})

        monkeypatch.setattr(redis.asyncio.connection.Connection, "read_response", keeping)
    client = Client(proxy.url, namespace=namespace)
    sub = subscribe(client.channel(once))

    async def main() -> int:
        try:
            assert await client.asend("nobody.listens", n=0) == 0  # a pooled connection
            assert proxy.delay_replies() >= 1
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.asend("nobody.listens", n=1), CANCEL_AFTER_S)
            return await client.asend(once, n=2)  # one subscriber: its reply is 1
        finally:
            await client.aclose()

    assert asyncio.run(main()) == 1
    with client:
        assert _settle(sub, client, last=3) == [2]
