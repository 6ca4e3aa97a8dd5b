"""Exceptions in signal arguments: they travel as :class:`RemoteError`, and only so.

Round trips of built-in and user-defined exceptions at any depth, the bounds
on what travels, forwarding of a RemoteError, the receiver's refusal to
import or look up anything the wire names, the decoder's refusal of hostile
exception payloads, and one delivery through :func:`sigbroker.testing.in_memory`.
"""

from __future__ import annotations

import builtins
import copy
import importlib
import pickle
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigbroker import Signal
from sigbroker.codec import Codec, Limits, register_type
from sigbroker.codec.limits import (
    MAX_REMOTE_MESSAGE_CHARS,
    MAX_REMOTE_REPR_CHARS,
    MAX_REMOTE_TYPE_CHARS,
    cut,
)
from sigbroker.codec.registry import BY_NAME
from sigbroker.errors import InvalidMessage, PayloadError, RemoteError
from sigbroker.testing import in_memory
from tests.test_codec import canonical, frame, round_trip
from tests.test_codec_fuzz import DEEP, assert_counted_alike, values

task_failed = Signal(providing_args=["process", "task", "exception", "traceback"])


class PaymentDeclined(Exception):
    """A user's exception, never registered."""


class Unencodable:
    def __repr__(self) -> str:
        return "<Unencodable>"


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def name_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def ext(code: int, body: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(body))


# -- round trips --------------------------------------------------------------


def test_a_builtin_exception_arrives_as_a_remote_error() -> None:
    got = round_trip(ValueError("bad amount", 12))
    assert type(got) is RemoteError
    assert got == RemoteError("builtins.ValueError", ("bad amount", 12), "('bad amount', 12)")
    assert got.type_name == "builtins.ValueError"
    assert got.args == ("bad amount", 12)
    assert str(round_trip(ValueError("bad amount"))) == "ValueError: bad amount"


def test_a_user_exception_keeps_encodable_args_and_reprs_the_others() -> None:
    exc = PaymentDeclined("card", 1249, [1, {"a": (2, None)}], Unencodable())
    got = round_trip(exc)
    assert got.type_name == "tests.test_codec_remote.PaymentDeclined"
    assert got.args == ("card", 1249, [1, {"a": (2, None)}], "<Unencodable>")
    assert got.message == str(exc)
    assert str(got) == f"PaymentDeclined: {exc}"


def test_empty_args_and_empty_message() -> None:
    got = round_trip(KeyboardInterrupt())
    assert got == RemoteError("builtins.KeyboardInterrupt", (), "")
    assert str(got) == "KeyboardInterrupt"


def test_a_huge_message_and_a_huge_repr_are_cut() -> None:
    class Loud(Exception):
        def __str__(self) -> str:
            return "x" * 100_000

    class Long:
        def __repr__(self) -> str:
            return "y" * 100_000

    got = round_trip(Loud(Long()))
    assert len(got.message) == MAX_REMOTE_MESSAGE_CHARS and got.message.endswith("x...")
    assert len(got.args[0]) == MAX_REMOTE_REPR_CHARS and got.args[0].endswith("y...")


def test_a_failing_str_or_repr_does_not_stop_the_send() -> None:
    got = round_trip(BadStr(BadRepr()))
    assert got.message == "<exception str() failed>"
    assert got.args == ("<BadRepr object>",)


def test_exceptions_nested_in_containers_and_in_other_exceptions() -> None:
    inner = KeyError("sku")
    value = {
        "errors": [ValueError("a"), {"deep": (TypeError("b"),)}],
        "set": {inner},
        inner: "as a key",
        "wrapped": RuntimeError("outer", inner),
    }
    got = round_trip(value)
    key = RemoteError("builtins.KeyError", ("sku",), "'sku'")
    assert got == {
        "errors": [
            RemoteError("builtins.ValueError", ("a",), "a"),
            {"deep": (RemoteError("builtins.TypeError", ("b",), "b"),)},
        ],
        "set": {key},
        key: "as a key",
        "wrapped": RemoteError("builtins.RuntimeError", ("outer", key), str(("outer", inner))),
    }


