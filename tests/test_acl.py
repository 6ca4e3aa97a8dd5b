"""ACL users and passwords reach every connection: sending, the subscription, the heartbeat."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from sigbroker import Client, Signal, Worker
from sigbroker.broker import list_workers
from sigbroker.devserver import DevServer
from sigbroker.errors import BrokerUnavailable
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
