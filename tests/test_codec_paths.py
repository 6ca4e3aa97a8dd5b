"""The codec's fast paths give what its general paths give: the same bytes,
the same values and the same errors, and each is taken exactly when it should be.

Sending: arguments that are all leaves skip the walk and use a packer kept per
thread (``pack_kwargs``), whose default hook (``encode_leaf``) encodes aware
datetimes and Decimals inline. Receiving: arguments are first unpacked with
no state (``unpack_arguments``: str or bytes keys only, scalar extension
values only, decoded by ``decode_scalar``), and the careful path
(``unpack_carefully``) runs when that fails.
"""

from __future__ import annotations

import inspect
import pickle
import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigbroker import codec as codec_module
from sigbroker.codec import DEFAULT_LIMITS, Codec, Envelope, Limits, register_type
from sigbroker.codec.pack import Encoder, pack_arguments, pack_kwargs
from sigbroker.codec.types import DEFAULTS, SCALAR_DECODERS, decode_scalar, encode_leaf
from sigbroker.codec.unpack import unpack_arguments, unpack_carefully
from sigbroker.errors import InvalidMessage, PayloadError
from tests.test_codec import Point, canonical, frame
from tests.test_codec_fuzz import arguments, hostile_values

DEEP = Limits(max_depth=100)
PATHS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """A value in canonical form, or the exception's type and text."""
    try:
        return ("value", canonical(call()))
    except Exception as exc:
        return ("error", type(exc), str(exc))


class Tag(str):
    pass


class Count(int):
    pass


class Money(Decimal):
    def __str__(self) -> str:
        return "EUR " + Decimal.__str__(self)


class Stamp(datetime):
    pass


class Skewed(datetime):
    """A datetime subclass whose offset is not its zone's."""

    def utcoffset(self) -> timedelta:
        return timedelta(hours=3)


class NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> None:
        return None


def zones() -> st.SearchStrategy[tzinfo | None]:
    offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    return st.none() | st.builds(timezone, offsets) | st.just(ZoneInfo("Europe/Paris"))


# Every kind of leaf, subclasses of built-in types included.
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.binary().map(bytearray),
    st.datetimes(timezones=zones()),
    st.datetimes().map(lambda d: Stamp(*d.timetuple()[:6], d.microsecond)),
    st.dates(),
    st.times(timezones=st.none() | st.just(timezone.utc)),
    st.timedeltas(),
    st.decimals(),
    st.decimals(allow_nan=False).map(Money),
    st.uuids(),
    st.text().map(Tag),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(Count),
)
flat_arguments = st.dictionaries(st.text(max_size=8), leaves, max_size=6)


# -- sending ----------------------------------------------------------------------


@PATHS
@given(flat_arguments)
def test_flat_arguments_pack_to_the_bytes_of_the_general_path(kwargs: dict[str, Any]) -> None:
    assert pack_kwargs(kwargs, DEFAULT_LIMITS) == pack_arguments(kwargs, DEFAULT_LIMITS)


@PATHS
@given(leaves)
def test_the_leaf_hook_gives_the_bytes_of_the_type_hooks(value: Any) -> None:
    hook = DEFAULTS.get(type(value))
    if hook is not None:  # the others msgpack packs itself
        assert encode_leaf(value) == hook(Encoder(), value)


@PATHS
@given(arguments, st.sampled_from([None, b"secret"]))
def test_pack_writes_the_layout_of_encode(kwargs: dict[str, Any], secret: bytes | None) -> None:
    codec = Codec(secret, DEEP)
    message = codec.pack("paths.signal", "paths.Sender", kwargs)
    envelope = codec.decode(message)
    assert canonical(envelope.kwargs) == canonical(kwargs)
    if codec_module.types.LEAVES.issuperset(map(type, kwargs.values())):
        # Only flat arguments: a set, once decoded, may iterate in another order.
        assert codec.encode(envelope) == message


