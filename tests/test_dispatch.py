"""The dispatcher on its own: decode, verify, call receivers robustly, count."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sigbroker import Signal
from sigbroker.codec import Codec
from sigbroker.dispatch import Dispatcher, EventLoopThread, Stats

target = Signal(name="tests.dispatch.target")
SECRET = "the-secret"


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.close()


@pytest.fixture
def calls() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    got: list[tuple[str, Any, dict[str, Any]]] = []

    def first(sender: Any, signal: Signal, **kwargs: Any) -> None:
        got.append(("first", sender, kwargs))
        raise RuntimeError("first fails")

    def second(sender: Any, **kwargs: Any) -> None:
        got.append(("second", sender, {k: v for k, v in kwargs.items() if k != "signal"}))

    async def third(sender: Any, **kwargs: Any) -> None:
        got.append(("third", sender, {k: v for k, v in kwargs.items() if k != "signal"}))

    async def fourth(sender: Any, **kwargs: Any) -> None:
        raise ValueError("fourth fails")

    for fn in (first, second, third, fourth):
        target.connect(fn, weak=False)
    yield got
    for fn in (first, second, third, fourth):
        target.disconnect(fn)


@pytest.mark.parametrize("threads", [1, 4])
def test_every_receiver_runs_and_failures_are_counted_and_logged(
    loop: EventLoopThread,
    calls: list[tuple[str, Any, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
    threads: int,
) -> None:
    codec = Codec()
    stats = Stats()
    handle = Dispatcher(codec, stats, loop, threads=threads).handler(target)
    with caplog.at_level(logging.ERROR, logger="sigbroker.dispatch"):
        handle(codec.pack(target.name, "web", {"n": 1}))
    assert [c[0] for c in calls] == ["first", "second", "third"]
    assert calls[1] == ("second", "web", {"n": 1})
    assert stats.as_dict() == {"processed": 1, "failed": 2, "rejected": 0, "resubscribes": 0}
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 2
    assert "first fails" in caplog.text and "fourth fails" in caplog.text


@pytest.mark.parametrize(
    "data",
    [
        b"junk",
        Codec(SECRET).pack("tests.dispatch.other", None, {"n": 1}),
        Codec(SECRET).pack("tests.dispatch.target", None, {"sender": 1}),
        Codec(SECRET).pack("tests.dispatch.target", None, {"signal": 1}),
        Codec().pack("tests.dispatch.target", None, {"n": 1}),
        Codec("wrong-secret").pack("tests.dispatch.target", None, {"n": 1}),
    ],
    ids=["garbage", "other-signal", "sender-arg", "signal-arg", "unsigned", "bad-signature"],
)
def test_bad_messages_are_rejected_and_counted(
    loop: EventLoopThread,
    calls: list[tuple[str, Any, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
    data: bytes,
) -> None:
    stats = Stats()
    codec = Codec(SECRET)
    handle = Dispatcher(codec, stats, loop).handler(target)
    with caplog.at_level(logging.WARNING, logger="sigbroker.dispatch"):
        handle(data)
    assert calls == []
    assert stats.rejected == 1 and stats.processed == 0
    assert "Rejected a message on tests.dispatch.target" in caplog.text
    handle(codec.pack(target.name, None, {"n": 2}))
    assert stats.processed == 1
