"""The codec: round trips of every supported type, registration, refusals, signing, layout."""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import hmac
import math
import os
import socket
import struct
import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any, NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack
import pytest

from sigbroker import codec
from sigbroker.codec import (
    DEFAULT_LIMITS,
    FORMAT_VERSION,
    Codec,
    Envelope,
    Limits,
    new_envelope,
    next_sequence,
    origin,
    register_type,
)
from sigbroker.errors import ConfigurationError, InvalidMessage, PayloadError, RemoteError

# -- helpers ------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """A hashable form of ``value`` that keeps exact types, float bits, Decimal
    exponents and datetime offsets and folds, so that ``==`` means "same value"."""
    cls = type(value)
    if cls is float:
        return ("float", struct.pack(">d", value))
    if cls is Decimal:
        return ("Decimal", str(value))
    if cls in (datetime, time):
        naive = value.replace(tzinfo=None)
        return (cls.__name__, naive.isoformat(), value.utcoffset(), value.fold)
    if cls in (list, tuple):
        return (cls.__name__, tuple(canonical(item) for item in value))
    if cls in (set, frozenset):
        return (cls.__name__, frozenset(canonical(item) for item in value))
    if cls is dict:
        return ("dict", frozenset((canonical(k), canonical(v)) for k, v in value.items()))
    if cls is RemoteError:
        return ("RemoteError", value.type_name, canonical(value.args), value.message)
    return (cls.__qualname__, value)


def round_trip(value: Any, codec_: Codec | None = None) -> Any:
    codec_ = codec_ or Codec()
    return codec_.decode(codec_.pack("tests.signal", None, {"value": value})).kwargs["value"]


def frame(kwargs_bytes: bytes, **fields: Any) -> bytes:
    """An unsigned message around raw argument bytes, with fields overridable."""
    envelope: dict[str, Any] = {
        "v": 1,
        "i": "0" * 32,
        "s": "tests.signal",
        "r": None,
        "t": 1.5,
        "o": "host:1",
        "k": kwargs_bytes,
    }
    envelope.update(fields)
    packed: bytes = msgpack.packb({k: v for k, v in envelope.items() if v is not _DROP})
    return packed


_DROP = object()


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


register_type(Point, lambda p: [p.x, p.y], lambda v: Point(*v))


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


register_type(Color)
register_type(Level)


class Unregistered(enum.Enum):
    A = 1


class Shape(enum.IntEnum):
    SQUARE = 4


class User:
    pass


class Pair(NamedTuple):
    a: int
    b: str


# -- round trips of every type -----------------------------------------------

SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    2**200,
    -(2**200),
    -(2**64),
    0.0,
    -0.0,
    1.5,
    -2.25e-300,
    1e308,
    math.inf,
    -math.inf,
    "",
    "héllo wörld",
    "\U0001f600 emoji",
    "x" * 70_000,
    b"",
    b"\x00\xff" * 3,
    date(1, 1, 1),
    date(9999, 12, 31),
    date(1970, 1, 1),
    date(1969, 12, 31),
    timedelta(0),
    timedelta(days=-1, seconds=3, microseconds=7),
    timedelta.max,
    timedelta.min,
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("0E-7"),
    Decimal("NaN"),
    Decimal("-sNaN12"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    Decimal("1E+3"),
    Decimal("123456789012345678901234567890.0123456789012345678901234567890"),
    UUID("12345678-1234-5678-1234-567812345678"),
    UUID(int=0),
    Color.RED,
    Level.HIGH,
    Point(1, -2),
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalars_round_trip_with_their_exact_type(value: Any) -> None:
    assert canonical(round_trip(value)) == canonical(value)


def test_nan_keeps_its_bits() -> None:
    nan = struct.unpack(">d", b"\x7f\xf8\x00\x00\x00\x00\x00\x2a")[0]
    result = round_trip(nan)
    assert math.isnan(result)
    assert struct.pack(">d", result) == struct.pack(">d", nan)


DATETIMES = [
    datetime(2024, 5, 1, 12, 30, 15, 123456),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc),
    datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=1, seconds=7, microseconds=3))),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    datetime(2024, 5, 1, fold=1),
]


@pytest.mark.parametrize("value", DATETIMES, ids=repr)
def test_datetimes_keep_wall_clock_offset_and_fold(value: datetime) -> None:
    result = round_trip(value)
    assert canonical(result) == canonical(value)
    assert result == value


def test_zoneinfo_datetimes_come_back_with_their_offset() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 02:30 happens twice on 2021-10-31 in Paris: fold picks the offset.
    for fold, hours in ((0, 2), (1, 1)):
        value = datetime(2021, 10, 31, 2, 30, tzinfo=paris, fold=fold)
        result = round_trip(value)
        assert result.utcoffset() == timedelta(hours=hours)
        assert result.fold == fold
        # (== between zones is False for ambiguous times, by PEP 495: compare instants)
        assert result.timestamp() == value.timestamp()
        assert result.replace(tzinfo=None) == value.replace(tzinfo=None)


@pytest.mark.parametrize(
    "value",
    [
        time(0),
        time(23, 59, 59, 999999),
        time(8, 1, 2, 3, fold=1),
        time(8, 0, tzinfo=timezone(timedelta(hours=-3))),
        time(8, 0, tzinfo=timezone(timedelta(hours=2, microseconds=1)), fold=1),
    ],
    ids=repr,
)
def test_times_round_trip(value: time) -> None:
    assert canonical(round_trip(value)) == canonical(value)


def test_time_whose_zone_gives_no_offset_goes_out_naive() -> None:
    # ZoneInfo can not say the offset of a bare time, so such a time is naive.
    result = round_trip(time(8, 0, tzinfo=ZoneInfo("Europe/Paris")))
    assert result == time(8, 0)
    assert result.tzinfo is None


def test_decimal_keeps_its_exponent() -> None:
    result = round_trip(Decimal("1.10"))
    assert str(result) == "1.10"
    assert result.as_tuple() == Decimal("1.10").as_tuple()
    assert str(round_trip(Decimal("-0.000"))) == "-0.000"


def test_containers_keep_their_types() -> None:
    value = {
        "list": [1, [2, (3, [4])]],
        "tuple": (1, (2,), [3], ()),
        "set": {1, "a", (2, 3), frozenset({4})},
        "frozenset": frozenset({frozenset(), (1,)}),
        "empty": [[], (), {}, set(), frozenset()],
    }
    result = round_trip(value)
    assert canonical(result) == canonical(value)
    assert type(result["tuple"][2]) is list
    assert type(result["list"][1][1]) is tuple


def test_dict_keys_of_any_hashable_type() -> None:
    value = {
        3: "int",
        -(2**70): "big",
        2.5: "float",
        None: "none",
        True: "bool",
        b"k": "bytes",
        (1, ("a", None)): "tuple",
        frozenset({1, 2}): "frozenset",
        date(2024, 1, 1): "date",
        UUID(int=5): "uuid",
        Decimal("1.5"): "decimal",
        Color.BLUE: "enum",
        Point(0, 0): "registered",
    }
    assert canonical(round_trip(value)) == canonical(value)


def test_nested_structures_round_trip() -> None:
    value = [
        {"when": datetime(2024, 1, 1, tzinfo=timezone.utc), "tags": {"a", "b"}},
        ({"price": Decimal("9.90")}, [Point(1, 2), Color.RED, Level.LOW]),
        {(1, 2): [timedelta(seconds=1), UUID(int=9), b"raw", None]},
    ]
    assert canonical(round_trip(value)) == canonical(value)


def test_many_arguments_round_trip() -> None:
    kwargs = {
        "order_id": 7,
        "total": Decimal("9.90"),
        "when": datetime(2024, 1, 1, 8, tzinfo=timezone.utc),
        "items": [("sku", 2)],
        "note": None,
    }
    envelope = Codec().decode(Codec().pack("shop.order_placed", "shop.Order", kwargs))
    assert canonical(envelope.kwargs) == canonical(kwargs)
    assert envelope.signal == "shop.order_placed"
    assert envelope.sender == "shop.Order"


def test_bool_int_and_int_enum_stay_apart() -> None:
    result = round_trip([True, 1, Level.LOW, 1.0])
    assert [type(item) for item in result] == [bool, int, Level, float]
    assert result[2] is Level.LOW


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (type("Tag", (str,), {})("x"), "x"),
        (type("Count", (int,), {})(3), 3),
        (type("Ratio", (float,), {})(0.5), 0.5),
        (type("Blob", (bytes,), {})(b"b"), b"b"),
        (Pair(1, "a"), (1, "a")),
        (collections.OrderedDict(a=1), {"a": 1}),
        (collections.defaultdict(list, a=[1]), {"a": [1]}),
        (type("Stack", (list,), {})([1]), [1]),
        (type("Stamp", (datetime,), {})(2024, 1, 2), datetime(2024, 1, 2)),
        (type("Money", (Decimal,), {})("1.50"), Decimal("1.50")),
    ],
    ids=lambda value: type(value).__qualname__,
)
def test_unregistered_subclasses_go_out_as_their_base_type(value: Any, expected: Any) -> None:
    result = round_trip(value)
    assert canonical(result) == canonical(expected)
    assert canonical(round_trip({"nested": [value]})) == canonical({"nested": [expected]})


def test_bytearray_goes_out_as_bytes() -> None:
    assert canonical(round_trip(bytearray(b"ab"))) == canonical(b"ab")


# -- registered types ---------------------------------------------------------


def test_registered_type_round_trips_nested_in_itself() -> None:
    @dataclasses.dataclass(frozen=True)
    class Tree:
        label: str
        children: tuple[Any, ...]

    register_type(Tree, lambda t: (t.label, t.children), lambda v: Tree(*v))
    tree = Tree("root", (Tree("leaf", ()), Point(3, 4)))
    assert round_trip(tree) == tree
    assert round_trip({"forest": [tree, tree]}) == {"forest": [tree, tree]}


def test_registered_encoder_is_called_once_per_value() -> None:
    calls: list[Any] = []

    class Counted:
        pass

    def encode(value: Counted) -> int:
        calls.append(value)
        return 1

    register_type(Counted, encode, lambda v: Counted())
    item = Counted()
    Codec().pack("tests.signal", None, {"a": [item], "b": (Counted(),)})
    assert len(calls) == 2 and calls[0] is item


def test_default_wire_name_is_module_and_qualname() -> None:
    message = Codec().pack("tests.signal", None, {"p": Point(1, 2)})
    assert b"tests.test_codec.Point" in message


def test_explicit_name_is_used_on_the_wire() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    register_type(Money, lambda m: m.cents, Money, name="shop.Money")
    message = Codec().pack("tests.signal", None, {"m": Money(250)})
    assert b"shop.Money" in message
    assert round_trip(Money(250)).cents == 250


def test_registering_again_replaces_the_functions() -> None:
    class Box:
        def __init__(self, content: Any) -> None:
            self.content = content

    register_type(Box, lambda b: b.content, Box, name="tests.Box")
    register_type(Box, lambda b: [b.content, b.content], Box, name="tests.Box")
    assert round_trip(Box(1)).content == [1, 1]


def test_registering_under_a_new_name_frees_the_old_one() -> None:
    class Renamed:
        pass

    register_type(Renamed, lambda r: 0, lambda v: Renamed(), name="tests.OldName")
    old_message = Codec().pack("tests.signal", None, {"r": Renamed()})
    register_type(Renamed, lambda r: 0, lambda v: Renamed(), name="tests.NewName")
    assert type(round_trip(Renamed())) is Renamed
    with pytest.raises(InvalidMessage, match=r"unknown registered type 'tests\.OldName'"):
        Codec().decode(old_message)

    class Other:
        pass

    register_type(Other, lambda o: 0, lambda v: Other(), name="tests.OldName")  # free again


def test_a_redefined_class_takes_over_its_name() -> None:
    # What a reloaded module does: a new class object under the same qualname.
    classes = []
    for version in (1, 2):

        class Reloaded:
            pass

        register_type(Reloaded, lambda _, v=version: v, lambda v: v)  # type: ignore[misc]
        classes.append(Reloaded)
    old, new = classes
    assert round_trip(new()) == 2
    with pytest.raises(PayloadError, match=r"object of type .*Reloaded"):
        Codec().pack("tests.signal", None, {"r": old()})


def test_a_name_taken_by_another_class_is_refused() -> None:
    class First:
        pass

    class Second:
        pass

    register_type(First, repr, lambda v: First(), name="tests.Taken")
    with pytest.raises(ConfigurationError, match="already registered"):
        register_type(Second, repr, lambda v: Second(), name="tests.Taken")
    assert type(round_trip(First())) is First


@pytest.mark.parametrize("cls", [int, str, datetime, Decimal, dict, bool, type(None)])
def test_built_in_types_can_not_be_registered(cls: type) -> None:
    with pytest.raises(ConfigurationError, match="built in"):
        register_type(cls, repr, repr)


def test_registration_needs_a_class_and_both_functions() -> None:
    with pytest.raises(TypeError, match="needs a class"):
        register_type(Point(1, 2), repr, repr)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs encode and decode"):
        register_type(User)
    with pytest.raises(TypeError, match="needs encode and decode"):
        register_type(User, repr, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="type name"):
        register_type(User, repr, repr, name="")


def test_subclasses_of_registered_classes_are_not_covered() -> None:
    class Special(Point):
        pass

    with pytest.raises(PayloadError, match=r"object of type .*Special"):
        Codec().pack("tests.signal", None, {"p": Special(1, 2)})


def test_unknown_registered_names_are_rejected_and_never_imported() -> None:
    for name in ("os.system", "builtins.eval", "tests.test_codec.User"):
        payload = msgpack.packb({"x": msgpack.ExtType(11, msgpack.packb([name, "id"]))})
        with pytest.raises(InvalidMessage, match="unknown registered type"):
            Codec().decode(frame(payload))


def test_a_failing_registered_decoder_is_an_invalid_message() -> None:
    payload = msgpack.packb(
        {"c": msgpack.ExtType(11, msgpack.packb(["tests.test_codec.Color", 9]))}
    )
    with pytest.raises(InvalidMessage, match="ValueError"):
        Codec().decode(frame(payload))


# -- refusals at the sender ---------------------------------------------------

SENDERS: list[Callable[[Codec, dict[str, Any]], bytes]] = [
    lambda c, kwargs: c.pack("tests.signal", None, kwargs),
    lambda c, kwargs: c.encode(new_envelope("tests.signal", None, kwargs)),
]


@pytest.fixture(params=SENDERS, ids=["pack", "encode"])
def send(request: pytest.FixtureRequest) -> Callable[[Codec, dict[str, Any]], bytes]:
    sender: Callable[[Codec, dict[str, Any]], bytes] = request.param
    return sender


def test_unserializable_argument_is_named_with_its_type(send: Any) -> None:
    with pytest.raises(PayloadError) as info:
        send(Codec(), {"order_id": 1, "user": User()})
    assert str(info.value) == (
        "argument 'user' is not serializable: object of type 'User'"
        " (register it with sigbroker.codec.register_type)"
    )


@pytest.mark.parametrize(
    "value",
    [
        [1, {"deep": (2, User())}],
        {User(): 1},
        {frozenset({1}): {2: [object()]}},
        memoryview(b"x"),
        lambda: None,
        Unregistered.A,
        Shape.SQUARE,
        complex(1, 2),
    ],
    ids=lambda v: type(v).__qualname__,
)
def test_nested_unserializable_values_name_the_argument(send: Any, value: Any) -> None:
    with pytest.raises(PayloadError, match=r"^argument 'payload' is not serializable: object"):
        send(Codec(), {"ok": 1, "payload": value})


def test_unregistered_enums_are_refused_not_turned_into_values(send: Any) -> None:
    with pytest.raises(PayloadError, match="object of type 'Shape'"):
        send(Codec(), {"shape": Shape.SQUARE})


def test_a_failing_registered_encoder_names_the_argument(send: Any) -> None:
    class Fragile:
        pass

    def explode(value: Fragile) -> Any:
        raise RuntimeError("boom")

    register_type(Fragile, explode, lambda v: Fragile())
    with pytest.raises(PayloadError, match=r"argument 'f' could not be encoded.*boom") as info:
        send(Codec(), {"f": Fragile()})
    assert isinstance(info.value.__cause__, RuntimeError)


def test_text_that_is_not_utf8_names_the_argument(send: Any) -> None:
    with pytest.raises(PayloadError, match=r"argument 'bad'.*UnicodeEncodeError"):
        send(Codec(), {"fine": "x", "bad": "\ud800"})


def test_the_packer_is_usable_after_a_refusal() -> None:
    codec_ = Codec()
    with pytest.raises(PayloadError):
        codec_.pack("tests.signal", None, {"bad": "\ud800", "when": date(2024, 1, 1)})
    kwargs = {"good": date(2024, 1, 1)}
    assert codec_.decode(codec_.pack("tests.signal", None, kwargs)).kwargs == kwargs


def test_argument_names_must_be_strings(send: Any) -> None:
    with pytest.raises(PayloadError, match="argument names must be strings"):
        send(Codec(), {1: "x"})


def test_arguments_must_be_a_mapping() -> None:
    with pytest.raises(PayloadError, match="must be a mapping"):
        Codec().pack("tests.signal", None, [("a", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("signal", "sender", "match"),
    [
        ("", None, "signal name"),
        (None, None, "signal name"),
        ("x" * 1025, None, "signal name is over the limit"),
        ("tests.signal", 5, "sender reference"),
        ("tests.signal", ["unhashable"], "sender reference"),
        ("tests.signal", "\udfff", "sender reference is not valid text"),
    ],
)
def test_bad_names_are_refused(signal: Any, sender: Any, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        Codec().pack(signal, sender, {})


def test_depth_limit_is_the_same_for_sender_and_decoder(send: Any) -> None:
    codec_ = Codec(limits=Limits(max_depth=3))
    deepest: Any = 1
    for _ in range(3):
        deepest = [deepest]
    assert codec_.decode(send(codec_, {"tree": deepest})).kwargs == {"tree": deepest}
    with pytest.raises(PayloadError, match="argument 'tree' nests deeper than the limit of 3"):
        send(codec_, {"tree": [deepest]})
    with pytest.raises(PayloadError, match="nests deeper"):
        send(codec_, {"tree": {(((1,),),): 1}})  # keys count too
    # A registered value is one level around its encoded form (a list: two levels).
    assert codec_.decode(send(codec_, {"p": [Point(1, 2)]})).kwargs == {"p": [Point(1, 2)]}
    with pytest.raises(PayloadError, match="nests deeper"):
        send(codec_, {"p": [[Point(1, 2)]]})
    too_deep = msgpack.packb({"tree": [[[[1]]]]})
    with pytest.raises(InvalidMessage, match="deeper than the limit of 3"):
        codec_.decode(frame(too_deep))


def test_a_registered_type_that_encodes_to_itself_is_refused() -> None:
    class Loop:
        pass

    register_type(Loop, lambda value: Loop(), lambda v: Loop())
    with pytest.raises(PayloadError, match="argument 'loop' nests deeper"):
        Codec().pack("tests.signal", None, {"loop": Loop()})


def test_container_length_limit(send: Any) -> None:
    codec_ = Codec(limits=Limits(max_container_len=10))
    assert codec_.decode(send(codec_, {"items": list(range(10))})).kwargs["items"] == list(
        range(10)
    )
    with pytest.raises(PayloadError, match="argument 'items' holds a set of 11 items"):
        send(codec_, {"items": set(range(11))})
    with pytest.raises(InvalidMessage):
        codec_.decode(frame(msgpack.packb({"items": list(range(11))})))


def test_size_limit_at_the_sender_names_size_and_limit(send: Any) -> None:
    codec_ = Codec(limits=Limits(max_message_bytes=1024))
    with pytest.raises(PayloadError, match=r"message is \d+ bytes, over the limit of 1024"):
        send(codec_, {"blob": b"x" * 2000})
    with pytest.raises(PayloadError, match="over the limit of 1024"):
        send(codec_, {"blob": b"x" * 990})  # fits alone, not with the envelope


def test_size_limit_counts_the_signature() -> None:
    limits = Limits(max_message_bytes=1024)
    size = len(Codec(limits=limits).pack("tests.signal", None, {"blob": b""}))
    kwargs = {"blob": b"x" * (1024 - size - 10)}
    assert len(Codec(limits=limits).pack("tests.signal", None, kwargs)) <= 1024
    with pytest.raises(PayloadError, match="over the limit of 1024"):
        Codec("secret", limits).pack("tests.signal", None, kwargs)


def test_encode_checks_the_envelope() -> None:
    good = new_envelope("tests.signal", None, {})
    for version in (1, 3):
        with pytest.raises(PayloadError, match="format version"):
            Codec().encode(dataclasses.replace(good, version=version))
    for seq in (-1, 2**64, 1.0, None):
        with pytest.raises(PayloadError, match="seq"):
            Codec().encode(dataclasses.replace(good, seq=seq))  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="sent_at"):
        Codec().encode(dataclasses.replace(good, sent_at=math.nan))
    with pytest.raises(PayloadError, match="message id"):
        Codec().encode(dataclasses.replace(good, id=""))
    with pytest.raises(PayloadError, match="origin"):
        Codec().encode(dataclasses.replace(good, origin=None))  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="expected an Envelope"):
        Codec().encode({"signal": "x"})  # type: ignore[arg-type]


# -- signing ------------------------------------------------------------------

KWARGS = {"order_id": 7, "total": Decimal("9.90")}


def signed_message(secret: str = "s3cret") -> bytes:
    return Codec(secret).pack("shop.order_placed", "shop.Order", KWARGS)


def test_signed_round_trip() -> None:
    codec_ = Codec(b"s3cret")
    assert codec_.signed and not Codec().signed
    envelope = codec_.decode(codec_.pack("shop.order_placed", "shop.Order", KWARGS))
    assert envelope.kwargs == KWARGS


def test_signature_is_hmac_sha256_of_everything_before_it() -> None:
    for key in (b"k", b"long key " * 20):
        message = Codec(key).pack("tests.signal", None, KWARGS)
        assert message[-36:-32] == b"\xa1h\xc4\x20"
        assert message[-32:] == hmac.new(key, message[:-36], hashlib.sha256).digest()
        assert message[0] == 0x89


def test_key_rotation_new_key_signs_old_key_still_verifies() -> None:
    old, rotating = Codec("old"), Codec(["new", "old"])
    assert rotating.decode(old.pack("tests.signal", None, KWARGS)).kwargs == KWARGS
    from_rotating = rotating.pack("tests.signal", None, KWARGS)
    assert Codec("new").decode(from_rotating).kwargs == KWARGS
    with pytest.raises(InvalidMessage, match="bad signature"):
        old.decode(from_rotating)


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(InvalidMessage, match="bad signature"):
        Codec("other").decode(signed_message())


def test_tampered_arguments_are_rejected_before_they_are_unpacked() -> None:
    decoded: list[Any] = []

    class Watched:
        pass

    def decode_watched(value: Any) -> Watched:
        decoded.append(value)
        return Watched()

    register_type(Watched, lambda w: 1, decode_watched)
    message = Codec("s3cret").pack("tests.signal", None, {"w": Watched(), "n": 1})
    position = message.rindex(b"\xa1n\x01") + 2
    tampered = message[:position] + b"\x02" + message[position + 1 :]
    with pytest.raises(InvalidMessage, match="bad signature"):
        Codec("s3cret").decode(tampered)
    assert decoded == []
    Codec("s3cret").decode(message)
    assert decoded == [1]


def test_tampered_signal_name_is_rejected() -> None:
    message = signed_message()
    tampered = message.replace(b"shop.order_placed", b"shop.order_refund")
    assert len(tampered) == len(message)
    with pytest.raises(InvalidMessage, match="bad signature"):
        Codec("s3cret").decode(tampered)


def test_missing_signature_is_rejected() -> None:
    unsigned = Codec().pack("shop.order_placed", None, KWARGS)
    with pytest.raises(InvalidMessage, match="not signed"):
        Codec("s3cret").decode(unsigned)
    stripped = b"\x87" + signed_message()[1:-36]
    with pytest.raises(InvalidMessage, match="not signed"):
        Codec("s3cret").decode(stripped)


def test_a_codec_without_secret_accepts_signed_messages() -> None:
    assert Codec().decode(signed_message()).kwargs == KWARGS


def test_the_signature_must_be_the_last_field() -> None:
    # Only a key holder could make this: an "h" field inside, and the trailing
    # signature swallowed by the arguments' bin.
    body = msgpack.packb({"a": 1})
    fields = {"v": 1, "i": "x" * 32, "s": "sig", "r": None, "t": 1.0, "o": "h:1", "h": bytes(32)}
    prefix = b"\x88" + msgpack.packb(fields)[1:] + b"\xa1k\xc4" + bytes([len(body) + 36]) + body
    message = prefix + b"\xa1h\xc4\x20" + hmac.new(b"k", prefix, hashlib.sha256).digest()
    with pytest.raises(InvalidMessage, match="signature is not the last field"):
        Codec(b"k").decode(message)


def test_empty_secrets_are_refused_and_no_secrets_means_unsigned() -> None:
    with pytest.raises(ConfigurationError):
        Codec("")
    with pytest.raises(ConfigurationError):
        Codec(["ok", b""])
    with pytest.raises(ConfigurationError):
        Codec([1])  # type: ignore[list-item]
    assert not Codec([]).signed
    assert not Codec(()).signed


def test_module_functions_encode_and_decode() -> None:
    envelope = new_envelope("tests.signal", "tests.Sender", KWARGS)
    assert codec.decode(codec.encode(envelope)) == envelope
    signed = codec.encode(envelope, secret=["new", "old"])
    assert codec.decode(signed, secrets=("other", "new")) == envelope
    with pytest.raises(InvalidMessage):
        codec.decode(signed, secrets="old")
    small = Limits(max_message_bytes=256)
    with pytest.raises(PayloadError):
        codec.encode(dataclasses.replace(envelope, kwargs={"x": "y" * 300}), limits=small)


# -- the envelope and the layout ----------------------------------------------


def test_envelope_is_frozen_and_slotted() -> None:
    envelope = new_envelope("tests.signal", None, {"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        envelope.signal = "other"  # type: ignore[misc]
    assert not hasattr(envelope, "__dict__")
    assert "kwargs" in Envelope.__slots__
    assert envelope.version == FORMAT_VERSION == 2
    assert hash(envelope) == hash(dataclasses.replace(envelope, kwargs={"b": 2}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_depth = 3  # type: ignore[misc]


def test_new_envelope_ids_times_and_origin() -> None:
    before = __import__("time").time()
    envelopes = [new_envelope("tests.signal", None, {}) for _ in range(1000)]
    after = __import__("time").time()
    ids = {envelope.id for envelope in envelopes}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert all(before <= envelope.sent_at <= after for envelope in envelopes)
    host, pid, token = origin().rsplit(":", 2)
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert len(token) == 8 and int(token, 16) >= 0
    assert envelopes[0].origin == origin()
    assert {envelope.seq for envelope in envelopes} == {0}  # no channel: not sequenced
    counted = [new_envelope("tests.signal", None, {}, channel="ns:x").seq for _ in range(5)]
    assert counted == list(range(counted[0], counted[0] + 5))


def test_sequences_count_per_channel_and_refused_payloads_take_none() -> None:
    codec_ = Codec()
    first = codec_.decode(codec_.pack("tests.seq", None, {}, "ns1:tests.seq")).seq
    assert codec_.decode(codec_.pack("tests.seq", None, {}, "ns2:tests.seq")).seq == 1
    with pytest.raises(PayloadError):
        codec_.pack("tests.seq", None, {"bad": object()}, "ns1:tests.seq")
    assert Codec("s").decode(Codec("s").pack("tests.seq", None, {}, "ns1:tests.seq")).seq == (
        first + 1
    )
    assert next_sequence("ns1:tests.seq") == first + 2


def test_pack_has_the_layout_of_encode() -> None:
    codec_ = Codec("s3cret")
    message = codec_.pack("shop.order_placed", "shop.Order", KWARGS)
    envelope = codec_.decode(message)
    assert codec_.encode(envelope) == message
    assert envelope.origin == origin()
    assert list(msgpack.unpackb(message)) == ["v", "i", "s", "r", "t", "o", "n", "k", "h"]


GOLDEN_ENVELOPE = Envelope(
    signal="shop.signals.order_placed",
    sender="shop.models.Order",
    kwargs={
        "n": 7,
        "big": -(2**64),
        "f": 1.5,
        "s": "é",
        "b": b"\x00",
        "t": (1, "a"),
        "l": [None, True],
        "d": {"k": 1, 2: 3},
        "fs": frozenset({1}),
        "dt": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2))),
        "naive": datetime(2024, 5, 1, 12, 30, fold=1),
        "day": date(2024, 5, 1),
        "at": time(8, 0, 1, 5),
        "td": timedelta(days=-1, seconds=5, microseconds=6),
        "dec": Decimal("1.10"),
        "u": UUID(int=1),
        "c": Color.RED,
    },
    id="0123456789abcdef0123456789abcdef",
    sent_at=1714566615.25,
    origin="web-1:4242",
    seq=5,
)
# Format version 1, as senders before the sequence number wrote it.
GOLDEN_V1 = bytes.fromhex(
    "87a17601a169d9203031323334353637383961626364656630313233343536373839616263646566a173b973"
    "686f702e7369676e616c732e6f726465725f706c61636564a172b173686f702e6d6f64656c732e4f72646572"
    "a174cb41d98c8d75d00000a16faa7765622d313a34323432a16bc4dede0011a16e07a3626967c70901ff0000"
    "000000000000a166cb3ff8000000000000a173a2c3a9a162c40100a174d6029201a161a16c92c0c3a16482a1"
    "6b010203a26673d5049101a26474c7140507e805010c1e0f0001e2400100000001ad274800a56e61697665c7"
    "0c0507e805010c1e000000000002a3646179d60600004d84a26174d7070800010000000500a27464c70c08ff"
    "ffffff0000000500000006a3646563d609312e3130a175d80a00000000000000000000000000000001a163c7"
    "1c0b92b674657374732e746573745f636f6465632e436f6c6f72a3726564"
)
GOLDEN_SIGNED_TAIL = bytes.fromhex(
    "7c5dabc3315663b4b7a00da090108595792366ac204f4363de39b924d8bf5391"
)


# Version 2 is version 1 with "v" 2 and the sequence number "n" (a uint64) after the origin.
_AT_K = GOLDEN_V1.index(b"\xa1k\xc4")
GOLDEN_UNSIGNED = (
    b"\x88\xa1v\x02"
    + GOLDEN_V1[4:_AT_K]
    + b"\xa1n\xcf"
    + (5).to_bytes(8, "big")
    + GOLDEN_V1[_AT_K:]
)
GOLDEN_SIGNED_TAIL_V1 = GOLDEN_SIGNED_TAIL


def test_golden_bytes_fix_the_wire_format() -> None:
    assert Codec().encode(GOLDEN_ENVELOPE) == GOLDEN_UNSIGNED
    assert canonical(Codec().decode(GOLDEN_UNSIGNED).kwargs) == canonical(GOLDEN_ENVELOPE.kwargs)
    signed = Codec(b"golden key").encode(GOLDEN_ENVELOPE)
    assert signed[:-32] == b"\x89" + GOLDEN_UNSIGNED[1:] + b"\xa1h\xc4\x20"
    assert signed[-32:] == hmac.new(b"golden key", signed[:-36], hashlib.sha256).digest()
    assert Codec(b"golden key").decode(signed) == Codec().decode(GOLDEN_UNSIGNED)


def test_version_1_messages_are_still_read_as_sequence_0() -> None:
    old = Codec().decode(GOLDEN_V1)
    assert (old.version, old.seq) == (1, 0)
    assert old == dataclasses.replace(GOLDEN_ENVELOPE, kwargs=old.kwargs, seq=0, version=1)
    assert canonical(old.kwargs) == canonical(GOLDEN_ENVELOPE.kwargs)
    signed_v1 = b"\x88" + GOLDEN_V1[1:] + b"\xa1h\xc4\x20" + GOLDEN_SIGNED_TAIL_V1
    assert Codec(b"golden key").decode(signed_v1) == old
    assert Codec(b"golden key").read(signed_v1)[-1] == 0


# -- the decoder refuses what is wrong ------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "expected a msgpack map"),
        (b"\x00", "expected a msgpack map"),
        (b"\x90", "expected a msgpack map"),
        (b"\x80", "unsupported format version None"),
        (b"\x81", "undecodable"),
        (frame(b"\x80")[:-1], "undecodable"),
        (frame(b"\x80") + b"\x00", "ExtraData"),
        (frame(b"\x80", v=3), "unsupported format version 3"),
        (frame(b"\x80", v=2), "missing fields: n"),
        (frame(b"\x80", n=1), "unknown field 'n'"),
        (frame(b"\x80", v=2, n=-1), "out of range"),
        (frame(b"\x80", v=2, n="1"), "field 'n' has the wrong type str"),
        (frame(b"\x80", v=True), "unsupported format version True"),
        (frame(b"\x80", v="1"), "unsupported format version '1'"),
        (frame(b"\x80", v=_DROP), "unsupported format version None"),
        (frame(b"\x80", s=_DROP), "missing fields: s"),
        (frame(b"\x80", x=1), "unknown field 'x'"),
        (frame(b"\x80", r=5), "field 'r' has the wrong type int"),
        (frame(b"\x80", t="now"), "field 't' has the wrong type str"),
        (frame(b"\x80", t=math.nan), "not finite"),
        (frame(b"\x80", s=""), "empty id or signal name"),
        (frame(b"\x80", i=""), "empty id or signal name"),
        (frame(b"\x80", k="text"), "field 'k' has the wrong type str"),
        (frame(b"\x80", h=b"short"), "signature is not 32 bytes"),
        (frame(b"\x80", s="x" * 2000), "exceeds max_str_len"),
        (frame(b"\x80", s=[1]), "exceeds max_array_len"),
        (frame(b"\x80", s=msgpack.ExtType(1, b"")), "wrong type ExtType"),
        (frame(b"\x90"), "not a map of names to values"),
        (frame(b"\x81\x01\x02"), "not a map of names to values"),
        (frame(b"\x81\xa1a\x91"), "undecodable"),
        (frame(b"\x81\xa1a\xc1"), "undecodable"),
        (frame(b"\x81\xa1a\xa2\xff\xfe"), "UnicodeDecodeError"),
        (frame(b"\x81\xa1a\xd6\xff\x00\x00\x00\x01"), "unexpected value of type 'Timestamp'"),
        (frame(b"\x81\xa1a\xd4\x7f\x00"), "unknown extension type 127"),
        (frame(b"\x81\xa1a\xd4\x00\x00"), "unknown extension type 0"),
    ],
)
def test_malformed_messages_are_invalid(data: bytes, match: str) -> None:
    with pytest.raises(InvalidMessage, match=match):
        Codec().decode(data)


def ext(code: int, payload: bytes) -> bytes:
    return frame(msgpack.packb({"a": msgpack.ExtType(code, payload)}))


@pytest.mark.parametrize(
    "data",
    [
        ext(1, b""),
        ext(2, b"\x01"),
        ext(2, b"\x91"),
        ext(3, b"\x92\x91\x01\x02"),  # a list in a set: unhashable
        ext(4, b"\xc1"),
        ext(5, b"\x00" * 11),
        ext(5, struct.pack(">HBBBBBIB", 2024, 13, 1, 0, 0, 0, 0, 0)),
        ext(5, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 1_000_000, 0)),
        ext(5, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 4)),
        ext(5, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 1)),
        ext(5, struct.pack(">HBBBBBIBq", 2024, 1, 1, 0, 0, 0, 0, 1, 86_400_000_000)),
        ext(5, struct.pack(">HBBBBBIBq", 2024, 1, 1, 0, 0, 0, 0, 0, 0)),
        ext(6, struct.pack(">i", 2**31 - 1)),
        ext(6, b"\x00"),
        ext(7, struct.pack(">BBBIB", 24, 0, 0, 0, 0)),
        ext(7, struct.pack(">BBBIB", 1, 0, 0, 0, 2) + b"\x00"),
        ext(8, struct.pack(">iii", 0, 86_400, 0)),
        ext(8, struct.pack(">iii", 0, 0, -1)),
        ext(8, struct.pack(">iii", 10**9, 0, 0)),
        ext(9, b"abc"),
        ext(9, "١٢".encode()),
        ext(9, b""),
        ext(10, b"\x00" * 15),
        ext(11, msgpack.packb(["tests.test_codec.Point"])),
        ext(11, msgpack.packb([1, 2])),
        ext(11, msgpack.packb("tests.test_codec.Point")),
    ],
)
def test_bad_extension_payloads_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidMessage):
        Codec().decode(data)


def test_malformed_decimal_is_invalid_whatever_the_thread_context() -> None:
    with localcontext() as context:
        context.traps[__import__("decimal").InvalidOperation] = False
        with pytest.raises(InvalidMessage):
            Codec().decode(ext(9, b"1.2.3"))


@pytest.mark.parametrize("data", [None, 5, "text", ["list"], object()], ids=repr)
def test_only_bytes_are_decoded(data: Any) -> None:
    with pytest.raises(InvalidMessage, match="expected bytes"):
        Codec().decode(data)


def test_bytearray_and_memoryview_are_decoded() -> None:
    message = Codec().pack("tests.signal", None, KWARGS)
    assert Codec().decode(bytearray(message)).kwargs == KWARGS  # type: ignore[arg-type]
    assert Codec().decode(memoryview(message)).kwargs == KWARGS  # type: ignore[arg-type]


def test_oversize_message_is_invalid_before_any_work() -> None:
    codec_ = Codec(limits=Limits(max_message_bytes=1024))
    message = Codec().pack("tests.signal", None, {"blob": b"x" * 2000})
    with pytest.raises(InvalidMessage, match="over the limit of 1024"):
        codec_.decode(message)
    with pytest.raises(InvalidMessage, match="over the limit of 1024"):
        codec_.decode(memoryview(message))  # type: ignore[arg-type]


def test_hash_flooding_keys_are_rejected() -> None:
    prime = 2**61 - 1  # ints that differ by it share a hash value
    colliding = [
        msgpack.ExtType(1, (k * prime).to_bytes(16, "big", signed=True)) for k in range(1, 200)
    ]
    as_set = msgpack.packb({"s": msgpack.ExtType(3, msgpack.packb(colliding))})
    as_keys = msgpack.packb({"d": {key: 0 for key in colliding}})
    for payload in (as_set, as_keys):
        with pytest.raises(InvalidMessage, match="hash flooding"):
            Codec().decode(frame(payload))
    honest = {"d": dict.fromkeys(range(1000), 0), "s": set(range(-500, 500))}
    assert round_trip(honest) == honest


# -- configuration and threads ------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_depth": 0},
        {"max_depth": 101},
        {"max_depth": True},
        {"max_message_bytes": 100},
        {"max_container_len": 0},
        {"max_name_bytes": 10},
        {"max_message_bytes": 1.5},
    ],
)
def test_limits_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Limits(**options)


def test_codec_needs_limits() -> None:
    with pytest.raises(ConfigurationError):
        Codec(limits={"max_depth": 3})  # type: ignore[arg-type]


def test_codec_is_thread_safe() -> None:
    shared = Codec("s3cret")
    errors: list[BaseException] = []
    ids: list[str] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                kwargs = {"n": n, "i": i, "when": datetime(2024, 1, 1, tzinfo=timezone.utc)}
                kwargs["items"] = [(n, i), {Decimal(i)}]
                envelope = shared.decode(shared.pack("tests.signal", f"sender{n}", kwargs))
                assert canonical(envelope.kwargs) == canonical(kwargs)
                assert envelope.sender == f"sender{n}"
                ids.append(envelope.id)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 8 * 300


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_has_its_own_origin_and_ids() -> None:
    if threading.active_count() > 1:
        pytest.skip("fork with other threads running")
    parent_message = Codec().pack("tests.signal", None, {})
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running pytest's teardown
        try:
            os.close(read_end)
            child = Codec().decode(Codec().pack("tests.signal", None, {}))
            os.write(write_end, f"{child.origin} {child.id} {origin()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_origin, child_id, child_origin_fn = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parent = Codec().decode(parent_message)
    assert child_origin == child_origin_fn
    assert child_origin.startswith(f"{socket.gethostname()}:{pid}:")
    assert parent.origin == origin() != child_origin
    assert child_id[:16] != parent.id[:16]


# -- the decoder's work per message is bounded -----------------------------------


def test_the_default_limits_hold_a_few_thousand_values() -> None:
    assert DEFAULT_LIMITS.max_values == 4096
    assert Codec().decode(Codec().pack("tests.signal", None, {"ids": list(range(4094))})).kwargs
    with pytest.raises(PayloadError, match=r"argument 'ids' .* more than 4096 values"):
        Codec().pack("tests.signal", None, {"ids": list(range(4095))})
    with pytest.raises(PayloadError, match="2049 arguments hold more than 4096 values"):
        Codec().pack("tests.signal", None, {f"a{i}": i for i in range(2049)})


@pytest.mark.parametrize(
    "item",
    [
        b"\xd4\x02\x90",
        b"\xd4\x03\x90",
        b"\xd5\x04\x91\x01",
        b"\xd6\x06\x00\x00\x00\x01",
        b"\x81\x01\x01",
    ],
    ids=["empty-tuple", "empty-set", "frozenset", "date", "int-keyed-map"],
)
def test_half_a_megabyte_of_small_values_stops_after_max_values(
    item: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lists of at most max_values small extension values or maps, 0.5 MB in all:
    # the decoder stops once it has seen more values than the limit, not after
    # decoding every one (each costs a Python call).
    calls = [0]
    original = codec.unpack._Unpacking.ext_hook

    def counting(self: Any, code: int, data: bytes) -> Any:
        calls[0] += 1
        return original(self, code, data)

    monkeypatch.setattr(codec.unpack._Unpacking, "ext_hook", counting)
    limit = DEFAULT_LIMITS.max_values
    inner = b"\xdd" + struct.pack(">I", limit) + item * limit
    count = 500_000 // len(inner) + 1
    body = b"\x81\xa1a" + b"\xdd" + struct.pack(">I", count) + inner * count
    with pytest.raises(InvalidMessage, match="more than 4096 values"):
        Codec().decode(frame(body))
    assert calls[0] <= limit + 1