def test_an_exception_among_its_own_args_is_cut_at_the_depth_limit() -> None:
    loop = ValueError()
    loop.args = (loop,)
    other = KeyError(loop)
    got = round_trip([loop, other, loop])
    # Met one level deeper inside ``other``, it is made again to fit there,
    # and travels so everywhere.
    assert got[0] == got[1].args[0] == got[2]
    depth, level = 0, got[0]
    while type(level) is RemoteError:
        level, depth = level.args[0], depth + 1
    assert depth == 30  # the list and the KeyError take two of the 32 levels
    assert type(level) is str  # the repr of the last level


def test_args_that_would_nest_too_deep_travel_as_their_repr() -> None:
    codec = Codec(limits=Limits(max_depth=2))
    deep = ValueError([1], [[2]], ValueError([3]))
    got = codec.decode(codec.pack("tests.signal", None, {"e": deep})).kwargs["e"]
    assert got.args == ([1], "[[2]]", RemoteError("builtins.ValueError", ("[3]",), "[3]"))
    with pytest.raises(PayloadError, match="'e' nests deeper"):
        codec.pack("tests.signal", None, {"e": [[ValueError()]]})


def test_a_remote_error_travels_as_itself() -> None:
    original = round_trip(PaymentDeclined("card", Unencodable()))
    forwarded = round_trip(original)
    assert forwarded == original and forwarded.type_name == name_of(PaymentDeclined)
    codec = Codec(b"secret")
    envelope = codec.decode(codec.pack("tests.signal", None, {"e": original, "l": [original]}))
    again = codec.decode(codec.encode(envelope))  # a worker re-sending what it got
    assert again.kwargs == {"e": original, "l": [original]}


def test_wire_layout() -> None:
    body = Codec().decode(Codec().pack("tests.signal", None, {"e": ValueError("bad", 3)}))
    assert body.kwargs["e"].args == ("bad", 3)
    packed = msgpack.packb({"e": ext(12, ["builtins.ValueError", ["bad", 3], "('bad', 3)"])})
    assert Codec().decode(frame(packed)).kwargs == body.kwargs
    message = Codec().pack("tests.signal", None, {"e": ValueError("bad", 3)})
    assert message.endswith(packed)


def test_values_and_depth_are_counted_alike_at_both_ends() -> None:
    # {"e": ...}: 2, the exception's array 3, its 2 args 2, the list's 3 items 3;
    # {"f": [0, 1, 2, 3]}: 6 more, 16 in all.
    kwargs = {"e": ValueError("a", [1, 2, 3])}
    message = Codec().pack("tests.signal", None, kwargs)
    exact = Limits(max_values=16)
    Codec(limits=exact).pack("tests.signal", None, {**kwargs, "f": list(range(4))})
    assert Codec(limits=exact).decode(message).kwargs["e"].args == ("a", [1, 2, 3])
    over = {**kwargs, "f": list(range(5))}
    with pytest.raises(PayloadError, match="max_values"):
        Codec(limits=exact).pack("tests.signal", None, over)
    with pytest.raises(InvalidMessage, match="more than 16"):
        Codec(limits=exact).decode(Codec().pack("tests.signal", None, over))
    # ValueError([1]) has depth 2: the decoder of a codec with max_depth=1 refuses it.
    two = Codec().pack("tests.signal", None, {"e": ValueError([1])})
    with pytest.raises(InvalidMessage, match="deeper"):
        Codec(limits=Limits(max_depth=1)).decode(two)


def test_the_sender_registers_nothing() -> None:
    registered = dict(BY_NAME)

    class Fresh(Exception):
        pass

    assert round_trip(Fresh(1)).type_name.endswith("Fresh")
    assert registered == BY_NAME


def test_a_registered_exception_type_still_travels_as_registered() -> None:
    class Money(Exception):
        def __eq__(self, other: object) -> bool:
            return type(other) is Money and other.args == self.args

        __hash__ = Exception.__hash__

    register_type(Money, lambda m: list(m.args), lambda v: Money(*v), name="tests.remote.Money")
    assert round_trip(Money(5, "EUR")) == Money(5, "EUR")


