"""sigbroker.testing: sends through the real codec, delivered in-process."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from sigbroker import Signal
from sigbroker.errors import PayloadError
from sigbroker.testing import in_memory

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
