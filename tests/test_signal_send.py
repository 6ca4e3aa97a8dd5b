"""Sending: eager mode (django.dispatch semantics) and published mode (the default client)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest

from sigbroker import config
from sigbroker.errors import BrokerUnavailable, PayloadError
from sigbroker.signal import Signal

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def echo(value: object = None, **kwargs: Any) -> object:
    return value


async def async_echo(value: object = None, **kwargs: Any) -> object:
    return value


class Counter:
    """A sync receiver that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, **kwargs: Any) -> int:
        self.count += 1
        return self.count


class AsyncCounter:
    """An async receiver instance: its ``__call__`` is a coroutine function."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, **kwargs: Any) -> int:
        self.count += 1
        return self.count


class Boom(Exception):
    pass


@pytest.fixture
def eager() -> None:
    config.configure(eager=True)


@pytest.fixture
def sig() -> Signal:
    return Signal(name="tests.sending")


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="sigbroker.signal")
    return caplog


def sigbroker_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sigbroker.signal"]


# -- eager: synchronous receivers -----------------------------------------------------


@pytest.mark.usefixtures("eager")
def test_send_returns_receiver_response_pairs(sig: Signal) -> None:
    sig.connect(echo, sender="a")
    assert sig.send(sender="a", value="test") == [(echo, "test")]
    assert sig.send(sender="b", value="test") == []


@pytest.mark.usefixtures("eager")
def test_send_with_no_receivers_returns_an_empty_list(sig: Signal) -> None:
    assert sig.send(sender=None, value=1) == []
    assert sig.send_robust(sender=None, value=1) == []


@pytest.mark.usefixtures("eager")
def test_receivers_get_signal_sender_and_arguments(sig: Signal) -> None:
    seen: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> None:
        seen.append(kwargs)

    sig.connect(record)
    sig.send("the-sender", a=1, b=2)
    assert seen == [{"signal": sig, "sender": "the-sender", "a": 1, "b": 2}]


@pytest.mark.usefixtures("eager")
def test_any_sender_receiver_gets_every_sender(sig: Signal) -> None:
    sig.connect(echo)
    assert sig.send(sender=object(), value=1) == [(echo, 1)]
    assert sig.send(sender=None, value=2) == [(echo, 2)]


@pytest.mark.usefixtures("eager")
def test_send_lets_an_error_stop_the_dispatch(sig: Signal) -> None:
    later = Counter()

    def fails(**kwargs: Any) -> None:
        raise Boom("stop")

    sig.connect(fails)
    sig.connect(later)
    with pytest.raises(Boom):
        sig.send(sender=None)
    assert later.count == 0


@pytest.mark.usefixtures("eager")
def test_send_robust_returns_and_logs_errors(sig: Signal, errors: pytest.LogCaptureFixture) -> None:
    later = Counter()

    def fails(**kwargs: Any) -> None:
        raise Boom("this")

    sig.connect(fails)
    sig.connect(later)
    [(first, err), (second, response)] = sig.send_robust(sender=None)
    assert first is fails and isinstance(err, Boom) and err.args == ("this",)
    assert err.__traceback__ is not None
    assert (second, response) == (later, 1)
    [record] = sigbroker_records(errors)
    assert record.getMessage() == (
        "Error calling test_send_robust_returns_and_logs_errors.<locals>.fails "
        "in Signal.send_robust() (this)"
    )
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is err


@pytest.mark.usefixtures("eager")
def test_robust_failure_of_a_receiver_without_qualname_is_described(
    sig: Signal, errors: pytest.LogCaptureFixture
) -> None:
    failing = functools.partial(Counter.__call__)  # no __qualname__, and it fails on call
    sig.connect(failing)
    [(_, err)] = sig.send_robust(sender=None)
    assert isinstance(err, TypeError)
    assert "functools.partial" in sigbroker_records(errors)[0].getMessage()


@pytest.mark.usefixtures("eager")
def test_robust_failures_also_go_to_djangos_logger_when_django_is_loaded(
    sig: Signal, errors: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(**kwargs: Any) -> None:
        raise Boom("x")

    sig.connect(fails)
    monkeypatch.delitem(sys.modules, "django", raising=False)
    sig.send_robust(sender=None)
    assert [r.name for r in errors.records] == ["sigbroker.signal"]
    errors.clear()
    monkeypatch.setitem(sys.modules, "django", types.ModuleType("django"))
    sig.send_robust(sender=None)
    names = [r.name for r in errors.records]
    assert names == ["sigbroker.signal", "django.dispatch"]
    assert errors.records[0].getMessage() == errors.records[1].getMessage()
    assert errors.records[1].exc_info is not None


# -- eager: asynchronous receivers ----------------------------------------------------


@pytest.mark.usefixtures("eager")
def test_send_runs_sync_receivers_first_then_async_ones(sig: Signal) -> None:
    first_async, sync = AsyncCounter(), Counter()
    sig.connect(first_async)
    sig.connect(sync)
    sig.connect(async_echo)
    assert sig.send(sender=None, value="v") == [(sync, 1), (first_async, 1), (async_echo, "v")]


@pytest.mark.usefixtures("eager")
def test_send_runs_async_receivers_concurrently(sig: Signal) -> None:
    a_ready, b_ready = asyncio.Event(), asyncio.Event()

    async def a(**kwargs: Any) -> str:
        a_ready.set()
        await asyncio.wait_for(b_ready.wait(), timeout=10)  # only if b runs meanwhile
        return "a"

    async def b(**kwargs: Any) -> str:
        b_ready.set()
        await asyncio.wait_for(a_ready.wait(), timeout=10)
        return "b"

    sig.connect(a)
    sig.connect(b)
    assert sig.send(sender=None) == [(a, "a"), (b, "b")]


@pytest.mark.usefixtures("eager")
def test_send_robust_mixes_sync_and_async_failures(
    sig: Signal, errors: pytest.LogCaptureFixture
) -> None:
    exc = Boom()

    async def fails(**kwargs: Any) -> None:
        raise exc

    counter, sync = AsyncCounter(), Counter()
    sig.connect(fails)
    sig.connect(counter)
    sig.connect(sync)
    assert sig.send_robust(sender=None) == [(sync, 1), (fails, exc), (counter, 1)]
    assert "in Signal.send_robust() ()" in sigbroker_records(errors)[0].getMessage()


@pytest.mark.usefixtures("eager")
def test_send_propagates_an_async_receivers_error(sig: Signal) -> None:
    async def fails(**kwargs: Any) -> None:
        raise Boom("async")

    sig.connect(fails)
    with pytest.raises(Boom, match="async"):
        sig.send(sender=None)


@pytest.mark.usefixtures("eager")
def test_send_inside_a_running_loop_uses_a_fresh_loop_in_another_thread(sig: Signal) -> None:
    where: list[tuple[int, asyncio.AbstractEventLoop, str]] = []

    async def record(**kwargs: Any) -> str:
        where.append((threading.get_ident(), asyncio.get_running_loop(), request_id.get()))
        return "done"

    sig.connect(record)

    async def caller() -> tuple[Any, int, asyncio.AbstractEventLoop]:
        request_id.set("req-7")
        return sig.send(sender=None), threading.get_ident(), asyncio.get_running_loop()

    result, caller_thread, caller_loop = asyncio.run(caller())
    assert result == [(record, "done")]
    [(thread, loop, seen_request)] = where
    assert thread != caller_thread and loop is not caller_loop
    assert seen_request == "req-7"  # context variables travel with the call


@pytest.mark.usefixtures("eager")
def test_send_keeps_the_threads_current_event_loop(sig: Signal) -> None:
    sig.connect(async_echo)
    outcome: list[bool] = []

    def in_thread() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            sig.send(sender=None, value=1)
            outcome.append(asyncio.get_event_loop() is loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert outcome == [True]


@pytest.mark.usefixtures("eager")
def test_asend_runs_sync_receivers_in_a_thread_and_async_ones_on_the_loop(sig: Signal) -> None:
    threads: dict[str, int] = {}

    def sync_receiver(**kwargs: Any) -> str:
        threads["sync"] = threading.get_ident()
        return "sync"

    async def async_receiver(**kwargs: Any) -> str:
        threads["async"] = threading.get_ident()
        return "async"

    sig.connect(async_receiver)
    sig.connect(sync_receiver)

    async def main() -> Any:
        threads["loop"] = threading.get_ident()
        return await sig.asend(sender=None)

    result = asyncio.run(main())
    assert result == [(sync_receiver, "sync"), (async_receiver, "async")]
    assert threads["async"] == threads["loop"] != threads["sync"]


@pytest.mark.usefixtures("eager")
def test_asend_runs_sync_and_async_receivers_concurrently(sig: Signal) -> None:
    sync_started, async_started = threading.Event(), threading.Event()

    # Each waits for the other to have started: only possible if they overlap.
    def sync_receiver(**kwargs: Any) -> str:
        sync_started.set()
        return "sync" if async_started.wait(10) else "timeout"

    async def async_receiver(**kwargs: Any) -> str:
        async_started.set()
        ok = await asyncio.to_thread(sync_started.wait, 10)  # without blocking the loop
        return "async" if ok else "timeout"

    sig.connect(async_receiver)
    sig.connect(sync_receiver)
    result = asyncio.run(sig.asend(sender=None))
    assert result == [(sync_receiver, "sync"), (async_receiver, "async")]


@pytest.mark.usefixtures("eager")
def test_asend_with_only_async_receivers(sig: Signal) -> None:
    counter = AsyncCounter()
    sig.connect(counter)
    assert asyncio.run(sig.asend(sender=None)) == [(counter, 1)]
    assert asyncio.run(sig.asend_robust(sender=None)) == [(counter, 2)]


@pytest.mark.usefixtures("eager")
def test_asend_propagates_errors(sig: Signal) -> None:
    def fails(**kwargs: Any) -> None:
        raise Boom("sync side")

    sig.connect(fails)
    with pytest.raises(Boom, match="sync side"):
        asyncio.run(sig.asend(sender=None))


@pytest.mark.usefixtures("eager")
def test_asend_robust_returns_and_logs_errors(
    sig: Signal, errors: pytest.LogCaptureFixture
) -> None:
    sync_exc, async_exc = Boom("sync"), Boom("async")

    def sync_fails(**kwargs: Any) -> None:
        raise sync_exc

    async def async_fails(**kwargs: Any) -> None:
        raise async_exc

    counter = Counter()
    sig.connect(async_fails)
    sig.connect(sync_fails)
    sig.connect(counter)
    result = asyncio.run(sig.asend_robust(sender=None))
    assert result == [(sync_fails, sync_exc), (counter, 1), (async_fails, async_exc)]
    messages = sorted(r.getMessage() for r in sigbroker_records(errors))
    assert messages == [
        "Error calling test_asend_robust_returns_and_logs_errors.<locals>.async_fails "
        "in Signal.send_robust() (async)",
        "Error calling test_asend_robust_returns_and_logs_errors.<locals>.sync_fails "
        "in Signal.send_robust() (sync)",
    ]
    assert all(r.exc_info is not None for r in sigbroker_records(errors))


@pytest.mark.usefixtures("eager")
def test_async_receivers_are_recognized_in_every_form(sig: Signal) -> None:
    class Marked:
        """Marked the way asgiref's markcoroutinefunction does before Python 3.12."""

        def __call__(self, **kwargs: Any) -> Any:
            return async_echo(value="marked")

    marked = Marked()
    mark = getattr(asyncio.coroutines, "_is_coroutine", None)
    if mark is None:  # pragma: no cover - Python >= 3.14 dropped the legacy marker
        pytest.skip("no legacy coroutine marker on this Python")
    marked._is_coroutine = mark  # type: ignore[attr-defined]
    partial = functools.partial(async_echo, value="partial")
    instance = AsyncCounter()
    for receiver in (marked, partial, instance):
        sig.connect(receiver)
    assert [is_async for _, _, is_async in sig.receivers] == [True, True, True]
    assert sig.send(sender=None) == [(marked, "marked"), (partial, "partial"), (instance, 1)]