def test_the_receiver_never_imports_or_looks_up_the_named_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = msgpack.packb(
        {
            "e": ext(12, ["no_such_module.errors.Boom", ["x"], "x"]),
            "f": ext(12, ["os.system", [], ""]),
        }
    )

    imported: list[str] = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def watch_import(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_import(name, *args, **kwargs)

    def watch_import_module(name: str, package: str | None = None) -> Any:
        imported.append(name)
        return real_import_module(name, package)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "__import__", watch_import)
        patch.setattr(importlib, "import_module", watch_import_module)
        imported.clear()  # setattr itself may import
        kwargs = Codec().decode(frame(message)).kwargs
    assert imported == []
    assert kwargs == {
        "e": RemoteError("no_such_module.errors.Boom", ("x",), "x"),
        "f": RemoteError("os.system", (), ""),
    }


# -- RemoteError itself ---------------------------------------------------------


def test_remote_error_equality_str_repr_hash_and_copies() -> None:
    err = RemoteError("myapp.errors.PaymentDeclined", ["card", [1]], "card declined")
    assert err.args == ("card", [1]) and err.type_name == "myapp.errors.PaymentDeclined"
    assert str(err) == "PaymentDeclined: card declined"
    assert (
        repr(err) == "RemoteError('myapp.errors.PaymentDeclined', ('card', [1]), 'card declined')"
    )
    assert err == RemoteError("myapp.errors.PaymentDeclined", ("card", [1]), "card declined")
    assert err != RemoteError("other.PaymentDeclined", ("card", [1]), "card declined")
    assert err != RemoteError("myapp.errors.PaymentDeclined", ("card",), "card declined")
    assert err != ValueError("card declined")
    assert hash(err) == hash(RemoteError("myapp.errors.PaymentDeclined", (), "card declined"))
    assert copy.copy(err) == err and copy.deepcopy(err) == err
    assert pickle.loads(pickle.dumps(err)) == err
    assert isinstance(err, Exception)
    with pytest.raises(TypeError):
        RemoteError("", (), "")


# -- hostile payloads ---------------------------------------------------------


def nested_exceptions(depth: int) -> msgpack.ExtType:
    value: Any = None
    for _ in range(depth):
        value = ext(12, ["builtins.ValueError", [value], ""])
    return value


HOSTILE_BODIES = {
    "not an array": ext(12, "builtins.ValueError"),
    "two items": ext(12, ["builtins.ValueError", []]),
    "four items": ext(12, ["builtins.ValueError", [], "", ""]),
    "a type name that is not a str": ext(12, [b"builtins.ValueError", [], ""]),
    "an empty type name": ext(12, ["", [], ""]),
    "a huge type name": ext(12, ["x" * (MAX_REMOTE_TYPE_CHARS + 1), [], ""]),
    "args that are a map": ext(12, ["builtins.ValueError", {"a": 1}, ""]),
    "args that are a tuple extension": ext(12, ["builtins.ValueError", ext(2, [1]), ""]),
    "a message that is not a str": ext(12, ["builtins.ValueError", [], None]),
    "a huge message": ext(12, ["builtins.ValueError", [], "m" * (MAX_REMOTE_MESSAGE_CHARS + 1)]),
    "an unknown extension in the args": ext(12, ["builtins.ValueError", [ext(99, 0)], ""]),
    "a type name that is an int": ext(12, [5, [], ""]),
    "exceptions nested 33 deep": nested_exceptions(33),
    "exceptions nested 2,000 deep": nested_exceptions(2_000),
    "garbage": msgpack.ExtType(12, b"\x93\xc1\xc1\xc1"),
    "empty": msgpack.ExtType(12, b""),
    "extra bytes": msgpack.ExtType(12, msgpack.packb(["a.B", [], ""]) + b"\xc0"),
    "an array header claiming 2**32-1 args": msgpack.ExtType(
        12, b"\x93\xa3a.B\xdd\xff\xff\xff\xff\xa0"
    ),
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=list(HOSTILE_BODIES))
@pytest.mark.parametrize("where", ["argument", "list item", "set item"])
def test_hostile_exception_payloads_are_rejected(body: msgpack.ExtType, where: str) -> None:
    value = {"argument": body, "list item": [body], "set item": ext(3, [body])}[where]
    with pytest.raises(InvalidMessage):
        Codec().decode(frame(msgpack.packb({"e": value})))


