"""The dispatcher on its own: decode, verify, call receivers robustly, count."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sigbroker import Signal
from sigbroker import sequences as sequences_module
from sigbroker._aio import EventLoopThread
from sigbroker.codec import Codec, Envelope
from sigbroker.dispatch import Dispatcher
from sigbroker.sequences import MAX_OPEN_GAPS, MAX_SETTLED_GAPS
from sigbroker.stats import Stats
from sigbroker.throttle import Throttle

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
    assert stats.as_dict() == {
        "processed": 1,
        "failed": 2,
        "rejected": 0,
        "rejected_by": {},
        "lost": 0,
        "resubscribes": 0,
        "retried": 0,
        "dead_lettered": 0,
        "claimed": 0,
    }
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
    reason = {"unsigned": "signature", "bad-signature": "signature"}.get(
        caplog.records[0].message, "invalid"
    )
    assert sum(stats.rejected_by.values()) == 1 and reason in {"invalid", "signature"}
    assert "Rejected a message on tests.dispatch.target" in caplog.text
    handle(codec.pack(target.name, None, {"n": 2}))
    assert stats.processed == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"junk", "invalid"),
        (Codec().pack("tests.dispatch.target", None, {"n": 1}), "signature"),
        (Codec("wrong-secret").pack("tests.dispatch.target", None, {"n": 1}), "signature"),
        (Codec(SECRET).pack("tests.dispatch.other", None, {"n": 1}), "invalid"),
    ],
)
def test_rejections_are_counted_by_reason(loop: EventLoopThread, data: bytes, reason: str) -> None:
    stats = Stats()
    Dispatcher(Codec(SECRET), stats, loop).handler(target)(data)
    assert stats.rejected_by == {reason: 1}


# -- sequence numbers: every loss counted ----------------------------------------


def message(
    seq: int,
    *,
    origin: str = "web-1:7:abcdef01",
    secret: str | None = None,
    sent_at: float | None = None,
    message_id: str | None = None,
) -> bytes:
    """A message of ``target`` with the given sequence number and origin."""
    envelope = Envelope(
        target.name,
        None,
        {"n": seq},
        message_id or f"{seq:032x}",
        time.time() if sent_at is None else sent_at,
        origin,
        seq,
    )
    return Codec(secret).encode(envelope)


@pytest.fixture
def received() -> Iterator[list[int]]:
    got: list[int] = []

    def record(sender: Any, n: int, **kwargs: Any) -> None:
        got.append(n)

    target.connect(record, weak=False)
    yield got
    target.disconnect(record)


def test_gaps_in_an_origins_sequence_are_counted_as_lost_with_one_log_line(
    loop: EventLoopThread, received: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    handle = dispatcher.handler(target)
    delivered = [3, 4, 5, 9, 10, 400, 401]  # the worker first hears of this origin at 3
    for seq in delivered:
        handle(message(seq))
    handle(message(1, origin="web-2:8:abcdef02"))
    handle(message(3, origin="web-2:8:abcdef02"))
    assert received == [*delivered, 1, 3]
    with caplog.at_level(logging.WARNING, logger="sigbroker.dispatch"):
        assert dispatcher.settle(everything=True) == 3 + 389 + 1
    assert stats.lost == 393 and stats.processed == 9 and stats.rejected == 0
    lines = [r.message for r in caplog.records]
    assert lines[0].startswith("Lost 392 messages of tests.dispatch.target from web-1:7:abcdef01")
    assert "no reconnect meanwhile" in lines[0]
    assert "1 more like this" in " ".join(lines) or len(lines) == 1
    assert dispatcher.settle(everything=True) == 0


def test_a_gap_after_a_resubscription_names_it_as_the_likely_cause(
    loop: EventLoopThread, received: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    handle = dispatcher.handler(target)
    handle(message(1))
    stats.resubscribes += 1
    handle(message(5000))
    with caplog.at_level(logging.WARNING, logger="sigbroker.dispatch"):
        dispatcher.settle(everything=True)
    assert stats.lost == 4998
    assert "client-output-buffer-limit" in caplog.text


def test_messages_a_little_out_of_order_are_not_lost(
    loop: EventLoopThread, received: list[int]
) -> None:
    # Threads of one sender publish in the order they reach the connection,
    # which may differ by a few places from the order their numbers were taken.
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    handle = dispatcher.handler(target)
    order = [1, 3, 2, 6, 4, 5, 10, 8, 9, 7]
    for seq in order:
        handle(message(seq))
    assert dispatcher.settle() == 0  # nothing has been missing for SETTLE_S
    assert dispatcher.settle(everything=True) == 0
    assert received == order and stats.lost == 0 and stats.rejected == 0


@pytest.mark.parametrize("secret", [None, SECRET])
def test_a_message_seen_before_is_rejected_as_a_replay(
    loop: EventLoopThread, received: list[int], secret: str | None
) -> None:
    stats = Stats()
    handle = Dispatcher(Codec(secret), stats, loop).handler(target)
    captured = message(1, secret=secret)
    for _ in range(6):
        handle(captured)
    handle(message(2, secret=secret))
    handle(message(1, secret=secret, message_id="f" * 32))  # a new id does not help
    assert received == [1, 2]
    assert stats.rejected_by == {"replay": 6}


def test_signed_messages_outside_the_replay_window_are_rejected(
    loop: EventLoopThread, received: list[int]
) -> None:
    stats = Stats()
    handle = Dispatcher(Codec(SECRET), stats, loop, max_age_s=60).handler(target)
    year = 365 * 24 * 3600
    handle(message(1, secret=SECRET, sent_at=time.time() - year))
    handle(message(2, secret=SECRET, sent_at=time.time() - 61))
    handle(message(3, secret=SECRET, sent_at=time.time() + 61))  # a sender's clock far ahead
    handle(message(4, secret=SECRET, sent_at=time.time() - 30))
    assert received == [4]
    assert stats.rejected_by == {"replay": 3}
    # Without a secret anyone can write any time: the window is not checked.
    unsigned = Stats()
    Dispatcher(Codec(), unsigned, loop, max_age_s=60).handler(target)(
        message(1, sent_at=time.time() - year)
    )
    assert unsigned.processed == 1


def test_signed_version_1_messages_are_checked_against_replay_by_id(
    loop: EventLoopThread, received: list[int]
) -> None:
    old = dataclasses.replace(
        Codec(SECRET).decode(message(0, secret=SECRET)), kwargs={"n": 1}, seq=0
    )
    data = Codec(SECRET).encode(old)
    stats = Stats()
    handle = Dispatcher(Codec(SECRET), stats, loop).handler(target)
    handle(data)
    handle(data)
    assert received == [1] and stats.rejected_by == {"replay": 1}


def test_a_flood_of_bad_messages_costs_a_few_log_lines(
    loop: EventLoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    now = [0.0]
    dispatcher.throttle = Throttle(
        logging.getLogger("sigbroker.dispatch"), 10, clock=lambda: now[0]
    )
    handle = dispatcher.handler(target)
    with caplog.at_level(logging.WARNING, logger="sigbroker.dispatch"):
        for i in range(10_000):
            handle(b"junk %d" % i)
        dispatcher.settle()  # the interval has not ended: nothing more to say yet
        assert len(caplog.records) == 1
        now[0] = 10.0
        dispatcher.settle()
    assert stats.rejected_by == {"invalid": 10_000}
    assert len(caplog.records) == 2
    assert caplog.records[1].message.startswith("9999 more like this in the last 10s")


def test_the_throttle_reports_what_it_suppressed_with_the_next_line() -> None:
    log = logging.getLogger("tests.throttle")
    now = [0.0]
    throttle = Throttle(log, 5, clock=lambda: now[0])
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        for _ in range(3):
            throttle.warning("a", "bad a")
        throttle.warning("b", "bad b")
        now[0] = 6.0
        throttle.warning("a", "bad a again")
    finally:
        log.removeHandler(handler)
    assert lines == ["bad a", "bad b", "bad a again (2 more like it in the last 5s)"]


def test_in_flight_names_the_messages_whose_receivers_run(loop: EventLoopThread) -> None:
    seen: list[list[tuple[str, str]]] = []
    dispatcher = Dispatcher(Codec(), Stats(), loop)

    def look(sender: Any, **kwargs: Any) -> None:
        seen.append(dispatcher.in_flight())

    target.connect(look, weak=False)
    try:
        data = message(1)
        dispatcher.handler(target)(data)
    finally:
        target.disconnect(look)
    assert seen == [[(target.name, f"{1:032x}")]]
    assert dispatcher.in_flight() == []


def test_submit_runs_the_receivers_elsewhere_after_the_checks(
    loop: EventLoopThread, received: list[int]
) -> None:
    queued: list[Callable[[], None]] = []
    stats = Stats()
    handle = Dispatcher(Codec(), stats, loop, threads=2).handler(target, submit=queued.append)
    handle(message(1))
    handle(message(1))  # checked in arrival order: a replay, never queued
    assert len(queued) == 1 and received == []
    queued[0]()
    assert received == [1] and stats.processed == 1 and stats.rejected == 1


def test_a_message_that_arrives_after_its_gap_was_counted_still_runs(
    loop: EventLoopThread, received: list[int]
) -> None:
    # A batch() held open while other sends go out: its messages carry lower
    # numbers and reach Redis later than the settle window.
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    handle = dispatcher.handler(target)
    for seq in (1, 4, 5):
        handle(message(seq))
    assert dispatcher.settle(everything=True) == 2 and stats.lost == 2
    handle(message(3))
    handle(message(2))
    assert received == [1, 4, 5, 3, 2]
    assert stats.lost == 0 and stats.rejected == 0
    handle(message(2))  # but only once
    assert stats.rejected_by == {"replay": 1} and stats.lost == 0


def test_a_sender_that_skips_numbers_keeps_bounded_state(
    loop: EventLoopThread, received: list[int]
) -> None:
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    handle = dispatcher.handler(target)
    for seq in range(1, 2001, 2):  # every other number: 999 gaps
        handle(message(seq))
    (sequences,) = dispatcher._sequences
    assert len(sequences._open["web-1:7:abcdef01"]) == MAX_OPEN_GAPS
    assert len(sequences._settled["web-1:7:abcdef01"]) == MAX_SETTLED_GAPS
    assert stats.lost == 999 - MAX_OPEN_GAPS
    dispatcher.settle(everything=True)
    assert stats.lost == 999 and stats.processed == 1000


def test_forgotten_origins_have_their_open_gaps_counted(
    loop: EventLoopThread, received: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sequences_module, "MAX_ORIGINS", 4)
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    handle = dispatcher.handler(target)
    handle(message(1, origin="a:1:0"))
    handle(message(5, origin="a:1:0"))  # 3 missing, still open
    for name in ("b:1:0", "c:1:0", "d:1:0", "e:1:0"):
        handle(message(1, origin=name))
    assert stats.lost == 3  # "a" was forgotten with its gap, which counted
    (sequences,) = dispatcher._sequences
    assert "a:1:0" not in sequences.highest and len(sequences.highest) == 3


def test_the_dispatcher_keeps_one_handler_per_signal_for_handle(
    loop: EventLoopThread, received: list[int]
) -> None:
    stats = Stats()
    dispatcher = Dispatcher(Codec(), stats, loop)
    dispatcher.handle(target, message(1))
    dispatcher.handle(target, message(1))
    assert len(dispatcher._sequences) == 1
    assert received == [1] and stats.rejected_by == {"replay": 1}