# -- eager: providing_args ------------------------------------------------------------


@pytest.fixture
def declared() -> Signal:
    return Signal(providing_args=["user"], name="tests.declared")


@pytest.mark.usefixtures("eager")
def test_eager_sends_check_the_payload_before_any_receiver_runs(declared: Signal) -> None:
    counter = Counter()
    declared.connect(counter)
    with pytest.raises(PayloadError, match="'usr'"):
        declared.send(sender=None, usr=1)
    with pytest.raises(PayloadError, match="'usr'"):
        declared.send_robust(sender=None, usr=1)  # a caller's bug: raised, not returned
    with pytest.raises(PayloadError, match="'user'"):
        asyncio.run(declared.asend(sender=None))
    with pytest.raises(PayloadError, match="'user'"):
        asyncio.run(declared.asend_robust(sender=None))
    assert counter.count == 0
    assert declared.send(sender=None, user="ann") == [(counter, 1)]


@pytest.mark.usefixtures("eager")
def test_payload_is_checked_even_without_receivers(declared: Signal) -> None:
    with pytest.raises(PayloadError):
        declared.send(sender=None, usr=1)


def test_eager_mode_from_the_environment(sig: Signal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGBROKER_EAGER", "1")
    monkeypatch.setattr(config, "default_client", _no_client)
    sig.connect(echo)
    assert sig.send(sender=None, value=5) == [(echo, 5)]


# -- published mode: the default client -----------------------------------------------


def _no_client(factory: object) -> Any:
    raise AssertionError("eager mode must not build a client")


class FakeClient:
    """Stands in for sigbroker.client.Client: records sends, returns a count or raises."""

    def __init__(self, count: int = 3, error: Exception | None = None) -> None:
        self.count = count
        self.error = error
        self.sent: list[tuple[str, Signal, object, dict[str, Any]]] = []

    def send(self, signal: Signal, sender: object = None, **kwargs: Any) -> int:
        self.sent.append(("send", signal, sender, kwargs))
        if self.error is not None:
            raise self.error
        return self.count

    async def asend(self, signal: Signal, sender: object = None, **kwargs: Any) -> int:
        self.sent.append(("asend", signal, sender, kwargs))
        if self.error is not None:
            raise self.error
        return self.count


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClient]:
    fake = FakeClient()
    monkeypatch.setattr(config, "default_client", lambda factory: fake)
    yield fake


