"""The worker's view of a signal: which receivers a message from the wire reaches."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from sigbroker.naming import sender_reference
from sigbroker.signal import Signal


class Order:
    pass


class Refund:
    pass


def on_any(**kwargs: Any) -> None:
    pass


def on_order(**kwargs: Any) -> None:
    pass


def on_named(**kwargs: Any) -> None:
    pass


async def on_order_async(**kwargs: Any) -> None:
    pass


ORDER_REF = f"{__name__}.Order"


@pytest.fixture
def sig() -> Signal:
    return Signal(name="tests.remote")


def test_any_sender_receivers_match_every_reference(sig: Signal) -> None:
    sig.connect(on_any)
    for ref in (None, ORDER_REF, "never.connected.Sender"):
        assert sig.remote_receivers(ref) == (ref, [on_any], [])


def test_class_receiver_matches_its_reference_and_gets_the_class(sig: Signal) -> None:
    sig.connect(on_order, sender=Order)
    assert sig.remote_receivers(ORDER_REF) == (Order, [on_order], [])
    assert sig.remote_receivers(f"{__name__}.Refund") == (f"{__name__}.Refund", [], [])
    assert sig.remote_receivers(None) == (None, [], [])


def test_string_receiver_matches_the_same_string(sig: Signal) -> None:
    sig.connect(on_named, sender="billing.Invoice")
    assert sig.remote_receivers("billing.Invoice") == ("billing.Invoice", [on_named], [])
    assert sig.remote_receivers("billing.invoice") == ("billing.invoice", [], [])


def test_class_is_the_sender_when_a_string_receiver_shares_its_reference(sig: Signal) -> None:
    sig.connect(on_named, sender=ORDER_REF)
    assert sig.remote_receivers(ORDER_REF) == (ORDER_REF, [on_named], [])
    sig.connect(on_order, sender=Order)
    assert sig.remote_receivers(ORDER_REF) == (Order, [on_named, on_order], [])


def test_receivers_connected_with_other_objects_never_match_remotely(sig: Signal) -> None:
    instance = Order()
    sig.connect(on_order, sender=instance)
    sig.connect(on_named, sender=42)
    for ref in (None, ORDER_REF, "42", repr(instance)):
        assert sig.remote_receivers(ref) == (ref, [], [])
    assert sig.has_listeners(sender=instance)  # they still work locally
    assert sig.has_remote_receivers() is False


def test_connect_order_is_kept_and_sync_async_are_split(sig: Signal) -> None:
    sig.connect(on_order_async, sender=Order)
    sig.connect(on_order, sender=Order)
    sig.connect(on_any)
    sig.connect(on_named, sender=Refund)
    sig.connect(on_named, sender=Order)
    sender, sync_receivers, async_receivers = sig.remote_receivers(ORDER_REF)
    assert sender is Order
    assert sync_receivers == [on_order, on_any, on_named]
    assert async_receivers == [on_order_async]
    assert sig.remote_receivers(None) == (None, [on_any], [])


def test_any_sender_receiver_connected_first_comes_first(sig: Signal) -> None:
    sig.connect(on_any)
    sig.connect(on_order, sender=Order)
    assert sig.remote_receivers(ORDER_REF)[1] == [on_any, on_order]


def test_results_follow_connect_and_disconnect(sig: Signal) -> None:
    assert sig.remote_receivers(ORDER_REF) == (ORDER_REF, [], [])
    sig.connect(on_order, sender=Order)
    assert sig.remote_receivers(ORDER_REF) == (Order, [on_order], [])
    sig.connect(on_any)
    assert sig.remote_receivers(ORDER_REF) == (Order, [on_order, on_any], [])
    sig.disconnect(on_order, sender=Order)
    assert sig.remote_receivers(ORDER_REF) == (ORDER_REF, [on_any], [])
    sig.disconnect(on_any)
    assert sig.remote_receivers(ORDER_REF) == (ORDER_REF, [], [])


def test_results_are_cached_until_something_changes(sig: Signal) -> None:
    sig.connect(on_order, sender=Order)
    sig.remote_receivers(ORDER_REF)
    plan = sig._remote_plan
    sig.remote_receivers("other")
    sig.remote_receivers(ORDER_REF)
    assert plan is not None and sig._remote_plan is plan
    sig.connect(on_any)
    assert sig._remote_plan is None


def test_dead_receivers_disappear(sig: Signal) -> None:
    def short_lived(**kwargs: Any) -> None:
        pass

    sig.connect(short_lived, sender=Order)
    sig.connect(on_order, sender=Order)
    assert sig.remote_receivers(ORDER_REF)[1] == [short_lived, on_order]
    del short_lived
    gc.collect()
    assert sig.remote_receivers(ORDER_REF) == (Order, [on_order], [])
    assert len(sig.receivers) == 1  # cleaned up, not just skipped


def test_a_dead_sender_class_falls_back_to_its_reference(sig: Signal) -> None:
    class Ephemeral:
        pass

    ref = sender_reference(Ephemeral)
    sig.connect(on_order, sender=Ephemeral)
    assert sig.remote_receivers(ref)[0] is Ephemeral
    del Ephemeral
    gc.collect()
    assert sig.remote_receivers(ref) == (ref, [on_order], [])


def test_receivers_replaced_from_outside_are_noticed(sig: Signal) -> None:
    # factory_boy's mute_signals() swaps the list out and back in.
    sig.connect(on_any)
    assert sig.remote_receivers(None)[1] == [on_any]
    saved, sig.receivers = sig.receivers, []
    assert sig.remote_receivers(None) == (None, [], [])
    sig.receivers = saved
    assert sig.remote_receivers(None)[1] == [on_any]


def test_returned_lists_belong_to_the_caller(sig: Signal) -> None:
    sig.connect(on_any)
    sig.remote_receivers(None)[1].clear()
    assert sig.remote_receivers(None)[1] == [on_any]


def test_has_remote_receivers_counts_sender_specific_receivers(sig: Signal) -> None:
    assert sig.has_remote_receivers() is False
    sig.connect(on_order, sender=Order)
    assert sig.has_listeners() is False  # Django's meaning: nothing for sender=None
    assert sig.has_remote_receivers() is True
    sig.disconnect(on_order, sender=Order)
    assert sig.has_remote_receivers() is False
