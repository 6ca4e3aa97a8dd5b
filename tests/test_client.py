"""Client: URL handling, batching, retries and the asyncio path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from sigbroker import Client, Signal, configure
from sigbroker.client import mask_url
from sigbroker.devserver import DevServer
from sigbroker.errors import BrokerUnavailable, ConfigurationError, PayloadError
from tests.helpers import subscribers

declared = Signal(providing_args=["a", "b"])


def next_message(sub: Any, timeout: float = 5.0) -> Any:
    """The next published message (skipping subscribe confirmations), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = sub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return message
    return None


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@host:6379/1", "redis://:***@host:6379/1"),
        ("rediss://alice:s3cret@host/0", "rediss://alice:***@host/0"),
        ("redis://alice@host", "redis://alice@host"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_bad_url_is_a_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        Client("http://:topsecret@host/0")
    assert "topsecret" not in str(info.value)


def test_send_returns_the_receiver_count(redis_url: str, namespace: str) -> None:
    import redis

    with Client(redis_url, namespace=namespace) as client, redis.Redis.from_url(redis_url) as r:
        sub = r.pubsub()
        sub.subscribe(client.channel(declared))
        assert subscribers(redis_url, client.channel(declared)) == 1
        assert client.send(declared, a=1, b=2) == 1
        sub.close()
        assert client.send(declared, a=1, b=2) == 0


def test_payload_errors_publish_nothing(redis_url: str, namespace: str) -> None:
    import redis

    with Client(redis_url, namespace=namespace) as client, redis.Redis.from_url(redis_url) as r:
        sub = r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(client.channel(declared))
        with pytest.raises(PayloadError, match="'c'"):
            client.send(declared, a=1, b=2, c=3)
        with pytest.raises(PayloadError, match="'b'"):
            client.send(declared, a=1)
        with pytest.raises(PayloadError, match="'a'"):
            client.send(declared, a=object(), b=1)
        with pytest.raises(PayloadError, match="sender"):
            client.send(declared, sender=object(), a=1, b=2)
        assert client.send(declared, a=1, b=2) == 1
        message = next_message(sub)
        assert message is not None
        assert client.codec.decode(message["data"]).kwargs == {"a": 1, "b": 2}
        assert next_message(sub, timeout=0.2) is None
        sub.close()


def test_batch_publishes_in_one_pipeline_and_reports_each_count(
    redis_url: str, namespace: str
) -> None:
    import redis

    with Client(redis_url, namespace=namespace) as client, redis.Redis.from_url(redis_url) as r:
        sub = r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(client.channel(declared))
        with client.batch() as batch:
            for i in range(5):
                batch.send(declared, a=i, b=None)
            batch.send("other.signal", x=1)
            assert len(batch) == 6
        assert batch.results == [1, 1, 1, 1, 1, 0]
        got = [client.codec.decode(next_message(sub)["data"]).kwargs["a"] for _ in range(5)]
        assert got == [0, 1, 2, 3, 4]
        sub.close()


def test_batch_that_raises_publishes_nothing(redis_url: str, namespace: str) -> None:
    with Client(redis_url, namespace=namespace) as client:
        with pytest.raises(RuntimeError), client.batch() as batch:
            batch.send(declared, a=1, b=2)
            raise RuntimeError("abort")
        assert batch.results == []
        with client.batch() as batch, pytest.raises(PayloadError):
            batch.send(declared, a=1)
        assert len(batch) == 0


def test_asend(redis_url: str, namespace: str) -> None:
    async def main() -> int:
        client = Client(redis_url, namespace=namespace)
        try:
            return await client.asend(declared, a=1, b=2)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == 0


def test_signal_asend_uses_the_default_client(redis_url: str, namespace: str) -> None:
    configure(url=redis_url, namespace=namespace)

    async def main() -> object:
        from sigbroker.config import default_client

        try:
            return await declared.asend(sender=None, a=1, b=2)
        finally:
            await default_client(Client).aclose()

    assert asyncio.run(main()) == 0


def test_redis_down_gives_broker_unavailable_for_every_path(
    redis_factory: Callable[[], DevServer], namespace: str
) -> None:
    server = redis_factory()
    server.kill()
    with Client(server.url, namespace=namespace, timeout_s=1) as client:
        with pytest.raises(BrokerUnavailable):
            client.ping()
        with pytest.raises(BrokerUnavailable), client.batch() as batch:
            batch.send(declared, a=1, b=2)

        async def main() -> None:
            try:
                await client.asend(declared, a=1, b=2)
            finally:
                await client.aclose()

        with pytest.raises(BrokerUnavailable):
            asyncio.run(main())


def test_client_recovers_when_redis_comes_back(
    redis_factory: Callable[[], DevServer], namespace: str
) -> None:
    server = redis_factory()
    with Client(server.url, namespace=namespace) as client:
        assert client.send(declared, a=1, b=2) == 0
        server.kill()
        server.start()
        # The pooled connection is stale; the retry opens a fresh one.
        assert client.send(declared, a=1, b=2) == 0