def test_flat_arguments_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    flat = {
        "n": 1,
        "big": 2**70,
        "s": Tag("x"),
        "when": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "paris": datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Paris")),
        "price": Decimal("9.90"),
        "id": UUID(int=1),
        "raw": b"\x00",
    }
    expected = pack_arguments(flat, DEFAULT_LIMITS)  # which also classifies Tag, a leaf
    general: list[Any] = []
    monkeypatch.setattr(
        codec_module.pack, "pack_arguments", lambda kwargs, limits: general.append(kwargs) or b""
    )
    assert pack_kwargs(flat, DEFAULT_LIMITS) == expected
    assert general == []
    for kwargs in (
        {"items": [1, 2]},
        {"pair": (1, 2)},
        {"point": Point(1, 2)},
        {Tag("name"): 1},
        {1: "x"},
    ):
        pack_kwargs(kwargs, DEFAULT_LIMITS)
    assert len(general) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fine": 1, "bad": "\ud800"},
        {"fine": 1, "bad": Tag("\udfff")},
        {"when": datetime(2026, 1, 1, tzinfo=NoOffset()), "raw": b"x", "bad": "\ud800"},
    ],
    ids=["str", "str subclass", "after other leaves"],
)
def test_a_flat_argument_that_fails_is_named_as_by_the_general_path(kwargs: Any) -> None:
    with pytest.raises(PayloadError, match=r"^argument 'bad' could not be encoded") as fast:
        pack_kwargs(kwargs, DEFAULT_LIMITS)
    with pytest.raises(PayloadError) as general:
        pack_arguments(kwargs, DEFAULT_LIMITS)
    assert str(fast.value) == str(general.value)


def test_argument_names_that_subclass_str_go_out_as_str() -> None:
    codec = Codec()
    assert codec.decode(codec.pack("paths.signal", None, {Tag("name"): 1})).kwargs == {"name": 1}


def test_datetime_subclasses_keep_their_own_offset_and_spoil_no_cache() -> None:
    zone = timezone(timedelta(hours=5))
    skewed = Skewed(2026, 1, 1, tzinfo=zone)
    exact = datetime(2026, 1, 1, tzinfo=zone)
    codec = Codec()
    for _ in range(2):  # the second time, from whatever the first one cached
        got = codec.decode(codec.pack("paths.signal", None, {"a": skewed, "b": exact})).kwargs
        assert got["a"].utcoffset() == timedelta(hours=3)
        assert got["b"].utcoffset() == timedelta(hours=5)


def test_a_zone_without_offset_sends_the_wall_clock() -> None:
    value = datetime(2026, 1, 1, 8, 30, tzinfo=NoOffset())
    got = Codec().decode(Codec().pack("paths.signal", None, {"at": value})).kwargs["at"]
    assert got == datetime(2026, 1, 1, 8, 30)
    assert got.tzinfo is None


def test_a_decimal_subclass_goes_out_as_decimal_text() -> None:
    got = Codec().decode(Codec().pack("paths.signal", None, {"m": Money("1.50")})).kwargs["m"]
    assert type(got) is Decimal and str(got) == "1.50"


def test_a_leaf_type_registered_later_leaves_the_fast_path() -> None:
    class Label(str):
        pass

    codec = Codec()
    plain = codec.decode(codec.pack("paths.signal", None, {"l": Label("x")})).kwargs["l"]
    assert type(plain) is str  # classified as a str, for now
    register_type(Label, lambda label: ["label", str(label)], lambda v: Label(v[1]))
    again = codec.decode(codec.pack("paths.signal", None, {"l": Label("x")})).kwargs["l"]
    assert type(again) is Label


def test_each_thread_packs_with_its_own_packer() -> None:
    codec = Codec()
    failures: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(500):
                kwargs = {"n": n, "i": i, "price": Decimal(i), "text": "x" * n * 50}
                expected = {**kwargs, "price": msgpack.ExtType(9, str(i).encode())}
                assert pack_kwargs(kwargs, DEFAULT_LIMITS) == msgpack.packb(expected)
                assert codec.decode(codec.pack("paths.signal", None, kwargs)).kwargs == kwargs
        except BaseException as exc:  # surfaced in the main thread below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# -- receiving --------------------------------------------------------------------


def body_of(kwargs: dict[str, Any], limits: Limits = DEEP) -> bytes:
    message = Codec(limits=limits).pack("paths.signal", None, kwargs)
    body: bytes = msgpack.unpackb(message)["k"]
    return body


@PATHS
@given(arguments)
def test_valid_arguments_unpack_as_by_the_careful_path(kwargs: dict[str, Any]) -> None:
    body = body_of(kwargs)
    fast = outcome(lambda: unpack_arguments(body, DEEP))
    assert fast == outcome(lambda: unpack_carefully(body, DEEP))
    assert fast == ("value", canonical(kwargs))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_values | st.dictionaries(st.text(max_size=3), hostile_values, max_size=4))
