"""ACL users and passwords reach every connection: sending, the subscription, the heartbeat."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from sigbroker import Client, Signal, Worker
from sigbroker.broker import list_workers
from sigbroker.devserver import DevServer
from sigbroker.errors import BatchRefused, BrokerUnavailable, DeliveryUnknown
from tests.helpers import wait_for

guarded = Signal(providing_args=["n"])


@pytest.fixture
def acl_server(redis_factory: Callable[[], DevServer]) -> DevServer:
    server = redis_factory()
    with redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", "alice", "on", ">s3cret-pw", "~*", "&*", "+@all")
        admin.execute_command("ACL", "SETUSER", "mallory", "on", ">m-pw", "~*", "&*", "-@all")
        admin.execute_command("ACL", "SETUSER", "default", "off")
    return server


def test_an_acl_user_sends_and_receives(acl_server: DevServer, namespace: str) -> None:
    url = f"redis://alice:s3cret-pw@127.0.0.1:{acl_server.port}/0"
    got: list[int] = []

    def on_guarded(sender: Any, n: int, **kwargs: Any) -> None:
        got.append(n)

    guarded.connect(on_guarded)
    try:
        with Client(url, namespace=namespace) as client:
            worker = Worker(client, signals=[guarded])
            worker.start()
            try:
                assert worker.wait_ready(10)
                assert client.send(guarded, n=1) == 1
                wait_for(lambda: got == [1], 10, "delivery")
                wait_for(lambda: list_workers(client), 10, "the heartbeat")
            finally:
                assert worker.stop(10)
    finally:
        guarded.disconnect(on_guarded)


def test_a_refused_user_gets_a_clear_error_without_the_password(
    acl_server: DevServer, namespace: str
) -> None:
    for url in (
        f"redis://mallory:m-pw@127.0.0.1:{acl_server.port}/0",  # no permission to PUBLISH
        f"redis://alice:wrong-pw@127.0.0.1:{acl_server.port}/0",  # bad password
    ):
        with Client(url, namespace=namespace, timeout_s=1) as client:
            with pytest.raises(BrokerUnavailable) as info:
                client.send(guarded, n=1)
            assert "pw" not in str(info.value)
            assert ":***@" in str(info.value)


@pytest.fixture(params=["hiredis", "redis-py-parser"])
def reply_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the client's hiredis reply reader, and with redis-py's parser instead."""
    if request.param == "redis-py-parser":
        monkeypatch.setattr("sigbroker.transport.redis_endpoint.hiredis", None)
    return str(request.param)


@pytest.fixture
def half_allowed_url(acl_server: DevServer, namespace: str) -> str:
    """A URL whose user may publish on the ``ok.*`` signals of the namespace and nothing else."""
    with redis.Redis.from_url(_alice(acl_server)) as admin:
        admin.execute_command(
            "ACL", "SETUSER", "bob", "on", ">b-pw", "~*", "resetchannels", f"&{namespace}:ok.*",
            "+@all",
        )  # fmt: skip
    return f"redis://bob:b-pw@127.0.0.1:{acl_server.port}/0"


def _alice(server: DevServer) -> str:
    return f"redis://alice:s3cret-pw@127.0.0.1:{server.port}/0"


@contextlib.contextmanager
def _listener(url: str, channel: str) -> Iterator[Any]:
    with redis.Redis.from_url(url) as r:
        sub = r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        sub.subscribe(channel)
        wait_for(lambda: sub.get_message(timeout=0.1) is None and sub.subscribed, 10, "sub")
        try:
            yield sub
        finally:
            sub.close()


def _drain(sub: Any, n: int) -> list[bytes]:
    got: list[bytes] = []

    def enough() -> bool:
        while (message := sub.get_message(timeout=0.1)) is not None:
            got.append(message["data"])
        return len(got) >= n

    wait_for(enough, 10, f"{n} messages")
    assert sub.get_message(timeout=0.2) is None  # and no more
    return got


def test_a_refused_message_in_a_batch_leaves_the_others_delivered(
    acl_server: DevServer, half_allowed_url: str, namespace: str, reply_parser: str
) -> None:
    with _listener(_alice(acl_server), f"{namespace}:ok.a") as sub:
        with Client(half_allowed_url, namespace=namespace) as client:
            with pytest.raises(BatchRefused) as info, client.batch() as batch:
                for n in range(6):
                    batch.send("ok.a" if n % 2 == 0 else "no.b", n=n)
            results = info.value.results
            assert results[0::2] == [1, 1, 1]
            assert all(isinstance(r, BrokerUnavailable) for r in results[1::2])
            assert "no permissions" in str(results[1]) and "b-pw" not in str(info.value)
            assert batch.results == []
            # The connection is in step: the next send gets its own reply.
            assert client.send("ok.a", n=6) == 1
            with pytest.raises(BrokerUnavailable, match="refused the message"):
                client.send("no.b", n=8)
            assert client.send("ok.a", n=9) == 1
        assert len(_drain(sub, 5)) == 5


def test_a_refused_send_in_a_pipeline_fails_only_that_sender(
    acl_server: DevServer,
    half_allowed_url: str,
    namespace: str,
    reply_parser: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first sender's round trip is held until four others have queued
    # behind it: they then go as one pipeline, allowed and refused mixed.
    with _listener(_alice(acl_server), f"{namespace}:ok.a") as sub:
        with Client(half_allowed_url, namespace=namespace) as client:
            publisher = client.transport._publisher
            real = publisher._round_trip
            release = threading.Event()
            calls: list[int] = []

            def held_first(payload: bytes, replies: int, *args: Any) -> Any:
                calls.append(replies)
                if len(calls) == 1:
                    release.wait(30)
                return real(payload, replies, *args)

            monkeypatch.setattr(publisher, "_round_trip", held_first)
            outcomes: dict[str, object] = {}

            def send(name: str, n: int) -> None:
                try:
                    outcomes[f"{name}{n}"] = client.send(name, n=n)
                except BrokerUnavailable as exc:
                    outcomes[f"{name}{n}"] = exc

            first = threading.Thread(target=send, args=("ok.a", 0))
            first.start()
            wait_for(lambda: calls, 5, "the first round trip")
            others = [
                threading.Thread(target=send, args=(name, n))
                for n, name in enumerate(["ok.a", "no.b", "ok.a", "no.b"], start=1)
            ]
            for t in others:
                t.start()
            wait_for(lambda: len(publisher._queue) == 4, 5, "four queued senders")
            release.set()
            for t in [first, *others]:
                t.join(30)
            assert calls == [1, 4]  # one pipeline for the four queued sends
            assert {k: v for k, v in outcomes.items() if k.startswith("ok")} == {
                "ok.a0": 1,
                "ok.a1": 1,
                "ok.a3": 1,
            }
            for key in ("no.b2", "no.b4"):
                assert isinstance(outcomes[key], BrokerUnavailable), outcomes
                assert not isinstance(outcomes[key], DeliveryUnknown)
                assert "no permissions" in str(outcomes[key])
            assert client.send("ok.a", n=5) == 1  # still in step
        assert len(_drain(sub, 4)) == 4
