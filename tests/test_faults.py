"""The worker through what production throws at a pub/sub consumer."""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Callable

import msgpack
import pytest

from sigbroker import Client
from sigbroker.broker import HEARTBEAT_TTL_S, list_workers
from sigbroker.codec import Codec
from sigbroker.devserver import DevServer
from sigbroker.errors import BrokerUnavailable
from tests.app.signals import slow, user_registered
from tests.helpers import WorkerProcess, subscribers, wait_for
from tests.proxy import FreezingProxy

SECRET = "fault-test-secret"


def _channel(namespace: str) -> str:
    return f"{namespace}:{user_registered.name}"


def test_delivery_resumes_after_redis_is_killed_and_restarted(
    redis_factory: Callable[[], DevServer],
    start_worker: Callable[..., WorkerProcess],
    namespace: str,
) -> None:
    server = redis_factory()
    worker = start_worker(server.url)
    worker.wait_subscribed(_channel(namespace))
    with Client(server.url, namespace=namespace, timeout_s=2) as client:
        assert client.send(user_registered, user=1, request=None) == 1
        worker.wait_records(1, receiver="on_any_sender")

        server.kill()
        server.start()
        restarted = time.monotonic()
        wait_for(lambda: subscribers(server.url, _channel(namespace)) == 1, 20, "resubscription")
        resumed = time.monotonic() - restarted
        assert client.send(user_registered, user=2, request=None) == 1
        rows = worker.wait_records(2, receiver="on_any_sender")

        def resubscribes() -> int:
            beats = list_workers(client)
            return int(beats[0]["resubscribes"]) if beats else 0

        assert wait_for(resubscribes, 15, "the heartbeat to count the gap") == 1
    assert [r["kwargs"]["user"] for r in rows] == [1, 2]
    assert "Resubscribed" in worker.output()
    print(f"delivery resumed {resumed:.2f}s after the restart")


def test_half_open_subscription_is_detected_and_replaced(
    real_redis: DevServer,
    start_worker: Callable[..., WorkerProcess],
    namespace: str,
) -> None:
    proxy = FreezingProxy(real_redis.port)
    try:
        worker = start_worker(proxy.url)
        worker.wait_subscribed(_channel(namespace))
        frozen_at = time.monotonic()
        assert proxy.freeze() >= 1
        # Redis still counts the frozen connection: only the worker's own probe can tell.
        assert subscribers(real_redis.url, _channel(namespace)) == 1
        try:
            wait_for(lambda: "Resubscribed" in worker.output(), 20, "the stall to be detected")
        except AssertionError:
            raise AssertionError(worker.output()[-3000:]) from None
        detected = time.monotonic() - frozen_at
        with Client(real_redis.url, namespace=namespace) as client:
            wait_for(
                lambda: client.send(user_registered, user=3, request=None) >= 1,
                10,
                "a send to reach the new subscription",
            )
        (row,) = worker.wait_records(1, receiver="on_any_sender")
        assert row["kwargs"]["user"] == 3
        print(f"half-open connection replaced {detected:.2f}s after the freeze")
    finally:
        proxy.close()


HOSTILE = [
    b"",
    b"garbage that is not msgpack \xc1\xff",
    b"\xdd\xff\xff\xff\xff",  # array32 claiming 2**32-1 items
    b"\xdf\xff\xff\xff\xff",  # map32 claiming 2**32-1 items
    b"\x91" * 100_000 + b"\xc0",  # 10**5-deep nesting
    msgpack.packb({"v": 99, "s": "x"}),  # a version nobody speaks
    msgpack.packb([1, 2, 3]),
]


