"""Property tests of the codec.

Arbitrary nested values built from every supported type come back as they
went out; and the decoder, fed random, mutated and hostile bytes (signed and
unsigned), returns an Envelope or raises InvalidMessage, nothing else, with
bounded memory. The hostile-input tests run 5 x 2,500 = 12,500 examples.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import tracemalloc
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigbroker.codec import Codec, Envelope, Limits
from sigbroker.errors import InvalidMessage, PayloadError
from tests.test_codec import Color, Level, Point, canonical, frame

SECRET = b"fuzz secret"
UNSIGNED = Codec()
SIGNED = Codec(SECRET)
DEEP = Limits(max_depth=100)  # the strategies below nest deeper than 32 only rarely

HOSTILE = settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sign(message: bytes) -> bytes:
    """Sign an unsigned message as a sender with SECRET would."""
    prefix = bytes([message[0] + 1]) + message[1:]  # one more entry in the fixmap
    return prefix + b"\xa1h\xc4\x20" + hmac.new(SECRET, prefix, hashlib.sha256).digest()


def decode_or_reject(codec: Codec, data: bytes) -> Envelope | None:
    """The decoder's contract: an Envelope, or InvalidMessage; any other exception fails."""
    try:
        envelope = codec.decode(data)
    except InvalidMessage:
        return None
    assert isinstance(envelope, Envelope)
    assert isinstance(envelope.kwargs, dict)
    return envelope


# -- round trips --------------------------------------------------------------

MAX_OFFSET = timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
fixed_zones = st.builds(timezone, st.timedeltas(min_value=-MAX_OFFSET, max_value=MAX_OFFSET))

hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.none() | fixed_zones | st.timezones()),
    st.dates(),
    st.times(timezones=st.none() | fixed_zones),
    st.timedeltas(),
    st.decimals().filter(lambda d: not d.is_snan()),  # a signalling NaN can not be hashed
    st.uuids(),
    st.sampled_from(Color),
    st.sampled_from(Level),
    st.builds(Point, st.integers(), st.integers()),
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    hashable_leaves | st.decimals(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(hashables, inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=16,
)
arguments = st.dictionaries(st.text(max_size=8), values, max_size=5)


@ROUND_TRIP
@given(arguments, st.sampled_from([Codec(limits=DEEP), Codec(SECRET, DEEP)]))
def test_arbitrary_values_round_trip(kwargs: dict[str, Any], codec: Codec) -> None:
    envelope = codec.decode(codec.pack("fuzz.signal", "fuzz.Sender", kwargs))
    assert canonical(envelope.kwargs) == canonical(kwargs)
    again = codec.encode(envelope)  # the same envelope, encoded again, decodes the same
    assert canonical(codec.decode(again).kwargs) == canonical(kwargs)


def values_in(value: Any) -> int:
    """The values inside ``value``, counted as ``Limits.max_values`` counts them."""
    if isinstance(value, BaseException):  # [type name, args, message]
        return 3 + sum(1 + values_in(arg) for arg in value.args)
    if isinstance(value, dict):
        return sum(1 + values_in(k) + 1 + values_in(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(1 + values_in(item) for item in value)
    if isinstance(value, Point):
        return 2 + values_in([value.x, value.y])  # [name, encoded value]
    if isinstance(value, enum.Enum):
        return 2 + values_in(value.value)
    return 0


@ROUND_TRIP
@given(arguments)
def test_the_sender_and_the_decoder_count_values_alike(kwargs: dict[str, Any]) -> None:
    assert_counted_alike(kwargs)


def assert_counted_alike(kwargs: dict[str, Any], decoded: dict[str, Any] | None = None) -> None:
    """Both ends take ``kwargs`` at exactly their count of values, and refuse them below.

    ``decoded``: what they decode to, when not ``kwargs`` itself.
    """
    count = values_in(kwargs)
    message = Codec(limits=DEEP).pack("fuzz.signal", None, kwargs)
    expected = canonical(kwargs if decoded is None else decoded)
    for limit in (max(count, 16), max(count + 1, 16)):
        limits = Limits(max_depth=100, max_values=limit)
        Codec(limits=limits).pack("fuzz.signal", None, kwargs)
        assert canonical(Codec(limits=limits).decode(message).kwargs) == expected
    if count > 16:
        tight = Limits(max_depth=100, max_values=count - 1)
        with pytest.raises(PayloadError, match="max_values"):
            Codec(limits=tight).pack("fuzz.signal", None, kwargs)
        with pytest.raises(InvalidMessage, match="more than"):
            Codec(limits=tight).decode(message)


# -- hostile input ------------------------------------------------------------


@HOSTILE
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    for codec in (UNSIGNED, SIGNED):
        decode_or_reject(codec, data)


@HOSTILE
@given(st.sampled_from([b"\x87", b"\x88", b"\x8f"]), st.binary(max_size=600))
def test_random_envelope_maps(head: bytes, data: bytes) -> None:
    decode_or_reject(UNSIGNED, head + data)
    decode_or_reject(SIGNED, sign(head + data))


@HOSTILE
@given(st.binary(max_size=600))
def test_random_argument_bytes(data: bytes) -> None:
    decode_or_reject(UNSIGNED, frame(data))
    decode_or_reject(SIGNED, sign(frame(data)))


ext_codes = st.integers(min_value=-128, max_value=127) | st.integers(min_value=0, max_value=12)


def any_ext(code: int, data: bytes) -> msgpack.ExtType:
    # ExtType() refuses the negative (reserved) codes; the wire does not.
    return tuple.__new__(msgpack.ExtType, (code, data))


msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
hostile_values = st.recursive(
    st.one_of(
        st.none(),
        msgpack_ints,
        st.floats(),
        st.text(max_size=6),
        st.binary(max_size=24),
        st.builds(any_ext, ext_codes, st.binary(max_size=24)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=3) | msgpack_ints, inner, max_size=4),
        st.builds(
            lambda code, items: any_ext(code, msgpack.packb(items)),
            ext_codes,
            st.lists(inner, max_size=4) | inner,
        ),
    ),
    max_leaves=12,
)


@HOSTILE
@given(hostile_values, st.booleans())
def test_hostile_structures(value: Any, wrap: bool) -> None:
    data = frame(msgpack.packb({"a": value} if wrap else value))
    decode_or_reject(UNSIGNED, data)
    decode_or_reject(SIGNED, sign(data))


RICH = {
    "n": -(2**70),
    "when": datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    "day": date(2024, 5, 1),
    "at": time(8, 30),
    "span": timedelta(seconds=90),
    "price": Decimal("9.90"),
    "id": UUID(int=42),
    "nested": [{"t": (1, "a"), "s": {1, 2}, "f": frozenset({b"x"})}, {3: None}],
    "point": Point(1, 2),
    "color": Color.BLUE,
}
VALID = [
    UNSIGNED.pack("fuzz.signal", "fuzz.Sender", RICH),
    SIGNED.pack("fuzz.signal", None, RICH),
    UNSIGNED.pack("fuzz.signal", None, {}),
]
mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate", "replace"]),
        st.integers(min_value=0, max_value=2**16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, operations: list[tuple[str, int, bytes]]) -> bytes:
    for operation, where, junk in operations:
        at = where % (len(data) + 1)
        if operation == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ junk[0]]) + data[at + 1 :]
        elif operation == "insert":
            data = data[:at] + junk + data[at:]
        elif operation == "delete":
            data = data[:at] + data[at + len(junk) :]
        elif operation == "truncate":
            data = data[:at]
        else:
            data = data[:at] + junk + data[at + len(junk) :]
    return data


@HOSTILE
@given(st.sampled_from(VALID), mutations)
def test_mutated_messages(message: bytes, operations: list[tuple[str, int, bytes]]) -> None:
    data = mutate(message, operations)
    for codec in (UNSIGNED, SIGNED):
        envelope = decode_or_reject(codec, data)
        if envelope is not None and codec is SIGNED:
            assert data == message  # a signed message survives no change


