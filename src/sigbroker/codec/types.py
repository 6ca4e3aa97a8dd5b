"""The value types of the codec: what each one becomes on the wire, and back.

The extension codes, the encoders and decoders of the built-in types, and the
tables that dispatch on a value's exact type: its kind (a leaf, a sequence, a
map, a registered type, an exception, or unsupported) and the packer's
default hook for it.
Subclasses and registered types are added to the tables by
:mod:`sigbroker.codec.registry`. The wire format itself is described in the
docstring of :mod:`sigbroker.codec`, which exports the public names.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Final, Protocol
from uuid import UUID

import msgpack

from ..errors import InvalidMessage, RemoteError

EXT_BIGINT: Final = 1
EXT_TUPLE: Final = 2
EXT_SET: Final = 3
EXT_FROZENSET: Final = 4
EXT_DATETIME: Final = 5
EXT_DATE: Final = 6
EXT_TIME: Final = 7
EXT_TIMEDELTA: Final = 8
EXT_DECIMAL: Final = 9
EXT_UUID: Final = 10
EXT_REGISTERED: Final = 11
EXT_EXCEPTION: Final = 12

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_ONE_US: Final = timedelta(microseconds=1)
_DATETIME: Final = struct.Struct(">HBBBBBIB")  # the wall clock fields, then the flags
_TIME: Final = struct.Struct(">BBBIB")
# An aware value: the same fields, then the UTC offset in microseconds.
_AWARE_DATETIME: Final = struct.Struct(">HBBBBBIBq")
_AWARE_TIME: Final = struct.Struct(">BBBIBq")
_AWARE_DATETIME_BYTES: Final = _AWARE_DATETIME.size
_AWARE, _FOLD = 1, 2
_DAYS: Final = struct.Struct(">i")
_DELTA: Final = struct.Struct(">iii")
# Decimal(text) returns NaN for malformed text unless the context traps it.
_STRICT_DECIMAL: Final = Context(traps=[InvalidOperation])
# Offsets and zones seen, so that the common ones cost a dict lookup; bounded,
# because a decoder must not grow them for hostile offsets.
_CACHE_ENTRIES: Final = 256
_OFFSET_US: dict[timedelta, int] = {timedelta(0): 0}
_FIXED_ZONE_US: dict[timezone, int] = {timezone.utc: 0}
_ZONES: dict[int, timezone] = {0: timezone.utc}

LEAF, SEQUENCE, MAP, REGISTERED, UNSUPPORTED, EXCEPTION = 1, 2, 3, 4, 5, 6

# ExtType is a namedtuple whose __new__ checks its arguments in Python; ours are
# known good, and building the tuple directly is several times cheaper.
_new_tuple: Final = tuple.__new__
_ExtType: Final = msgpack.ExtType


class Nesting(Protocol):
    """What the encoders of containers and registered types need from an encoding."""

    def packb(self, value: Any) -> bytes:
        """Pack a value nested in another one, with the same default hook."""

    def stand_in(self, value: Any) -> Any:
        """The encoded stand-in of a registered value, or the :class:`RemoteError`
        of an exception, from the walk's cache if it is there."""


_Default = Callable[[Nesting, Any], Any]


# -- encoders: the packer's default hook, per type ------------------------------


def _offset_us(offset: timedelta) -> int:
    us = _OFFSET_US.get(offset)
    if us is None:
        us = offset // _ONE_US
        if len(_OFFSET_US) < _CACHE_ENTRIES:
            _OFFSET_US[offset] = us
    return us


def _encode_datetime(enc: Nesting, v: datetime) -> msgpack.ExtType:
    offset = v.utcoffset()
    fields = (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)
    if offset is None:  # naive, or a zone that gives no offset: the wall clock alone
        payload = _DATETIME.pack(*fields, v.fold << 1)
    else:
        us = _offset_us(offset)
        zone = v.tzinfo
        # An exact datetime surely takes its offset from a fixed-offset zone:
        # encode_leaf reads it from there next time.
        if type(zone) is timezone and type(v) is datetime and len(_FIXED_ZONE_US) < _CACHE_ENTRIES:
            _FIXED_ZONE_US[zone] = us
        payload = _AWARE_DATETIME.pack(*fields, v.fold << 1 | _AWARE, us)
    return _new_tuple(_ExtType, (EXT_DATETIME, payload))


def _encode_time(enc: Nesting, value: time) -> msgpack.ExtType:
    offset = value.utcoffset()
    fields = (value.hour, value.minute, value.second, value.microsecond)
    if offset is None:
        payload = _TIME.pack(*fields, value.fold << 1)
    else:
        payload = _AWARE_TIME.pack(*fields, value.fold << 1 | _AWARE, _offset_us(offset))
    return _new_tuple(_ExtType, (EXT_TIME, payload))


def _encode_date(enc: Nesting, value: date) -> msgpack.ExtType:
    return _new_tuple(_ExtType, (EXT_DATE, _DAYS.pack(value.toordinal() - _EPOCH_ORDINAL)))