def test_hostile_messages_are_rejected_counted_and_survived(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    worker = start_worker(global_extra=["--secret", SECRET])
    channel = _channel(namespace)
    worker.wait_subscribed(channel)
    forged = Codec("not-the-secret").pack(
        user_registered.name, None, {"user": 666, "request": None}
    )
    unsigned = Codec().pack(user_registered.name, None, {"user": 667, "request": None})
    wrong_signal = Codec(SECRET).pack("some.other.signal", None, {"user": 668, "request": None})
    with Client(redis_url, namespace=namespace, secret=SECRET) as client:
        for data in [*HOSTILE, forged, unsigned, wrong_signal]:
            assert client.publish(channel, data) == 1
        assert client.send(user_registered, user=4, request=None) == 1
        (row,) = worker.wait_records(1, receiver="on_any_sender")
        assert row["kwargs"]["user"] == 4

        def rejected() -> int:
            beats = list_workers(client)
            return beats[0]["rejected"] if beats else 0

        expected = len(HOSTILE) + 3
        wait_for(lambda: rejected() >= expected, 15, "the heartbeat to count the rejections")
        assert rejected() == expected
    assert worker.proc.poll() is None
    assert "Rejected a message" in worker.output()


def test_sigterm_lets_the_receiver_in_flight_finish_and_exits_zero(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    worker = start_worker()
    worker.wait_subscribed(f"{namespace}:{slow.name}")
    token = uuid.uuid4().hex
    with Client(redis_url, namespace=namespace) as client:
        client.send(slow, seconds=1.5, token=token)
    worker.wait_records(1, receiver="slow_started")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert worker.records()[-1] == {
        "receiver": "slow_finished",
        "sender": None,
        "sender_is_class": False,
        "token": token,
    }


def test_second_sigterm_exits_at_once(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    worker = start_worker()
    worker.wait_subscribed(f"{namespace}:{slow.name}")
    with Client(redis_url, namespace=namespace) as client:
        client.send(slow, seconds=60, token="long")
    worker.wait_records(1, receiver="slow_started")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in worker.output(), 10, "the warm stop to begin")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) != 0
    assert not [r for r in worker.records() if r["receiver"] == "slow_finished"]


def test_heartbeat_lists_the_worker_and_disappears_when_it_dies(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    worker = start_worker()
    worker.wait_subscribed(_channel(namespace))
    with Client(redis_url, namespace=namespace) as client:
        (beat,) = wait_for(lambda: list_workers(client), 10, "a heartbeat")
        assert beat["pid"] == worker.proc.pid
        assert user_registered.name in beat["signals"]
        ttl = client.call(lambda r: r.ttl(f"{namespace}:__worker__:{beat['id']}"))
        assert 0 < ttl <= HEARTBEAT_TTL_S
        worker.signal(signal.SIGKILL)
        worker.wait()
        wait_for(lambda: not list_workers(client), HEARTBEAT_TTL_S + 5, "the heartbeat to expire")


def test_clean_stop_removes_the_heartbeat_at_once(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    worker = start_worker()
    worker.wait_subscribed(_channel(namespace))
    with Client(redis_url, namespace=namespace) as client:
        wait_for(lambda: list_workers(client), 10, "a heartbeat")
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        assert list_workers(client) == []


def test_send_with_redis_down_raises_broker_unavailable(
    redis_factory: Callable[[], DevServer], namespace: str
) -> None:
    server = redis_factory()
    server.kill()
    with (
        Client(server.url, namespace=namespace, timeout_s=1.0) as client,
        pytest.raises(BrokerUnavailable, match="unavailable"),
    ):
        client.send(user_registered, user=1, request=None)


def test_send_robust_with_redis_down_logs_and_returns_the_error(
    redis_factory: Callable[[], DevServer], namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from sigbroker import configure

    server = redis_factory()
    server.kill()
    configure(url=server.url.replace("redis://", "redis://:hunter2@"), namespace=namespace)
    with caplog.at_level(logging.ERROR, logger="sigbroker"):
        result = user_registered.send_robust(sender=None, user=1, request=None)
    assert isinstance(result, BrokerUnavailable)
    assert caplog.records and caplog.records[0].exc_info is not None
    assert "hunter2" not in caplog.text and "hunter2" not in str(result)