def test_exceptions_nested_to_the_limit_decode() -> None:
    codec = Codec(limits=Limits(max_depth=32))
    got = codec.decode(frame(msgpack.packb({"e": nested_exceptions(32)}))).kwargs["e"]
    assert got.type_name == "builtins.ValueError"


def test_a_flood_of_exceptions_is_bounded_by_max_values() -> None:
    flood = [ext(12, ["a.B", [], ""])] * 2000  # 2,000 * 3 values
    with pytest.raises(InvalidMessage, match="more than"):
        Codec().decode(frame(msgpack.packb({"e": flood})))


# -- properties ---------------------------------------------------------------

exception_types = st.sampled_from([ValueError, KeyError, RuntimeError, PaymentDeclined, OSError])
exception_args = st.lists(values | st.just(Unencodable()), max_size=4)


@settings(max_examples=300, deadline=None)
@given(exception_types, exception_args)
def test_arbitrary_exceptions_round_trip(cls: type[BaseException], args: list[Any]) -> None:
    exc = cls(*args)
    codec = Codec(limits=DEEP)
    got = codec.decode(codec.pack("fuzz.signal", None, {"e": exc, "l": [exc]})).kwargs
    assert got["e"].type_name == name_of(type(exc))  # OSError(2, "x") is a FileNotFoundError
    assert got["e"].message == cut(str(exc), MAX_REMOTE_MESSAGE_CHARS)
    expected = ["<Unencodable>" if isinstance(arg, Unencodable) else arg for arg in exc.args]
    assert canonical(list(got["e"].args)) == canonical(expected)
    assert canonical(list(got["l"][0].args)) == canonical(expected)
    forwarded = codec.decode(codec.pack("fuzz.signal", None, got)).kwargs
    assert canonical(list(forwarded["e"].args)) == canonical(expected)


hostile_items = st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.builds(lambda items: ext(12, items), st.lists(inner, max_size=4) | inner)
    ),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None)
@given(hostile_items)
def test_hostile_exception_structures(items: Any) -> None:
    data = frame(msgpack.packb({"e": ext(12, items)}))
    try:
        kwargs = Codec().decode(data).kwargs
    except InvalidMessage:
        return
    assert type(kwargs["e"]) is RemoteError


# -- end to end ---------------------------------------------------------------


def test_a_receiver_gets_a_remote_error_through_the_in_memory_broker() -> None:
    got: list[dict[str, Any]] = []

    def on_failure(sender: Any, signal: Signal, **kwargs: Any) -> None:
        got.append(kwargs)

    task_failed.connect(on_failure, weak=False)
    try:
        with in_memory() as broker:
            try:
                raise PaymentDeclined("card", 1249)
            except PaymentDeclined as exc:
                sent = task_failed.send(
                    sender="viewflow.Flow", process=1, task=2, exception=exc, traceback="tb"
                )
    finally:
        task_failed.disconnect(on_failure)
    assert sent == 1 and broker.stats.failed == 0
    exception = got[0]["exception"]
    assert exception == RemoteError(name_of(PaymentDeclined), ("card", 1249), "('card', 1249)")
    assert got[0]["traceback"] == "tb"
    assert broker.sent[0].kwargs["exception"] == exception


@settings(max_examples=200, deadline=None)
@given(exception_types, exception_args)
def test_the_sender_and_the_decoder_count_exception_values_alike(
    cls: type[BaseException], args: list[Any]
) -> None:
    kwargs = {"e": cls(*args), "l": [cls(*args[:1])]}
    decoded = Codec(limits=DEEP).decode(Codec(limits=DEEP).pack("fuzz.signal", None, kwargs))
    assert_counted_alike(kwargs, decoded.kwargs)