def test_send_publishes_through_the_default_client(sig: Signal, client: FakeClient) -> None:
    counter = Counter()
    sig.connect(counter)
    assert sig.send("billing.Invoice", amount=5) == 3
    assert asyncio.run(sig.asend(None, amount=6)) == 3
    assert client.sent == [
        ("send", sig, "billing.Invoice", {"amount": 5}),
        ("asend", sig, None, {"amount": 6}),
    ]
    assert counter.count == 0  # local receivers run in workers, not here


def test_published_send_leaves_payload_checks_to_the_client(
    client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = Signal(providing_args=["user"], name="tests.declared_pub")
    checks: list[object] = []
    monkeypatch.setattr(declared, "validate", checks.append)
    declared.send(None, usr=1)
    declared.send_robust(None, usr=1)
    asyncio.run(declared.asend(None, usr=1))
    asyncio.run(declared.asend_robust(None, usr=1))
    assert checks == []
    assert len(client.sent) == 4


def test_send_robust_returns_the_count(sig: Signal, client: FakeClient) -> None:
    assert sig.send_robust(None, x=1) == 3
    assert asyncio.run(sig.asend_robust(None, x=1)) == 3


@pytest.mark.parametrize(
    "error", [BrokerUnavailable("redis is down"), PayloadError("bad payload"), RuntimeError("?")]
)
def test_send_robust_returns_and_logs_any_failure(
    sig: Signal, client: FakeClient, errors: pytest.LogCaptureFixture, error: Exception
) -> None:
    client.error = error
    assert sig.send_robust(None, x=1) is error
    assert asyncio.run(sig.asend_robust(None, x=1)) is error
    records = sigbroker_records(errors)
    assert [r.getMessage() for r in records] == [
        f"Error sending tests.sending in Signal.send_robust() ({error})",
        f"Error sending tests.sending in Signal.asend_robust() ({error})",
    ]
    assert all(r.exc_info is not None and r.exc_info[1] is error for r in records)


def test_send_raises_what_the_client_raises(sig: Signal, client: FakeClient) -> None:
    client.error = BrokerUnavailable("down")
    with pytest.raises(BrokerUnavailable):
        sig.send(None)
    with pytest.raises(BrokerUnavailable):
        asyncio.run(sig.asend(None))


def test_send_robust_survives_a_failure_to_build_the_client(
    monkeypatch: pytest.MonkeyPatch, errors: pytest.LogCaptureFixture
) -> None:
    def broken(factory: object) -> Any:
        raise BrokerUnavailable("no client")

    monkeypatch.setattr(config, "default_client", broken)
    unnamed = Signal()  # the log must not fail on a signal without a name either
    result = unnamed.send_robust(None)
    assert isinstance(result, BrokerUnavailable)
    assert "(unnamed)" in sigbroker_records(errors)[0].getMessage()