def _encode_timedelta(enc: Nesting, value: timedelta) -> msgpack.ExtType:
    payload = _DELTA.pack(value.days, value.seconds, value.microseconds)
    return _new_tuple(_ExtType, (EXT_TIMEDELTA, payload))


def _encode_decimal(enc: Nesting, value: Decimal) -> msgpack.ExtType:
    # Decimal's own text, even for a subclass that changes __str__.
    return _new_tuple(_ExtType, (EXT_DECIMAL, Decimal.__str__(value).encode()))


def _encode_uuid(enc: Nesting, value: UUID) -> msgpack.ExtType:
    return _new_tuple(_ExtType, (EXT_UUID, value.bytes))


def _encode_bigint(enc: Nesting, value: int) -> msgpack.ExtType:
    # The packer only hands an exact int to default() when it is out of range.
    size = (value.bit_length() + 8) // 8
    return _new_tuple(_ExtType, (EXT_BIGINT, value.to_bytes(size, "big", signed=True)))


def _encode_tuple(enc: Nesting, value: tuple[Any, ...]) -> msgpack.ExtType:
    return _new_tuple(_ExtType, (EXT_TUPLE, enc.packb(list(value))))


def _encode_set(enc: Nesting, value: set[Any]) -> msgpack.ExtType:
    return _new_tuple(_ExtType, (EXT_SET, enc.packb(list(value))))


def _encode_frozenset(enc: Nesting, value: frozenset[Any]) -> msgpack.ExtType:
    return _new_tuple(_ExtType, (EXT_FROZENSET, enc.packb(list(value))))


def _encode_exception(enc: Nesting, value: BaseException) -> msgpack.ExtType:
    remote: RemoteError = enc.stand_in(value)  # args already made encodable by the walk
    payload = enc.packb([remote.type_name, list(remote.args), remote.message])
    return _new_tuple(_ExtType, (EXT_EXCEPTION, payload))


def _base_value(base: Callable[[Any], Any]) -> _Default:
    # An unregistered subclass of str, int, list... goes out as its base type.
    return lambda enc, value: base(value)


#: (base type, kind, default hook) for exact types and the subclasses that inherit them.
BASES: Final[tuple[tuple[type, int, _Default], ...]] = (
    (datetime, LEAF, _encode_datetime),
    (date, LEAF, _encode_date),
    (time, LEAF, _encode_time),
    (timedelta, LEAF, _encode_timedelta),
    (Decimal, LEAF, _encode_decimal),
    (UUID, LEAF, _encode_uuid),
    (str, LEAF, _base_value(str.__str__)),
    (bytes, LEAF, _base_value(bytes)),
    (int, LEAF, _base_value(int.__int__)),
    (float, LEAF, _base_value(float.__float__)),
    (tuple, SEQUENCE, _encode_tuple),
    (list, SEQUENCE, _base_value(list)),
    (dict, MAP, _base_value(dict)),
    (set, SEQUENCE, _encode_set),
    (frozenset, SEQUENCE, _encode_frozenset),
    (BaseException, EXCEPTION, _encode_exception),  # RemoteError included
)
BUILTIN: Final = frozenset({type(None), bool, bytearray} | {base for base, _, _ in BASES})

# Exact-type dispatch tables, filled in for subclasses and registered types as they show up.
KINDS: dict[type, int] = {t: kind for t, kind, _ in BASES}
KINDS.update({type(None): LEAF, bool: LEAF, bytearray: LEAF})
#: The types of values that need no walk: a flat payload of them is packed as it is.
LEAVES: set[type] = {t for t, kind in KINDS.items() if kind == LEAF}
# The packer handles exact str, bytes, float, list and dict itself, and an exact
# int too unless it is out of range.
DEFAULTS: dict[type, _Default] = {
    t: hook for t, _, hook in BASES if t not in {str, bytes, float, list, dict}
}
DEFAULTS[int] = _encode_bigint


class _LeavesOnly:
    """The nesting of a packer that is given leaves only: it has none to offer."""

    def packb(self, value: Any) -> bytes:
        raise TypeError("a nested value in a packer for leaves")

    def stand_in(self, value: Any) -> Any:
        raise TypeError("a registered value in a packer for leaves")


_LEAVES_ONLY: Final = _LeavesOnly()


def encode_leaf(
    v: Any,
    _zone_us: Any = _FIXED_ZONE_US.get,
    _pack_aware: Any = _AWARE_DATETIME.pack,
    _defaults: Any = DEFAULTS.__getitem__,
) -> Any:
    """The packer's default hook for a payload of leaves; KeyError for a type not in LEAVES.

    Every call counts on the send path: an aware datetime in a fixed-offset
    zone seen before and a Decimal, the most common, are encoded here without
    a second call, to the bytes that their hooks in :data:`DEFAULTS` give.
    """
    cls = type(v)
    if cls is datetime:
        zone = v.tzinfo
        us = _zone_us(zone) if type(zone) is timezone else None
        if us is not None:
            flags = v.fold << 1 | _AWARE
            payload = _pack_aware(
                v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, flags, us
            )
            return _new_tuple(_ExtType, (EXT_DATETIME, payload))
    elif cls is Decimal:
        return _new_tuple(_ExtType, (EXT_DECIMAL, str(v).encode()))
    return _defaults(cls)(_LEAVES_ONLY, v)


