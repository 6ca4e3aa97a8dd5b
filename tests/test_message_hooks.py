"""The worker's per-message hooks (``before_message``/``after_message``).

``manage.py sigbroker worker`` passes ``django.db.close_old_connections`` as
both; here they are plain functions, so this runs without Django.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sigbroker import Signal
from sigbroker._aio import EventLoopThread
from sigbroker.codec import Codec
from sigbroker.dispatch import Dispatcher
from sigbroker.pool import Pool
from sigbroker.stats import Stats
from sigbroker.transport.base import Outcome

hooked = Signal(name="tests.hooks.hooked")


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.close()


@pytest.fixture
def events() -> Iterator[list[tuple[str, Any]]]:
    got: list[tuple[str, Any]] = []

    def on_hooked(sender: Any, n: int, **kwargs: Any) -> None:
        got.append(("receiver", n))
        if n < 0:
            raise RuntimeError("negative")

    hooked.connect(on_hooked, weak=False)
    yield got
    hooked.disconnect(on_hooked)


def test_the_hooks_run_around_each_message_even_when_a_receiver_fails(
    loop: EventLoopThread, events: list[tuple[str, Any]]
) -> None:
    codec = Codec()
    handle = Dispatcher(
        codec,
        Stats(),
        loop,
        before_message=lambda: events.append(("before", None)),
        after_message=lambda: events.append(("after", None)),
    ).handler(hooked)
    assert handle(codec.pack(hooked.name, None, {"n": 1})) is Outcome.PROCESSED
    assert handle(codec.pack(hooked.name, None, {"n": -1})) is Outcome.FAILED
    assert handle(b"not a message") is Outcome.REJECTED  # no receiver runs: no hook either
    assert events == [
        ("before", None),
        ("receiver", 1),
        ("after", None),
        ("before", None),
        ("receiver", -1),
        ("after", None),
    ]


def test_a_failing_hook_is_logged_and_the_message_still_runs(
    loop: EventLoopThread, events: list[tuple[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise OSError("database is down")

    codec = Codec()
    stats = Stats()
    handle = Dispatcher(codec, stats, loop, before_message=broken).handler(hooked)
    with caplog.at_level(logging.ERROR, logger="sigbroker.dispatch"):
        assert handle(codec.pack(hooked.name, None, {"n": 1})) is Outcome.PROCESSED
    assert events == [("receiver", 1)]
    assert "message hook" in caplog.text and "database is down" in caplog.text
    assert stats.processed == 1 and stats.failed == 0


def test_with_a_pool_the_hooks_run_in_the_thread_that_calls_the_receivers(
    loop: EventLoopThread, events: list[tuple[str, Any]]
) -> None:
    # Django's connections are per thread: the hooks must tend the receivers' thread.
    threads: list[str] = []
    codec = Codec()
    pool = Pool(2)
    done = threading.Event()
    try:
        handle = Dispatcher(
            codec,
            Stats(),
            loop,
            threads=2,
            before_message=lambda: threads.append(threading.current_thread().name),
        ).handler(hooked, pool.submit)
        assert handle(codec.pack(hooked.name, None, {"n": 1}), lambda _: done.set()) is None
        assert done.wait(10)
    finally:
        pool.close()
    assert events == [("receiver", 1)]
    assert threads and threads[0] != threading.current_thread().name


def test_without_hooks_the_per_message_path_is_unwrapped(loop: EventLoopThread) -> None:
    plain = Dispatcher(Codec(), Stats(), loop)._caller(hooked)
    with_hook = Dispatcher(Codec(), Stats(), loop, after_message=lambda: None)._caller(hooked)
    assert plain.__name__ == "call" and with_hook.__name__ == "hooked"
