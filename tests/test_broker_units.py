"""Pure parts of the worker: backoff, configuration checks."""

from __future__ import annotations

import logging

import pytest
import redis

from sigbroker import Client, Signal, Worker
from sigbroker.backoff import BACKOFF_MAX_S, compute_backoff
from sigbroker.errors import ConfigurationError

#: A password that must never reach a log line.
LOG_SECRET = "log-secret-pw"


def test_backoff_grows_exponentially_and_is_capped() -> None:
    top = [compute_backoff(n, jitter=lambda: 1.0) for n in range(1, 12)]
    assert top[:4] == [0.1, 0.2, 0.4, 0.8]
    assert max(top) == BACKOFF_MAX_S and top[-1] == BACKOFF_MAX_S
    assert top == sorted(top)


def test_backoff_jitter_stays_between_half_and_full() -> None:
    assert compute_backoff(3, jitter=lambda: 0.0) == pytest.approx(0.2)
    assert compute_backoff(3, jitter=lambda: 0.5) == pytest.approx(0.3)
    for _ in range(100):
        assert 0.2 <= compute_backoff(3) <= 0.4
    assert compute_backoff(0) == 0.0
    assert compute_backoff(10_000) <= BACKOFF_MAX_S


def test_worker_without_receivers_is_a_clear_error(redis_url: str) -> None:
    lonely = Signal(name="tests.lonely")
    from sigbroker import Client

    with Client(redis_url) as client, pytest.raises(ConfigurationError, match="-A MODULE"):
        Worker(client, signals=[lonely]).run()


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        Worker(concurrency=0)


def test_subscription_log_lines_never_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    # redis-py's error texts may quote the URL or a piece of it: the worker
    # log gets them scrubbed, like every error the client raises.
    url = f"redis://127.0.0.1:1/0?password={LOG_SECRET}"
    client = Client(url, namespace="units")
    sub = client.transport.source({"units:a.b": lambda data, done=None: None})
    failures: list[int] = []

    def broken() -> None:
        failures.append(1)
        if len(failures) >= 2:
            sub.stop()
        raise redis.ConnectionError(f"could not reach {url} (password {LOG_SECRET})")

    sub._connect = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="sigbroker"):
        sub.run()
    assert "Subscription to" in caplog.text and "lost" in caplog.text
    assert LOG_SECRET not in caplog.text
    client.close()
