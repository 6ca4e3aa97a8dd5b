"""Credentials in a URL never reach output, logs or exception texts (DESIGN §2)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner

from sigbroker import Client
from sigbroker.cli import cli
from sigbroker.client import mask_url
from sigbroker.devserver import DevServer, free_port
from sigbroker.errors import BrokerUnavailable, ConfigurationError
from tests.app.signals import user_registered
from tests.helpers import WorkerProcess, wait_for

SECRET = "hunter2xyz"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # user:pass@ and :pass@, in every scheme
        ("redis://alice:hunter2xyz@host:6379/0", "redis://alice:***@host:6379/0"),
        ("rediss://:hunter2xyz@host/1", "rediss://:***@host/1"),
        ("unix://:hunter2xyz@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://u:hunter2xyz@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        # a password that holds characters it should have escaped
        ("redis://:hunter@2xyz@host/0", "redis://:***@host/0"),
        ("redis://:hun/ter2xyz@host/0", "redis://:***@host/0"),
        ("redis://:hun?ter2xyz@host/0", "redis://:***@host/0"),
        ("redis://:hunter2%40xyz@host/0", "redis://:***@host/0"),
        # the password in the query, alone or for an ACL user
        ("redis://host:6379/0?password=hunter2xyz", "redis://host:6379/0?password=***"),
        (
            "redis://host/0?username=alice&password=hunter2xyz&db=3",
            "redis://host/0?username=alice&password=***&db=3",
        ),
        ("rediss://host/0?PASSWORD=hunter2xyz", "rediss://host/0?PASSWORD=***"),
        (
            "unix:///run/redis.sock?db=0&password=hunter2xyz",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        # other parameters that carry a secret, and the fragment
        ("rediss://host/0?ssl_password=hunter2xyz", "rediss://host/0?ssl_password=***"),
        ("redis://host/0?token=hunter2xyz;db=1", "redis://host/0?token=***;db=1"),
        ("redis://host/0#password=hunter2xyz", "redis://host/0#password=***"),
        # an "@" in a query value does not end a userinfo
        (
            "redis://host/0?client_name=a@b&password=hunter2xyz",
            "redis://host/0?client_name=a@b&password=***",
        ),
        # nothing to mask
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://alice@host/0?db=1&client_name=web", "redis://alice@host/0?db=1&client_name=web"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("", ""),
    ],
)
def test_mask_url_hides_every_form_of_credential(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "hunter" not in mask_url(url)


@pytest.mark.parametrize(
    "url", ["redis://[::1", "redis://h:99999999999/0", "\x00://:@@@?&&==#", None, 7]
)
def test_mask_url_never_raises(url: object) -> None:
    masked = mask_url(url)  # type: ignore[arg-type]
    assert isinstance(masked, str)


def test_a_url_redis_py_can_not_parse_gives_no_piece_of_the_password() -> None:
    # An unescaped "/" splits the password: redis-py reads "hunter" as a port.
    with pytest.raises(ConfigurationError) as info:
        Client("redis://alice:hunter/2xyz@host/0")
    assert "hunter" not in str(info.value)


def _texts(exc: BaseException) -> str:
    """Everything a user could see of an error: its text and its whole traceback chain."""
    return str(exc) + "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("query", [f"password={SECRET}", f"username=default&password={SECRET}"])
def test_broker_unavailable_masks_a_query_password(
    query: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?{query}"
    with (
        caplog.at_level(logging.DEBUG, logger="sigbroker"),
        Client(url, namespace=namespace, timeout_s=1) as client,
        pytest.raises(BrokerUnavailable) as info,
    ):
        client.send("a.b", n=1)
    assert "password=***" in str(info.value)
    assert SECRET not in _texts(info.value)
    assert "retry" in caplog.text and SECRET not in caplog.text


def test_ping_of_an_unreachable_url_masks_the_query_password() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?password={SECRET}"
    result = CliRunner().invoke(cli, ["--url", url, "ping"])
    assert result.exit_code == 1
    assert "password=***" in result.output
    assert SECRET not in result.output


@pytest.fixture
def guarded_redis(redis_factory: Callable[[], DevServer]) -> DevServer:
    """A redis-server with a password for the default user and an ACL user ``alice``."""
    server = redis_factory()
    _guard(server)
    return server


@pytest.mark.parametrize("query", [f"password={SECRET}", f"username=alice&password={SECRET}"])
def test_ping_output_masks_the_query_password(guarded_redis: DevServer, query: str) -> None:
    url = f"{guarded_redis.url}?{query}"
    result = CliRunner().invoke(cli, ["--url", url, "ping"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("PONG from ")
    assert "password=***" in result.output
    assert SECRET not in result.output


def test_a_wrong_query_password_gives_a_masked_error(guarded_redis: DevServer) -> None:
    url = f"{guarded_redis.url}?password=wrong-{SECRET}"
    result = CliRunner().invoke(cli, ["--url", url, "ping"])
    assert result.exit_code == 1
    assert SECRET not in result.output and "wrong-" not in result.output


def _guard(server: DevServer) -> None:
    with redis.Redis.from_url(server.url) as r:
        r.acl_setuser(
            "alice", enabled=True, passwords=[f"+{SECRET}"], keys=["*"], commands=["+@all"]
        )
        r.config_set("requirepass", SECRET)


def test_a_worker_log_never_shows_the_query_password(
    guarded_redis: DevServer, start_worker: Callable[..., WorkerProcess], namespace: str
) -> None:
    # The worker logs its URL, then loses Redis (killed, restarted without
    # its password for a while: refused AUTH), then resubscribes.
    worker = start_worker(f"{guarded_redis.url}?password={SECRET}")
    worker.wait_subscribed(f"{namespace}:{user_registered.name}")
    guarded_redis.kill()
    wait_for(lambda: "Subscription to" in worker.output(), 15, "the worker to see the loss")
    guarded_redis.start()
    wait_for(lambda: worker.output().count("lost") >= 2, 15, "a refused reconnection")
    _guard(guarded_redis)
    wait_for(lambda: "Resubscribed to" in worker.output(), 30, "the worker to resubscribe")
    worker.stop()
    log = worker.output()
    assert "password=***" in log
    assert SECRET not in log
