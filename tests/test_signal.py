"""Signal registry: connecting, weak references, caching, names, payload contracts."""

from __future__ import annotations

import gc
import importlib
import runpy
import sys
import threading
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sigbroker import config
from sigbroker.errors import ConfigurationError, PayloadError
from sigbroker.naming import sender_reference
from sigbroker.routing import describe_receivers
from sigbroker.signal import Signal, all_signals, receiver

#: Module-level signals: their names are derived from this module.
order_placed = Signal(providing_args=["order_id", "total"])
named_explicitly = Signal(name="shop.orders.cancelled")


def echo(value: object = None, **kwargs: Any) -> object:
    return value


class Listener:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "called"

    def on_event(self, **kwargs: Any) -> str:
        return "method"


@pytest.fixture(autouse=True)
def eager() -> None:
    config.configure(eager=True)


@pytest.fixture
def sig() -> Signal:
    return Signal(name="tests.registry")


@pytest.fixture
def cached_sig() -> Signal:
    return Signal(name="tests.cached", use_caching=True)


# -- connect checks -------------------------------------------------------------------


def test_connect_refuses_a_non_callable(sig: Signal) -> None:
    with pytest.raises(TypeError, match=r"^Signal receivers must be callable\.$"):
        sig.connect(object())  # type: ignore[arg-type]
    assert sig.receivers == []


def test_connect_refuses_a_receiver_without_kwargs_even_without_debug(sig: Signal) -> None:
    def positional_only(sender: object) -> None:
        pass

    with pytest.raises(ValueError, match=r"^Signal receivers must accept keyword arguments"):
        sig.connect(positional_only)
    assert sig.receivers == []


def test_connect_accepts_bound_methods_and_callable_instances(sig: Signal) -> None:
    listener = Listener()
    sig.connect(listener)
    sig.connect(listener.on_event)
    assert [response for _, response in sig.send(sender=None)] == ["called", "method"]


# -- registration ---------------------------------------------------------------------


def test_same_receiver_and_sender_register_once(sig: Signal) -> None:
    listener = Listener()
    for _ in range(5):
        sig.connect(listener)
    assert len(sig.receivers) == 1
    assert len(sig.send(sender=None)) == 1


def test_same_bound_method_registers_once(sig: Signal) -> None:
    listener = Listener()
    sig.connect(listener.on_event)
    sig.connect(listener.on_event)  # a new method object each time, the same receiver
    assert len(sig.receivers) == 1


def test_one_receiver_may_connect_to_several_senders(sig: Signal) -> None:
    sig.connect(echo, sender="a")
    sig.connect(echo, sender="b")
    assert len(sig.receivers) == 2
    assert sig.send(sender="a", value=1) == [(echo, 1)]


def test_dispatch_uid_registers_once_and_disconnects(sig: Signal) -> None:
    def first(**kwargs: Any) -> str:
        return "first"

    def second(**kwargs: Any) -> str:
        return "second"

    sig.connect(first, dispatch_uid="uid")
    sig.connect(second, dispatch_uid="uid")
    assert sig.send(sender=None) == [(first, "first")]
    assert sig.disconnect(dispatch_uid="uid") is True
    assert sig.receivers == []


def test_dispatch_uid_is_per_sender(sig: Signal) -> None:
    sig.connect(echo, sender="a", dispatch_uid="uid")
    sig.connect(echo, sender="b", dispatch_uid="uid")
    assert len(sig.receivers) == 2
    assert sig.disconnect(sender="a", dispatch_uid="uid") is True
    assert sig.send(sender="b", value=2) == [(echo, 2)]


def test_disconnect_reports_whether_it_removed_something(sig: Signal) -> None:
    listener, stranger = Listener(), Listener()
    sig.connect(listener)
    assert sig.disconnect(stranger) is False
    assert sig.disconnect(listener) is True
    assert sig.disconnect(listener) is False
    assert sig.receivers == []


def test_disconnect_needs_the_sender_it_was_connected_with(sig: Signal) -> None:
    sig.connect(echo, sender="a")
    assert sig.disconnect(echo) is False
    assert sig.disconnect(echo, sender="a") is True


def test_receivers_keeps_djangos_entry_shape(sig: Signal) -> None:
    sig.connect(echo, sender="a")
    [entry] = sig.receivers
    (receiver_key, sender_key), slot, is_async = entry
    assert len(entry) == 3
    assert (receiver_key, sender_key) == (id(echo), id("a"))
    assert isinstance(slot, weakref.ReferenceType)
    assert slot() is echo
    assert is_async is False


def test_has_listeners(sig: Signal) -> None:
    assert sig.has_listeners() is False
    assert sig.has_listeners(sender=object()) is False
    sig.connect(echo)
    assert sig.has_listeners() is True
    assert sig.has_listeners(sender=object()) is True
    sig.disconnect(echo)
    assert sig.has_listeners() is False