def test_hostile_arguments_get_the_careful_paths_value_or_error(value: Any) -> None:
    body = msgpack.packb(value)
    limits = Limits(max_depth=3, max_container_len=3)
    fast = outcome(lambda: unpack_arguments(body, limits))
    assert fast == outcome(lambda: unpack_carefully(body, limits))


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_random_argument_bytes_get_the_careful_paths_value_or_error(body: bytes) -> None:
    assert outcome(lambda: unpack_arguments(body, DEEP)) == outcome(
        lambda: unpack_carefully(body, DEEP)
    )


@pytest.fixture
def careful(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies that reach the careful path."""
    calls: list[bytes] = []
    arguments = codec_module.unpack._Unpacking.arguments

    def spy(self: Any, body: bytes) -> dict[str, Any]:
        calls.append(body)
        return arguments(self, body)

    monkeypatch.setattr(codec_module.unpack._Unpacking, "arguments", spy)
    return calls


def test_plain_arguments_never_reach_the_careful_path(careful: list[bytes]) -> None:
    kwargs = {
        "n": -(2**70),
        "f": 1.5,
        "s": "é",
        "b": b"\x00",
        "none": None,
        "aware": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5))),
        "folded": datetime(2026, 1, 1, tzinfo=timezone.utc, fold=1),
        "naive": datetime(2026, 1, 1, fold=1),
        "day": date(2026, 1, 1),
        "at": time(8, tzinfo=timezone.utc),
        "span": timedelta(days=-1),
        "price": Decimal("-0.00"),
        "id": UUID(int=7),
        "nested": {"list": [1, [2, {"k": b"v"}]], b"bytes key": "ok"},
        "pair": ("sku", Decimal("2"), [1, {"k": None}]),
        "tags": {"a", "b", date(2026, 1, 1)},
        "frozen": [frozenset(range(100))],
    }
    assert canonical(unpack_arguments(body_of(kwargs), DEEP)) == canonical(kwargs)
    assert careful == []


@pytest.mark.parametrize(
    ("kwargs", "limits"),
    [
        ({"pairs": ((1, 2),)}, DEEP),
        ({"nested": [{1}, frozenset({(1,)})]}, DEEP),
        ({"long": tuple(range(200))}, DEEP),  # over PRESCAN_MIN_BYTES
        ({"point": Point(1, 2)}, DEEP),
        ({"pair": (Point(1, 2),)}, DEEP),
        ({"by_int": {1: "one"}}, DEEP),
        ({"in_tuple": ({2.5: None},)}, DEEP),
        ({"pair": (1, 2)}, Limits(max_container_len=255)),
    ],
    ids=[
        "tuple in tuple",
        "tuple in set",
        "long",
        "registered",
        "registered in tuple",
        "int key",
        "float key in tuple",
        "tight container limit",
    ],
)
def test_other_arguments_take_the_careful_path_once(
    careful: list[bytes], kwargs: dict[str, Any], limits: Limits
) -> None:
    body = body_of(kwargs, limits)
    assert canonical(unpack_arguments(body, limits)) == canonical(kwargs)
    assert careful == [body]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (msgpack.packb({"a": [[[[1]]]]}), "deeper than the limit of 3"),
        (msgpack.packb({"a": {"b": {"c": {"d": {}}}}}), "deeper than the limit of 3"),
        (msgpack.packb({b"name": 1}), "not a map of names to values"),
        (msgpack.packb([1]), "not a map of names to values"),
        (msgpack.packb({"a": msgpack.ExtType(9, b"x")}), "ConversionSyntax"),
    ],
)
def test_the_fast_path_refuses_on_its_own_as_the_careful_path_does(
    careful: list[bytes], body: bytes, match: str
) -> None:
    limits = Limits(max_depth=3)
    with pytest.raises(Exception, match=match) as fast:
        unpack_arguments(body, limits)
    assert careful == []
    with pytest.raises(Exception) as slow:
        unpack_carefully(body, limits)
    assert (type(fast.value), str(fast.value)) == (type(slow.value), str(slow.value))


def test_repeated_string_keys_are_no_flooding_on_either_path() -> None:
    # A map may repeat a key; str and bytes hash with a per-process random key,
    # so only other key types are checked for shared hashes.
    pairs = b"".join(msgpack.packb("k") + msgpack.packb(i) for i in range(60))
    body = msgpack.packb({"a": 0})[:1] + msgpack.packb("a") + b"\xde\x00\x3c" + pairs
    assert unpack_arguments(body, DEEP) == unpack_carefully(body, DEEP) == {"a": {"k": 59}}
    ints = b"".join(msgpack.packb(7) + msgpack.packb(i) for i in range(60))
    flood = msgpack.packb({"a": 0})[:1] + msgpack.packb("a") + b"\xde\x00\x3c" + ints
    for unpack in (unpack_arguments, unpack_carefully):
        with pytest.raises(InvalidMessage, match="hash flooding"):
            unpack(flood, DEEP)


SCALAR_PAYLOADS = [
    codec_module.types.DEFAULTS[type(value)](Encoder(), value)
    for value in (
        datetime(2026, 1, 1, 12, 30, 1, 5, tzinfo=timezone.utc),
        datetime(2026, 1, 1, tzinfo=timezone(-timedelta(hours=9, microseconds=1))),
        datetime(2021, 10, 31, 2, 30, tzinfo=ZoneInfo("Europe/Paris"), fold=1),
        datetime(2026, 1, 1, fold=1),
        Decimal("-1.10E+5"),
        Decimal("sNaN"),
        time(8, 1, tzinfo=timezone.utc),
        UUID(int=3),
    )
] + [
    msgpack.ExtType(code, data)
    for code, data in (
        (5, b"\x07\xea\x01\x01\x00\x00\x00\x00\x00\x00\x00\x04" + bytes(8)),  # bad flags
        (5, b"\x07\xea\x0d\x01\x00\x00\x00\x00\x00\x00\x00\x01" + bytes(8)),  # month 13
        (5, b"\x07\xea\x01\x01\x00\x00\x00\x00\x00\x00\x00\x01\x7f" + bytes(7)),  # offset
        (5, b"\x00"),
        (9, b"1.2.3"),
        (9, "\u0661".encode()),  # a digit, but not an ASCII one
    )
]


@pytest.mark.parametrize("ext", SCALAR_PAYLOADS, ids=repr)
def test_the_scalar_hook_decodes_as_the_scalar_decoders(ext: msgpack.ExtType) -> None:
    code, data = ext
    assert outcome(lambda: decode_scalar(code, data)) == outcome(
        lambda: SCALAR_DECODERS[code](data)
    )


@pytest.mark.parametrize("code", [2, 3, 4, 11, 12, 0, -5])
def test_the_scalar_hook_leaves_other_codes_to_the_careful_path(code: int) -> None:
    with pytest.raises(LookupError):
        decode_scalar(code, b"\x90")


# -- envelopes --------------------------------------------------------------------


def test_the_public_names_are_the_codec_packages_own() -> None:
    for name in codec_module.__all__:
        value = getattr(codec_module, name)
        if isinstance(value, type) or inspect.isfunction(value):
            module = value.__module__
            assert module == "sigbroker.codec" or module.startswith("sigbroker.codec."), name
    limits = Limits(max_depth=5)
    assert pickle.loads(pickle.dumps(limits)) == limits
    # A pickle made while Limits was defined in the module sigbroker.codec still loads.
    before = pickle.dumps(limits, protocol=0).replace(b"sigbroker.codec.limits", b"sigbroker.codec")
    assert pickle.loads(before) == limits


def test_read_gives_the_fields_of_the_envelope_that_decode_builds() -> None:
    kwargs = {"when": datetime(2026, 1, 1, tzinfo=timezone.utc), "n": 1}
    for each in (Codec(), Codec(b"secret")):
        data = each.pack("paths.signal", "paths.Sender", kwargs)
        envelope = each.decode(data)
        fields = each.read(data)
        assert fields == (
            envelope.signal,
            envelope.sender,
            envelope.kwargs,
            envelope.id,
            envelope.sent_at,
            envelope.origin,
            envelope.seq,
        )
        assert fields[:3] == ("paths.signal", "paths.Sender", kwargs)
    signed = Codec(b"secret")
    for bad in (b"", b"\x80", frame(b"\x81\xa1a\xc1"), Codec(b"other").pack("s", None, {})):
        read = outcome(lambda data=bad: signed.read(data))
        assert read == outcome(lambda data=bad: signed.decode(data))
        assert read[1] is InvalidMessage


def test_decode_builds_the_envelope_that_encode_took() -> None:
    envelope = Envelope("paths.signal", None, {"when": date(2026, 1, 1)}, "1" * 32, 2.5, "h:2")
    for each in (Codec(), Codec(b"secret")):
        assert each.decode(each.encode(envelope)) == envelope
    with pytest.raises(InvalidMessage):
        Codec().decode(frame(b"\x81\xa1a\xc1"))
