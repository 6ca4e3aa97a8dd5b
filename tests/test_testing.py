"""sigbroker.testing: sends through the real codec, delivered in-process."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from sigbroker import Client, Signal
from sigbroker.errors import PayloadError
from sigbroker.testing import InMemoryBroker, in_memory
from tests.helpers import ROOT

order_placed = Signal(providing_args=["order_id", "total", "at"])


class Order:
    pass


def test_sends_are_recorded_decoded_and_delivered_like_a_worker() -> None:
    got: list[tuple[Any, dict[str, Any]]] = []

    def on_order(sender: Any, signal: Signal, **kwargs: Any) -> None:
        got.append((sender, kwargs))

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    order_placed.connect(on_order, sender=Order)
    order_placed.connect(broken)
    at = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    try:
        with in_memory() as broker:
            assert order_placed.send(sender=Order, order_id=7, total=Decimal("9.90"), at=at) == 1
            assert order_placed.send(sender="elsewhere", order_id=8, total=None, at=None) == 1
    finally:
        order_placed.disconnect(on_order, sender=Order)
        order_placed.disconnect(broken)
    assert [m.kwargs["order_id"] for m in broker.sent] == [7, 8]
    assert broker.sent[0].sender == f"{Order.__module__}.{Order.__qualname__}"
    assert got == [(Order, {"order_id": 7, "total": Decimal("9.90"), "at": at})]
    assert broker.stats.processed == 2 and broker.stats.failed == 2


def test_payload_errors_surface_as_in_production() -> None:
    with in_memory() as broker:
        with pytest.raises(PayloadError, match="total"):
            order_placed.send(sender=None, order_id=1, total=object(), at=None)
        with pytest.raises(PayloadError, match="at"):
            order_placed.send(sender=None, order_id=1, total=1)
    assert broker.sent == []


def test_without_delivery_nothing_runs_and_send_returns_zero() -> None:
    called: list[int] = []
    order_placed.connect(lambda sender, **kw: called.append(1), weak=False, dispatch_uid="x")
    try:
        with in_memory(deliver=False) as broker:
            assert order_placed.send(sender=None, order_id=1, total=1, at=None) == 0
    finally:
        order_placed.disconnect(dispatch_uid="x")
    assert called == [] and len(broker.sent) == 1


# -- batch(), publish(), send_robust, asend: the real client code, no network --------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything opens a connection."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"a network connection was attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(asyncio, "open_connection", refuse)


@pytest.fixture
def orders() -> Iterator[list[tuple[Any, int]]]:
    """Connect a receiver of ``order_placed`` for the test; yield what it got, in order."""
    got: list[tuple[Any, int]] = []

    def on_order(sender: Any, order_id: int, **kwargs: Any) -> None:
        got.append((sender, order_id))

    order_placed.connect(on_order, weak=False, dispatch_uid="orders-fixture")
    try:
        yield got
    finally:
        order_placed.disconnect(dispatch_uid="orders-fixture")


unheard = Signal(providing_args=["n"])
ORDER_REF = f"{Order.__module__}.{Order.__qualname__}"


def test_batch_publishes_in_order_and_delivers_each_message(
    no_network: None, orders: list[tuple[Any, int]]
) -> None:
    with in_memory() as broker:
        with broker.batch() as batch:
            for n in range(5):
                batch.send(order_placed, sender=Order, order_id=n, total=n, at=None)
            batch.send(unheard, n=1)
            assert orders == []  # nothing leaves before the block ends
        assert batch.results == [1, 1, 1, 1, 1, 0]
    # A receiver connected for any sender gets the reference, as in a worker.
    assert orders == [(ORDER_REF, n) for n in range(5)]
    assert [m.signal for m in broker.sent] == [order_placed.name] * 5 + [unheard.name]
    assert [m.kwargs.get("order_id") for m in broker.sent] == [0, 1, 2, 3, 4, None]
    assert broker.stats.processed == 5 and broker.stats.failed == 0


def test_a_failed_batch_publishes_nothing(no_network: None, orders: list[tuple[Any, int]]) -> None:
    with in_memory() as broker, pytest.raises(RuntimeError), broker.batch() as batch:
        batch.send(order_placed, sender=Order, order_id=1, total=1, at=None)
        raise RuntimeError("abandon")
    assert orders == [] and broker.sent == [] and batch.results == []


def test_publish_delivers_raw_messages_and_counts_rejections(
    no_network: None, orders: list[tuple[Any, int]]
) -> None:
    with in_memory() as broker:
        data = broker.encode(order_placed, Order, {"order_id": 3, "total": 1, "at": None})
        assert broker.publish(broker.channel(order_placed), data) == 1
        # Not a message: a subscriber gets it (PUBLISH counts it) and rejects it.
        assert broker.publish(broker.channel(order_placed), b"\x93garbage") == 1
        # No local receiver for the channel, or not our namespace: nobody got it.
        assert broker.publish(broker.channel(unheard), data) == 0
        assert broker.publish(f"elsewhere:{order_placed.name}", data) == 0
    assert orders == [(ORDER_REF, 3)]
    assert broker.stats.processed == 1 and broker.stats.rejected == 1
    assert [m.kwargs["order_id"] for m in broker.sent] == [3, 3, 3]


def test_send_robust_returns_the_count_and_logs_receiver_failures_like_a_worker(
    no_network: None, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    order_placed.connect(broken)
    try:
        with in_memory() as broker:
            assert order_placed.send_robust(sender=None, order_id=1, total=1, at=None) == 1
            # A bad payload is still the caller's error, as in production.
            result = order_placed.send_robust(sender=None, order_id=1, total=object(), at=None)
    finally:
        order_placed.disconnect(broken)
    assert isinstance(result, PayloadError)
    assert broker.stats.processed == 1 and broker.stats.failed == 1
    assert "receiver bug" in caplog.text


def test_asend_delivers_to_sync_and_async_receivers_without_redis(no_network: None) -> None:
    got: list[str] = []

    def sync_receiver(sender: Any, order_id: int, **kwargs: Any) -> None:
        got.append(f"sync {order_id}")

    async def async_receiver(sender: Any, order_id: int, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        got.append(f"async {order_id}")

    order_placed.connect(sync_receiver)
    order_placed.connect(async_receiver)

    async def main(broker: InMemoryBroker) -> list[Any]:
        return [
            await order_placed.asend(sender=None, order_id=1, total=1, at=None),
            await order_placed.asend_robust(sender=None, order_id=2, total=1, at=None),
            await broker.asend(order_placed.name, None, order_id=3, total=1, at=None),
        ]

    try:
        with in_memory() as broker:
            assert asyncio.run(main(broker)) == [1, 1, 1]
    finally:
        order_placed.disconnect(sync_receiver)
        order_placed.disconnect(async_receiver)
    assert sorted(got) == ["async 1", "async 2", "async 3", "sync 1", "sync 2", "sync 3"]
    assert [m.kwargs["order_id"] for m in broker.sent] == [1, 2, 3]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_message_sent_by_a_receiver_runs_after_it_as_in_a_worker(
    no_network: None, kind: str
) -> None:
    got: list[str] = []

    def relay(sender: Any, order_id: int, **kwargs: Any) -> None:
        got.append(f"start {order_id}")
        if order_id < 3:
            assert order_placed.send(sender=None, order_id=order_id + 1, total=1, at=None) == 1
        got.append(f"end {order_id}")

    async def async_relay(sender: Any, order_id: int, **kwargs: Any) -> None:
        got.append(f"start {order_id}")
        if order_id < 3:  # sent from the thread of the loop that runs async receivers
            await order_placed.asend(sender=None, order_id=order_id + 1, total=1, at=None)
        got.append(f"end {order_id}")

    receiver = relay if kind == "sync" else async_relay
    order_placed.connect(receiver)
    try:
        with in_memory() as broker:
            assert order_placed.send(sender=None, order_id=1, total=1, at=None) == 1
    finally:
        order_placed.disconnect(receiver)
    assert got == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]
    assert broker.stats.processed == 3


def test_signed_messages_are_checked_by_the_dispatcher(
    no_network: None, orders: list[tuple[Any, int]]
) -> None:
    with in_memory(secret="s3cret") as broker:
        unsigned = {"order_id": 1, "total": 1, "at": None}
        with Client("redis://never-connected.invalid/0", secret=[]) as plain:
            forged = plain.encode(order_placed, None, unsigned)
        assert broker.publish(broker.channel(order_placed), forged) == 1
    assert orders == [] and broker.sent == []
    assert broker.stats.rejected == 1 and broker.stats.processed == 0


def test_sends_from_many_threads_are_all_delivered_once(
    no_network: None, orders: list[tuple[Any, int]]
) -> None:
    def send_many(first: int) -> None:
        for n in range(first, first + 50):
            order_placed.send(sender=None, order_id=n, total=1, at=None)

    with in_memory() as broker:
        threads = [threading.Thread(target=send_many, args=(k * 50,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(n for _, n in orders) == list(range(200))
    assert len(broker.sent) == 200 and broker.stats.processed == 200


def test_in_memory_needs_no_hiredis() -> None:
    # The pure-Python install: hiredis made unimportable in a fresh interpreter.
    script = (
        "import sigbroker.testing as t, sigbroker.transport.redis_endpoint as e\n"
        "assert e.hiredis is None\n"
        "from sigbroker import Signal\n"
        "sig = Signal(name='tests.no_hiredis.sig')\n"
        "got = []\n"
        "sig.connect(lambda sender, **kw: got.append(kw['n']), weak=False)\n"
        "with t.in_memory() as broker:\n"
        "    with broker.batch() as batch:\n"
        "        batch.send(sig, n=1)\n"
        "        batch.send(sig, n=2)\n"
        "    assert broker.publish('sigbroker:tests.no_hiredis.sig', b'junk') == 1\n"
        "assert got == [1, 2], got\n"
        "assert batch.results == [1, 1] and broker.stats.rejected == 1\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_hiredis"), str(ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_receiver_may_connect_and_send_a_signal_the_worker_did_not_have() -> None:
    first, late = Signal(name="tests.testing.first"), Signal(name="tests.testing.late")
    ran: list[str] = []

    def on_late(sender: Any, **kwargs: Any) -> None:
        ran.append("late")

    def on_first(sender: Any, **kwargs: Any) -> None:
        ran.append("first")
        late.connect(on_late, weak=False)
        assert late.send(sender=None) == 1  # held until the worker has its receivers

    first.connect(on_first, weak=False)
    try:
        with in_memory() as broker:
            for _ in range(3):
                assert first.send(sender=None) == 1
        assert ran == ["first", "late"] * 3
        assert broker.stats.processed == 6 and broker.stats.failed == 0
    finally:
        first.disconnect(on_first)
        late.disconnect(on_late)


def test_sent_is_a_list_a_test_may_clear() -> None:
    with in_memory() as broker:
        order_placed.send(sender=None, order_id=1, total=None, at=None)
        broker.sent.clear()
        order_placed.send(sender=None, order_id=2, total=None, at=None)
        assert [m.kwargs["order_id"] for m in broker.sent] == [2]


def test_call_needs_a_redis_transport() -> None:
    from sigbroker.errors import ConfigurationError

    with in_memory() as broker, pytest.raises(ConfigurationError, match="no Redis client"):
        broker.call(lambda r: r.ping())


def test_a_signal_losing_its_receivers_does_not_replace_the_worker() -> None:
    # Receivers collected by the garbage collector while other threads send
    # must not replace the worker: a replacement under way could drop messages.
    passing = Signal(name="tests.testing.passing")

    def on_passing(sender: Any, **kwargs: Any) -> None:
        pass

    got: list[int] = []

    def on_order(sender: Any, order_id: int, **kwargs: Any) -> None:
        got.append(order_id)

    passing.connect(on_passing, weak=False)
    order_placed.connect(on_order, weak=False)
    try:
        with in_memory() as broker:
            assert order_placed.send(sender=None, order_id=1, total=None, at=None) == 1
            worker = broker._worker
            passing.disconnect(on_passing)
            assert order_placed.send(sender=None, order_id=2, total=None, at=None) == 1
            assert broker._worker is worker
        assert got == [1, 2]
    finally:
        order_placed.disconnect(on_order)