def test_has_listeners_for_a_sender_specific_receiver(sig: Signal) -> None:
    sig.connect(echo, sender="a")
    assert sig.has_listeners(sender="a") is True
    assert sig.has_listeners(sender="b") is False
    assert sig.has_listeners() is False  # Django: no sender means "sent with sender=None"


# -- receiver decorator ---------------------------------------------------------------


def test_receiver_decorator_connects_and_returns_the_function(sig: Signal) -> None:
    def handler(**kwargs: Any) -> str:
        return "handled"

    decorated = receiver(sig, sender="a", dispatch_uid="h")(handler)
    assert decorated is handler
    assert sig.send(sender="a") == [(handler, "handled")]
    assert sig.send(sender="b") == []
    assert sig.disconnect(sender="a", dispatch_uid="h") is True


@pytest.mark.parametrize("container", [list, tuple])
def test_receiver_decorator_takes_a_list_or_tuple_of_signals(container: type) -> None:
    signals = [Signal(name=f"tests.many{i}") for i in range(3)]
    seen: list[str] = []

    @receiver(container(signals))
    def handler(signal: Signal, **kwargs: Any) -> None:
        seen.append(signal.name)

    for one in reversed(signals):
        one.send(sender=None)
    assert seen == ["tests.many2", "tests.many1", "tests.many0"]


# -- weak references ------------------------------------------------------------------


def test_dead_bound_method_is_dropped(sig: Signal) -> None:
    listener = Listener()
    sig.connect(listener.on_event)
    del listener
    gc.collect()
    assert sig.send(sender=None) == []
    assert sig.has_listeners() is False
    assert sig.receivers == []


def test_dead_function_is_dropped_and_flagged(sig: Signal) -> None:
    def local(**kwargs: Any) -> None:
        pass

    sig.connect(local)
    sig.connect(echo)
    del local
    gc.collect()
    assert sig._dead_receivers is True  # the finalizer flags; the next locked call cleans up
    assert sig.send(sender=None, value="v") == [(echo, "v")]
    assert len(sig.receivers) == 1


def test_weak_false_keeps_the_receiver_alive(sig: Signal) -> None:
    calls: list[int] = []

    def local(**kwargs: Any) -> None:
        calls.append(1)

    sig.connect(local, weak=False)
    del local
    gc.collect()
    sig.send(sender=None)
    assert calls == [1]


def test_disconnect_detaches_the_finalizer(sig: Signal) -> None:
    listener = Listener()
    sig.connect(listener.on_event)
    sig.disconnect(listener.on_event)
    del listener
    gc.collect()
    assert sig._dead_receivers is False


def test_receivers_do_not_keep_their_signal_alive() -> None:
    sig = Signal(name="tests.short_lived")
    sig.connect(echo)  # a long-lived receiver with a finalizer pointing back
    ref = weakref.ref(sig)
    del sig
    gc.collect()
    assert ref() is None


def test_all_disconnections_leave_a_clean_signal(sig: Signal) -> None:
    first, second, third = Listener(), Listener(), Listener()
    for one in (first, second, third):
        sig.connect(one)
    sig.disconnect(first)
    del second
    gc.collect()
    sig.disconnect(third)
    assert sig.has_listeners() is False
    assert sig.receivers == []


# -- caching --------------------------------------------------------------------------


def test_cache_does_not_keep_senders_alive(cached_sig: Signal) -> None:
    class Sender:
        pass

    ref = weakref.ref(Sender)
    cached_sig.connect(echo)
    cached_sig.send(Sender, value=1)
    assert ref() in cached_sig.sender_receivers_cache
    del Sender
    gc.collect()
    assert ref() is None
    assert isinstance(cached_sig.sender_receivers_cache, weakref.WeakKeyDictionary)


def test_cache_is_invalidated_by_connect_and_disconnect(cached_sig: Signal) -> None:
    class Sender:
        pass

    assert cached_sig.send(Sender, value=1) == []  # cached as "no receivers"
    cached_sig.connect(echo, sender=Sender)
    assert cached_sig.send(Sender, value=2) == [(echo, 2)]
    cached_sig.disconnect(echo, sender=Sender)
    assert cached_sig.send(Sender, value=3) == []


def test_cache_skips_senders_that_can_not_be_weak_keys(cached_sig: Signal) -> None:
    cached_sig.connect(echo)
    assert cached_sig.send(None, value=1) == [(echo, 1)]
    assert cached_sig.send("a string", value=2) == [(echo, 2)]
    assert cached_sig.has_listeners() is True
    assert len(cached_sig.sender_receivers_cache) == 0