def test_valid_messages_decode() -> None:
    assert canonical(UNSIGNED.decode(VALID[0]).kwargs) == canonical(RICH)
    assert canonical(SIGNED.decode(VALID[1]).kwargs) == canonical(RICH)


# -- bombs: rejected, with bounded memory -------------------------------------


def nested_tuples(depth: int) -> bytes:
    packed: bytes = msgpack.packb(None)
    for _ in range(depth):
        packed = msgpack.packb(msgpack.ExtType(2, b"\x91" + packed))
    return packed


def colliding(count: int) -> list[msgpack.ExtType]:
    prime = 2**61 - 1  # ints that differ by it share their hash value
    return [
        msgpack.ExtType(1, (k * prime).to_bytes(16, "big", signed=True)) for k in range(1, count)
    ]


BOMBS = {
    "array32 header with 2**32-1 items in the arguments": frame(b"\x81\xa1a\xdd\xff\xff\xff\xff"),
    "map32 header with 2**32-1 items in the arguments": frame(b"\x81\xa1a\xdf\xff\xff\xff\xff"),
    "array32 header as the arguments": frame(b"\xdd\xff\xff\xff\xff"),
    "array32 header as the message": b"\xdd\xff\xff\xff\xff",
    "map32 header as the message": b"\xdf\xff\xff\xff\xff",
    "10**5-deep arrays as the arguments": frame(b"\x91" * 100_000 + b"\xc0"),
    "10**5-deep arrays in the arguments": frame(b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0"),
    "10**5-deep arrays as the message": b"\x91" * 100_000 + b"\xc0",
    "10**5-deep maps as the message": b"\x81\xa1k" * 100_000 + b"\xc0",
    "huge str32 header in the arguments": frame(b"\x81\xa1a\xdb\xff\xff\xff\xff" + b"x" * 16),
    "huge bin32 header in the arguments": frame(b"\x81\xa1a\xc6\xff\xff\xff\xff" + b"x" * 16),
    "huge ext32 header in the arguments": frame(b"\x81\xa1a\xc9\xff\xff\xff\xff\x02" + b"x"),
    "huge str32 header as the signal name": b"\x87\xa1v\x01\xa1s\xdb\xff\xff\xff\xff" + b"x" * 16,
    "ext with a bogus code": frame(b"\x81\xa1a\xd4\x7f\x00"),
    "ext with a negative code": frame(b"\x81\xa1a\xd4\x80\x00"),
    "array headers that each claim 100,000 items": frame(
        b"\x81\xa1a" + b"\xdd\x00\x01\x86\xa0" * 1000 + b"\xc0"
    ),
    # Claims within the message size: only the allocation-free prescan stops these.
    "300 array headers that each claim 90,000 items, before 90 KB of data": frame(
        b"\x81\xa1a" + b"\xdd\x00\x01\x5f\x90" * 300 + b"\xc6\x00\x01\x5f\x90" + b"x" * 90_000
    ),
    "map headers that each claim 100,000 pairs": frame(
        b"\x81\xa1a" + b"\xdf\x00\x01\x86\xa0\xa1k" * 1000 + b"\xc0"
    ),
    "2,000-deep tuple extensions": frame(b"\x81\xa1a" + nested_tuples(2_000)),
    "colliding hashes in a set": frame(
        msgpack.packb({"a": msgpack.ExtType(3, msgpack.packb(colliding(5000)))})
    ),
    "colliding hashes as map keys": frame(msgpack.packb({"a": dict.fromkeys(colliding(5000), 0)})),
}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("bomb", BOMBS.values(), ids=list(BOMBS))
def test_bombs_are_rejected_with_bounded_memory(bomb: bytes, signed: bool) -> None:
    codec, data = (SIGNED, sign(bomb)) if signed else (UNSIGNED, bomb)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidMessage):
            codec.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"{peak} bytes at peak"