# -- decoders: from an extension payload back to the value ----------------------


def _zone(offset: int) -> timezone:
    """The fixed-offset zone of ``offset`` microseconds, cached for the common ones."""
    zone = _ZONES.get(offset)
    if zone is None:
        zone = timezone(timedelta(microseconds=offset))
        if len(_ZONES) < _CACHE_ENTRIES:  # hostile offsets must not grow the cache
            _ZONES[offset] = zone
    return zone


def _decode_datetime(data: bytes) -> datetime:
    if len(data) == _AWARE_DATETIME.size:
        year, month, day, hour, minute, second, micro, flags, offset = _AWARE_DATETIME.unpack(data)
        if flags & ~_FOLD == _AWARE:
            return datetime(
                year, month, day, hour, minute, second, micro, _zone(offset), fold=flags >> 1
            )
    elif len(data) == _DATETIME.size:
        year, month, day, hour, minute, second, micro, flags = _DATETIME.unpack(data)
        if not flags & ~_FOLD:
            return datetime(year, month, day, hour, minute, second, micro, fold=flags >> 1)
    raise InvalidMessage("a datetime or time payload has bad flags or length")


def _decode_time(data: bytes) -> time:
    if len(data) == _AWARE_TIME.size:
        hour, minute, second, micro, flags, offset = _AWARE_TIME.unpack(data)
        if flags & ~_FOLD == _AWARE:
            return time(hour, minute, second, micro, _zone(offset), fold=flags >> 1)
    elif len(data) == _TIME.size:
        hour, minute, second, micro, flags = _TIME.unpack(data)
        if not flags & ~_FOLD:
            return time(hour, minute, second, micro, fold=flags >> 1)
    raise InvalidMessage("a datetime or time payload has bad flags or length")


def _decode_date(data: bytes) -> date:
    (days,) = _DAYS.unpack(data)
    return date.fromordinal(days + _EPOCH_ORDINAL)


def _decode_timedelta(data: bytes) -> timedelta:
    days, seconds, micros = _DELTA.unpack(data)
    if not (0 <= seconds < 86_400 and 0 <= micros < 1_000_000):
        raise InvalidMessage("a timedelta payload is not normalized")
    return timedelta(days, seconds, micros)


def _decode_decimal(data: bytes) -> Decimal:
    return Decimal(data.decode("ascii"), _STRICT_DECIMAL)


def _decode_bigint(data: bytes) -> int:
    if not data:
        raise InvalidMessage("an int payload is empty")
    return int.from_bytes(data, "big", signed=True)


#: The extension types that decode to a scalar, with no state and no nesting.
SCALAR_DECODERS: Final[dict[int, Callable[[bytes], Any]]] = {
    EXT_BIGINT: _decode_bigint,
    EXT_DATETIME: _decode_datetime,
    EXT_DATE: _decode_date,
    EXT_TIME: _decode_time,
    EXT_TIMEDELTA: _decode_timedelta,
    EXT_DECIMAL: _decode_decimal,
    EXT_UUID: lambda data: UUID(bytes=data),
}


def ext_hook(decoders: dict[int, Callable[[bytes], Any]]) -> Callable[[int, bytes], Any]:
    """An ext hook for msgpack that decodes with ``decoders``; LookupError for other codes.

    It is the decoder's fast path, where every call counts: an aware datetime
    and a Decimal, the most common, are decoded here without a second call.
    """
    aware_datetime = _AWARE_DATETIME.unpack
    zones = _ZONES.get
    decoder = decoders.__getitem__

    def decode(code: int, data: bytes) -> Any:
        if code == EXT_DATETIME and len(data) == _AWARE_DATETIME_BYTES:
            year, month, day, hour, minute, second, micro, flags, offset = aware_datetime(data)
            if flags == _AWARE:  # not folded: no fold argument, which costs a third more
                zone = zones(offset) or _zone(offset)
                return datetime(year, month, day, hour, minute, second, micro, zone)
        elif code == EXT_DECIMAL:
            return Decimal(data.decode("ascii"), _STRICT_DECIMAL)
        return decoder(code)(data)

    return decode


#: Decode a scalar extension payload; raise :class:`LookupError` for any other code.
decode_scalar: Final = ext_hook(SCALAR_DECODERS)


#: The types that a decoded argument holds without nesting.
DECODED_LEAVES: Final = frozenset(
    {type(None), bool, int, float, str, bytes, datetime, date, time, timedelta, Decimal, UUID}
)
DECODED_CONTAINERS: Final = frozenset({list, tuple, dict, set, frozenset})