def test_cache_sees_dead_receivers(cached_sig: Signal) -> None:
    class Sender:
        pass

    listener = Listener()
    cached_sig.connect(listener)
    assert len(cached_sig.send(Sender)) == 1
    del listener
    gc.collect()
    assert cached_sig.send(Sender) == []
    assert cached_sig.receivers == []


# -- thread safety --------------------------------------------------------------------


def test_concurrent_connect_and_disconnect_stay_consistent(sig: Signal) -> None:
    threads_n, per_thread = 16, 50
    shared = Listener()
    start = threading.Barrier(threads_n)
    keep: list[list[Listener]] = [[Listener() for _ in range(per_thread)] for _ in range(threads_n)]
    errors: list[BaseException] = []

    def work(own: list[Listener]) -> None:
        try:
            start.wait()
            for listener in own:
                sig.connect(listener)
                sig.connect(shared)
            for listener in own[::2]:
                assert sig.disconnect(listener) is True
        except BaseException as exc:  # surfaced below: a thread can not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(own,)) for own in keep]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(sig.receivers) == 1 + threads_n * per_thread // 2
    assert sum(1 for key, _, _ in sig.receivers if key[0] == id(shared)) == 1


class _RecordingLock:
    """A lock that knows whether it is held, to check where receivers are mutated."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = False

    def __enter__(self) -> None:
        self._lock.acquire()
        self.held = True

    def __exit__(self, *exc_info: object) -> None:
        self.held = False
        self._lock.release()


class _GuardedList(list[Any]):
    def __init__(self, lock: _RecordingLock) -> None:
        super().__init__()
        self.lock = lock
        self.unguarded: list[str] = []

    def append(self, item: Any) -> None:
        if not self.lock.held:
            self.unguarded.append("append")
        super().append(item)

    def pop(self, index: Any = -1) -> Any:
        if not self.lock.held:
            self.unguarded.append("pop")
        return super().pop(index)


def test_connect_and_disconnect_mutate_receivers_under_the_lock(sig: Signal) -> None:
    lock = _RecordingLock()
    guarded = _GuardedList(lock)
    sig.lock = lock  # type: ignore[assignment]
    sig.receivers = guarded
    sig.connect(echo)
    assert sig.disconnect(echo) is True
    assert guarded.unguarded == []
    assert sig.receivers is guarded and guarded == []


# -- providing_args -------------------------------------------------------------------


def test_providing_args_is_a_frozenset_or_none() -> None:
    assert Signal(name="t.a").providing_args is None
    assert Signal(providing_args=["b", "a", "a"], name="t.b").providing_args == frozenset("ab")
    assert isinstance(order_placed.providing_args, frozenset)


def test_providing_args_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError, match="not a string"):
        Signal(providing_args="user", name="t.c")


def test_validate_accepts_the_declared_arguments() -> None:
    order_placed.validate({"order_id": 1, "total": 2})
    Signal(name="t.any").validate({"whatever": 1})  # no declaration: anything goes


def test_validate_names_an_unexpected_argument() -> None:
    with pytest.raises(PayloadError) as info:
        order_placed.validate({"order_id": 1, "total": 2, "totl": 3})
    message = str(info.value)
    assert "unexpected argument 'totl'" in message
    assert order_placed.name in message
    assert "providing_args: order_id, total" in message


def test_validate_names_the_missing_arguments() -> None:
    with pytest.raises(PayloadError, match=r"missing the arguments 'order_id', 'total'"):
        order_placed.validate({})


def test_validate_names_both_kinds_at_once() -> None:
    with pytest.raises(PayloadError, match=r"unexpected argument 'id'.*missing the argument"):
        order_placed.validate({"id": 1, "total": 2})


def test_empty_providing_args_accepts_only_no_arguments() -> None:
    bare = Signal(providing_args=[], name="t.bare")
    bare.validate({})
    with pytest.raises(PayloadError, match="'x'"):
        bare.validate({"x": 1})


# -- names ----------------------------------------------------------------------------


def test_name_is_module_and_variable() -> None:
    assert order_placed.name == f"{__name__}.order_placed"


def test_explicit_name_wins() -> None:
    assert named_explicitly.name == "shop.orders.cancelled"
    assert repr(named_explicitly) == "<Signal 'shop.orders.cancelled'>"


@pytest.mark.parametrize("bad", ["", 42])
def test_explicit_name_must_be_a_non_empty_string(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        Signal(name=bad)


def test_signal_made_inside_a_function_has_no_name() -> None:
    local = Signal()
    with pytest.raises(ConfigurationError, match=r"Signal\(name=\.\.\.\)"):
        _ = local.name
    assert local.name_or_none is None
    assert "(unnamed)" in repr(local)


def test_name_or_none_gives_a_known_name() -> None:
    assert order_placed.name_or_none == f"{__name__}.order_placed"
    assert named_explicitly.name_or_none == "shop.orders.cancelled"


@pytest.fixture
def tmp_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("sigtmp_")]:
        del sys.modules[name]


def test_name_of_a_signal_in_an_imported_module(tmp_module: Path) -> None:
    (tmp_module / "sigtmp_accounts.py").write_text(
        "from sigbroker.signal import Signal\nuser_registered = Signal()\n"
    )
    module = importlib.import_module("sigtmp_accounts")
    assert module.user_registered.name == "sigtmp_accounts.user_registered"


def test_name_of_a_module_run_as_main_uses_its_import_name(tmp_module: Path) -> None:
    (tmp_module / "sigtmp_script.py").write_text(
        "from sigbroker.signal import Signal\nping = Signal()\n"
    )
    namespace = runpy.run_module("sigtmp_script", run_name="__main__")
    assert namespace["ping"].name == "sigtmp_script.ping"


class SubSignal(Signal):
    """A subclass with its own __init__: the creator is the caller, not this module."""

    def __init__(self) -> None:
        super().__init__(providing_args=["x"])


def test_name_of_a_subclass_instance_comes_from_its_creator() -> None:
    module = types.ModuleType("sigtmp_sub")
    module.SubSignal = SubSignal  # type: ignore[attr-defined]
    exec("made = SubSignal()", module.__dict__)
    assert module.made.name == "sigtmp_sub.made"


def test_name_is_cached_after_first_use() -> None:
    module = types.ModuleType("sigtmp_cache")
    module.Signal = Signal  # type: ignore[attr-defined]
    exec("first = Signal()", module.__dict__)
    signal: Signal = module.first
    assert signal.name == "sigtmp_cache.first"
    del module.first
    module.other = signal  # type: ignore[attr-defined]
    assert signal.name == "sigtmp_cache.first"


def test_name_found_later_once_the_variable_exists() -> None:
    module = types.ModuleType("sigtmp_late")
    module.Signal = Signal  # type: ignore[attr-defined]
    exec("def make():\n    return Signal()\n", module.__dict__)
    signal: Signal = module.make()
    with pytest.raises(ConfigurationError):
        _ = signal.name
    module.late = signal  # type: ignore[attr-defined]
    assert signal.name == "sigtmp_late.late"


# -- registry of signals and sender references ----------------------------------------


def test_all_signals_lists_live_signals_in_creation_order() -> None:
    first = Signal(name="t.first")
    second = Signal(name="t.second")
    third = Signal(name="t.third")
    assert [s for s in all_signals() if s in (first, second, third)] == [first, second, third]
    assert order_placed in all_signals()
    ref = weakref.ref(second)
    del second
    gc.collect()
    assert ref() is None
    assert [s for s in all_signals() if s in (first, third)] == [first, third]
    assert len(all_signals()) == len(set(all_signals()))


class Outer:
    class Inner:
        pass


def test_sender_reference_of_classes_strings_and_none() -> None:
    assert sender_reference(Listener) == f"{__name__}.Listener"
    assert sender_reference(Outer.Inner) == f"{__name__}.Outer.Inner"
    assert sender_reference(int) == "builtins.int"
    assert sender_reference("billing.Invoice") == "billing.Invoice"
    assert sender_reference(None) is None


@pytest.mark.parametrize("sender", [Listener(), 42, 1.5, b"bytes"])
def test_sender_reference_refuses_other_objects(sender: object) -> None:
    with pytest.raises(PayloadError, match=r"class, a string or None") as info:
        sender_reference(sender)
    assert type(sender).__qualname__ in str(info.value)


# -- listings -------------------------------------------------------------------------


async def async_echo(**kwargs: Any) -> None:
    pass


def test_describe_receivers_lists_live_receivers_in_connect_order(sig: Signal) -> None:
    listener = Listener()
    local_sender = Listener()
    sig.connect(echo)
    sig.connect(listener.on_event, sender=Outer.Inner)
    sig.connect(async_echo, sender="billing.Invoice")
    sig.connect(listener, sender=local_sender)
    doomed = Listener()
    sig.connect(doomed)
    del doomed
    gc.collect()
    assert describe_receivers(sig) == [
        {"receiver": f"{__name__}.echo", "sender": None, "async": False, "remote": True},
        {
            "receiver": f"{__name__}.Listener.on_event",
            "sender": f"{__name__}.Outer.Inner",
            "async": False,
            "remote": True,
        },
        {
            "receiver": f"{__name__}.async_echo",
            "sender": "billing.Invoice",
            "async": True,
            "remote": True,
        },
        {
            "receiver": f"{__name__}.Listener",
            "sender": f"<{__name__}.Listener>",
            "async": False,
            "remote": False,
        },
    ]
