"""The envelope of a signal on the wire and its msgpack encoding.

A :class:`Codec` turns an :class:`Envelope` (signal name, sender reference,
keyword arguments, id, send time, origin) into one msgpack message and back.
It signs messages with HMAC-SHA256 when given a secret, refuses at the sender
what a receiver could not decode (:class:`~sigbroker.errors.PayloadError`),
and rejects anything wrong that arrives from the wire with
:class:`~sigbroker.errors.InvalidMessage`, in bounded time and memory. It
knows nothing about Redis or sockets.

Wire format, version 1
----------------------
A message is one msgpack map (``fixmap``) with one-letter string keys::

    "v"  int        format version, 1
    "i"  str        message id (this encoder: 32 lowercase hex digits)
    "s"  str        signal name, not empty
    "r"  str | nil  sender reference
    "t"  float64    send time, seconds since the Unix epoch (a decoder also takes an int)
    "o"  str        origin, "host:pid"
    "k"  bin        the keyword arguments: a msgpack map with str keys, packed on its own
    "h"  bin (32)   HMAC-SHA256 of the message, present when the sender has a secret

The encoder writes the entries in this order. The signature is the last entry,
written as the 36 bytes ``a1 68 c4 20`` + digest, and signs every byte before
it: ``HMAC-SHA256(secret, message[:-36])``. A decoder with secrets checks it
before it parses anything, and accepts it under any of its secrets (key
rotation: the first secret signs). A decoder without secret accepts signed
and unsigned messages alike and checks no signature. Strings, keys and the
name fields are at most ``Limits.max_name_bytes`` of UTF-8; unknown keys,
missing keys and wrong types are rejected. Later versions keep the map and
its ``"v"`` key, so that any version can be told apart.

Values inside ``"k"``: nil, bool, int (-2**63 .. 2**64-1), float, str, bin
(bytes; a bytearray also goes out as bin), array (list) and map (dict, any
key type) are plain msgpack. Everything else is an ext type whose code and
big-endian payload are::

     1  int beyond 64 bits   two's-complement signed integer, minimal length
     2  tuple                msgpack array of the items
     3  set                  msgpack array of the items
     4  frozenset            msgpack array of the items
     5  datetime             the wall clock: >H year, B month, B day, B hour, B minute,
                             B second, >I microsecond; B flags (1: aware, 2: fold); and
                             when aware, >q the UTC offset in microseconds (12 or 20 bytes)
     6  date                 >i days since 1970-01-01
     7  time                 B hour, B minute, B second, >I microsecond, B flags, and the
                             >q offset when aware, as in 5 (8 or 16 bytes)
     8  timedelta            >i days, >i seconds (0..86399), >i microseconds (0..999999)
     9  Decimal              ASCII ``str(value)``: "1.10", "-0", "NaN", "sNaN", "-Infinity"
    10  UUID                 the 16 bytes
    11  registered type      msgpack array [name: str, encoded value]

Registered types (:func:`register_type`) travel under their name and are
found again only in the local registry: no name from the wire is ever
imported or looked up with ``getattr``. An aware datetime or time comes back
with a fixed-offset :class:`~datetime.timezone` and the same offset; a time
whose tzinfo gives no offset (a ``ZoneInfo`` on a bare time) goes out naive.

Exact types are what count. Unregistered subclasses of the supported types go
out as their base type (a ``SafeString`` as str, an ``OrderedDict`` as dict,
a ``namedtuple`` as tuple, freezegun's datetime as datetime), except Enum
members, which must be registered: an ``IntEnum`` never turns into an int
silently.

Limits
------
Depth counts nested containers (list, tuple, dict, set, frozenset) and
registered values (one level around their encoded form): an argument that is
a scalar has depth 0, a list of ints depth 1. The sender refuses what breaks
a limit, so that a message that was sent is one that workers accept. The
decoder checks the size before any work, parses the envelope under tight
limits, and unpacks the arguments only after the signature was verified.
msgpack preallocates arrays from their headers, so arguments over
:data:`PRESCAN_MIN_BYTES` are first walked by msgpack's allocation-free
``skip()``: a header can then not claim more items than the bytes that
follow. Maps with colliding key hashes (hash flooding) are refused.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import math
import operator
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Context, Decimal, InvalidOperation
from enum import Enum
from time import time as _now
from typing import Any, Final
from uuid import UUID

import msgpack

from .errors import ConfigurationError, InvalidMessage, PayloadError

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "Codec",
    "Envelope",
    "Limits",
    "decode",
    "encode",
    "new_envelope",
    "origin",
    "register_type",
]

#: The version of the wire format that this module writes, and the only one it reads.
FORMAT_VERSION: Final = 1

#: Arguments longer than this are walked by msgpack's ``skip()`` before they are unpacked.
PRESCAN_MIN_BYTES: Final = 256
#: Maps and sets above this size have their key hashes checked for flooding.
HASH_CHECK_MIN_ITEMS: Final = 16
#: Most keys of one map or set that may share a hash value with another key.
MAX_SHARED_HASHES: Final = 32
#: Signal name and sender pairs whose packed bytes a codec keeps.
NAME_CACHE_SIZE: Final = 1024

_EXT_BIGINT: Final = 1
_EXT_TUPLE: Final = 2
_EXT_SET: Final = 3
_EXT_FROZENSET: Final = 4
_EXT_DATETIME: Final = 5
_EXT_DATE: Final = 6
_EXT_TIME: Final = 7
_EXT_TIMEDELTA: Final = 8
_EXT_DECIMAL: Final = 9
_EXT_UUID: Final = 10
_EXT_REGISTERED: Final = 11

_SIG_TAG: Final = b"\xa1h\xc4\x20"  # key "h", then a bin8 header for 32 bytes
_SIG_BYTES: Final = len(_SIG_TAG) + 32
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_ONE_US: Final = timedelta(microseconds=1)
_DATETIME: Final = struct.Struct(">HBBBBBIB")  # wall clock fields, flags
_TIME: Final = struct.Struct(">BBBIB")
_OFFSET: Final = struct.Struct(">q")  # follows the flags when the value is aware
_AWARE, _FOLD = 1, 2
_DAYS: Final = struct.Struct(">i")
_DELTA: Final = struct.Struct(">iii")
_F64: Final = struct.Struct(">d")
# Decimal(text) returns NaN for malformed text unless the context traps it.
_STRICT_DECIMAL: Final = Context(traps=[InvalidOperation])
_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "v": (int,),
    "i": (str,),
    "s": (str,),
    "r": (str, type(None)),
    "t": (float, int),
    "o": (str,),
    "k": (bytes,),
    "h": (bytes,),
}
_REQUIRED: Final = frozenset(_FIELD_TYPES) - {"h"}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one message, enforced by the sender and again by the decoder.

    ``max_message_bytes`` bounds the whole message, ``max_depth`` the nesting
    of containers in each argument, ``max_container_len`` the items of any one
    list, tuple, map or set, and ``max_name_bytes`` the signal name, sender
    reference, id and origin. No string or bytes value can be longer than the
    message, so they need no limit of their own.
    """

    max_message_bytes: int = 1024 * 1024
    max_depth: int = 32
    max_container_len: int = 100_000
    max_name_bytes: int = 1024

    def __post_init__(self) -> None:
        # msgpack's C stacks stop at 511 (packer) and 1024 (unpacker) levels, and
        # Python's recursion limit at 1000 frames: depth stays far below all three.
        for name, low, high in (
            ("max_message_bytes", 256, 2**31 - 1),
            ("max_depth", 1, 100),
            ("max_container_len", 1, 2**31 - 1),
            ("max_name_bytes", 512, 65_535),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ConfigurationError(f"Limits.{name} must be an int from {low} to {high}")


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class Envelope:
    """One signal on the wire: what was sent, by whom, when and from where.

    ``sender`` is already a reference string (the signal module makes it), and
    ``kwargs`` are the keyword arguments of the send. ``id`` is unique per
    message, ``sent_at`` is ``time.time()`` at the sender and ``origin`` its
    ``"host:pid"``.
    """

    signal: str
    sender: str | None
    kwargs: dict[str, Any] = field(hash=False)
    id: str
    sent_at: float
    origin: str
    version: int = FORMAT_VERSION


# -- the process: origin and message ids --------------------------------------

_COUNTER = itertools.count()
_PID = 0
_ORIGIN = ""
_ID_PREFIX = ""
_ID_HEAD = b""
_ORIGIN_ENTRY = b""


def _init_process() -> None:
    # Runs at import and in every forked child, so that ids and origins never
    # repeat across processes and pack() needs no getpid() per message.
    global _PID, _ORIGIN, _ID_PREFIX, _ID_HEAD, _ORIGIN_ENTRY
    _PID = os.getpid()
    _ORIGIN = f"{socket.gethostname()}:{_PID}"
    _ID_PREFIX = os.urandom(8).hex()
    _ID_HEAD = b"\xa1i\xd9\x20" + _ID_PREFIX.encode()
    _ORIGIN_ENTRY = b"\xa1o" + msgpack.packb(_ORIGIN) + b"\xa1k"


_init_process()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_init_process)


def origin() -> str:
    """Return this process's ``"hostname:pid"``, computed once per process."""
    if os.getpid() != _PID:  # forked by something that skipped the at-fork hooks
        _init_process()
    return _ORIGIN


def _new_id() -> str:
    # 16 random hex digits per process and a 16-digit counter: unique, and far
    # cheaper than uuid4() (next() on itertools.count is atomic under the GIL).
    return f"{_ID_PREFIX}{next(_COUNTER):016x}"


def new_envelope(signal: str, sender: str | None, kwargs: Mapping[str, Any]) -> Envelope:
    """Return an envelope for a send happening now, with a fresh id."""
    return Envelope(signal, sender, dict(kwargs), _new_id(), _now(), origin())


# -- values: what each type becomes on the wire --------------------------------


class _Refused(Exception):
    """An argument can not be sent; the text completes "argument 'name' ..."."""


def _unsupported(cls: type) -> _Refused:
    return _Refused(
        f"is not serializable: object of type {cls.__qualname__!r}"
        " (register it with sigbroker.codec.register_type)"
    )


def _short(value: object) -> str:
    """A repr that is safe to put in an error message about hostile input."""
    if isinstance(value, str | bytes):
        value = value[:80]
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


# ExtType is a namedtuple whose __new__ checks its arguments in Python; ours are
# known good, and building the tuple directly saves a third of a microsecond.
_ext: Final = functools.partial(tuple.__new__, msgpack.ExtType)


def _encode_datetime(enc: _Encoder, value: datetime) -> msgpack.ExtType:
    offset = value.utcoffset()
    flags = value.fold << 1 if offset is None else value.fold << 1 | _AWARE
    v = value
    payload = _DATETIME.pack(
        v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, flags
    )
    if offset is not None:
        payload += _OFFSET.pack(offset // _ONE_US)
    return _ext((_EXT_DATETIME, payload))


def _encode_time(enc: _Encoder, value: time) -> msgpack.ExtType:
    offset = value.utcoffset()
    flags = value.fold << 1 if offset is None else value.fold << 1 | _AWARE
    payload = _TIME.pack(value.hour, value.minute, value.second, value.microsecond, flags)
    if offset is not None:
        payload += _OFFSET.pack(offset // _ONE_US)
    return _ext((_EXT_TIME, payload))


def _encode_date(enc: _Encoder, value: date) -> msgpack.ExtType:
    return _ext((_EXT_DATE, _DAYS.pack(value.toordinal() - _EPOCH_ORDINAL)))


def _encode_timedelta(enc: _Encoder, value: timedelta) -> msgpack.ExtType:
    return _ext((_EXT_TIMEDELTA, _DELTA.pack(value.days, value.seconds, value.microseconds)))


def _encode_decimal(enc: _Encoder, value: Decimal) -> msgpack.ExtType:
    return _ext((_EXT_DECIMAL, Decimal.__str__(value).encode("ascii")))


def _encode_uuid(enc: _Encoder, value: UUID) -> msgpack.ExtType:
    return _ext((_EXT_UUID, value.bytes))


def _encode_bigint(enc: _Encoder, value: int) -> msgpack.ExtType:
    # The packer only hands an exact int to default() when it is out of range.
    size = (value.bit_length() + 8) // 8
    return _ext((_EXT_BIGINT, value.to_bytes(size, "big", signed=True)))


def _encode_tuple(enc: _Encoder, value: tuple[Any, ...]) -> msgpack.ExtType:
    return _ext((_EXT_TUPLE, enc.packb(list(value))))


def _encode_set(enc: _Encoder, value: set[Any]) -> msgpack.ExtType:
    return _ext((_EXT_SET, enc.packb(list(value))))


def _encode_frozenset(enc: _Encoder, value: frozenset[Any]) -> msgpack.ExtType:
    return _ext((_EXT_FROZENSET, enc.packb(list(value))))


def _base_value(base: Callable[[Any], Any]) -> Callable[[_Encoder, Any], Any]:
    # An unregistered subclass of str, int, list... goes out as its base type.
    return lambda enc, value: base(value)


_Default = Callable[["_Encoder", Any], Any]

_LEAF, _SEQUENCE, _MAP, _REGISTERED, _UNSUPPORTED = 1, 2, 3, 4, 5

#: (base type, kind, default hook) for exact types and the subclasses that inherit them.
_BASES: Final[tuple[tuple[type, int, _Default | None], ...]] = (
    (datetime, _LEAF, _encode_datetime),
    (date, _LEAF, _encode_date),
    (time, _LEAF, _encode_time),
    (timedelta, _LEAF, _encode_timedelta),
    (Decimal, _LEAF, _encode_decimal),
    (UUID, _LEAF, _encode_uuid),
    (str, _LEAF, _base_value(str.__str__)),
    (bytes, _LEAF, _base_value(bytes)),
    (int, _LEAF, _base_value(int.__int__)),
    (float, _LEAF, _base_value(float.__float__)),
    (tuple, _SEQUENCE, _encode_tuple),
    (list, _SEQUENCE, _base_value(list)),
    (dict, _MAP, _base_value(dict)),
    (set, _SEQUENCE, _encode_set),
    (frozenset, _SEQUENCE, _encode_frozenset),
)
_BUILTIN: Final = frozenset({type(None), bool, bytearray} | {base for base, _, _ in _BASES})

# Exact-type dispatch tables, filled in for subclasses and registered types as they show up.
_KINDS: dict[type, int] = {t: kind for t, kind, _ in _BASES}
_KINDS.update({type(None): _LEAF, bool: _LEAF, bytearray: _LEAF})
_LEAVES: set[type] = {t for t, kind in _KINDS.items() if kind == _LEAF}
# The packer handles exact str, bytes, float, list and dict itself, and an exact
# int too unless it is out of range.
_DEFAULTS: dict[type, _Default] = {
    t: hook
    for t, _, hook in _BASES
    if hook is not None and t not in {str, bytes, float, list, dict}
}
_DEFAULTS[int] = _encode_bigint
_STR: Final = frozenset({str})


@dataclass(frozen=True, slots=True)
class _Registration:
    cls: type
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    prefix: bytes  # array header and packed name, the start of every payload

    def default(self, enc: _Encoder, value: Any) -> msgpack.ExtType:
        hit = enc.cache.get(id(value))
        encoded = hit[1] if hit is not None and hit[0] is value else self.encode(value)
        return _ext((_EXT_REGISTERED, self.prefix + enc.packb(encoded)))


_REGISTRY_LOCK = threading.Lock()
_BY_TYPE: dict[type, _Registration] = {}
_BY_NAME: dict[str, _Registration] = {}


def _classify(cls: type) -> int:
    """Find and remember what kind of value an instance of ``cls`` is."""
    with _REGISTRY_LOCK:
        if cls in _BY_TYPE:
            return _REGISTERED
        kind: int = _UNSUPPORTED
        if not issubclass(cls, Enum):
            for base, base_kind, hook in _BASES:
                if issubclass(cls, base):
                    kind = base_kind
                    if hook is not None:
                        _DEFAULTS[cls] = hook
                    break
        if kind == _LEAF:
            _LEAVES.add(cls)
        _KINDS[cls] = kind
        return kind


def register_type(
    cls: type,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
    *,
    name: str | None = None,
) -> None:
    """Let instances of ``cls`` travel in signal arguments.

    ``encode(value)`` returns an encodable stand-in (itself made of supported
    types) and ``decode(stand_in)`` rebuilds the value in the worker; for an
    Enum they default to ``member.value`` and ``cls(value)``. The class
    travels under ``name`` (default ``"module.QualName"``), which the worker
    must have registered too: a message naming an unknown type is rejected.
    Only instances of exactly ``cls`` match, not of its subclasses.
    Registering a class again replaces its functions (and name). A name that
    belongs to another class raises :class:`ConfigurationError`, unless that
    class has the same module and qualname (a reloaded module): the new class
    then takes the name over.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type() needs a class, not {type(cls).__qualname__!r}")
    if cls in _BUILTIN:
        raise ConfigurationError(f"{cls.__qualname__} is built in and can not be registered")
    if issubclass(cls, Enum):
        encode = encode or operator.attrgetter("value")
        decode = decode or cls
    if not callable(encode) or not callable(decode):
        raise TypeError(f"register_type({cls.__qualname__}) needs encode and decode functions")
    wire_name = _qualified(cls) if name is None else name
    if not isinstance(wire_name, str) or not 0 < len(wire_name.encode()) <= 255:
        raise ConfigurationError(f"a type name must be a string of 1 to 255 bytes: {wire_name!r}")
    prefix = b"\x92" + msgpack.packb(wire_name)
    registration = _Registration(cls, wire_name, encode, decode, prefix)
    with _REGISTRY_LOCK:
        holder = _BY_NAME.get(wire_name)
        if holder is not None and holder.cls is not cls:
            if _qualified(holder.cls) != _qualified(cls):
                raise ConfigurationError(
                    f"the type name {wire_name!r} is already registered for {holder.cls!r}"
                )
            _forget(holder.cls)  # the same class, defined again: a reloaded module
        previous = _BY_TYPE.get(cls)
        if previous is not None:
            _forget(cls)
        _BY_TYPE[cls] = _BY_NAME[wire_name] = registration
        _KINDS[cls] = _REGISTERED
        _DEFAULTS[cls] = registration.default
        _LEAVES.discard(cls)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _forget(cls: type) -> None:
    """Drop a registered class from the tables (the caller holds the registry lock)."""
    registration = _BY_TYPE.pop(cls)
    del _BY_NAME[registration.name]
    _KINDS.pop(cls, None)
    _DEFAULTS.pop(cls, None)


# -- encoding -----------------------------------------------------------------


class _Encoder:
    """One encoding: the packer's default hook, and the walk that checks arguments.

    The walk runs before packing, so that an argument is refused with its name
    and nothing is half packed. It calls the encoders of registered types and
    keeps their results in ``cache`` for the default hook, so that each is
    called once per value.
    """

    __slots__ = ("cache", "max_depth", "max_len")

    def __init__(self, max_depth: int = 0, max_len: int = 0) -> None:
        self.cache: dict[int, tuple[Any, Any]] = {}
        self.max_depth = max_depth
        self.max_len = max_len

    def default(self, value: Any) -> Any:
        hook = _DEFAULTS.get(type(value))
        if hook is None:
            _classify(type(value))
            hook = _DEFAULTS.get(type(value))
            if hook is None:
                raise TypeError(f"object of type {type(value).__qualname__!r} is not serializable")
        return hook(self, value)

    def packb(self, value: Any) -> bytes:
        # A packer is not re-entrant, and default() packs nested values: a fresh
        # small one costs less than 0.2 us.
        packer = msgpack.Packer(default=self.default, strict_types=True, buf_size=1024)
        packed: bytes = packer.pack(value)
        return packed

    def measure(self, value: Any, budget: int) -> int:
        """Return the depth of ``value``; raise _Refused past the limits."""
        cls = type(value)
        kind = _KINDS.get(cls) or _classify(cls)
        if kind == _LEAF:
            return 0
        if kind == _UNSUPPORTED:
            raise _unsupported(cls)
        if budget <= 0:
            raise _Refused(f"nests deeper than the limit of {self.max_depth} levels")
        if kind == _REGISTERED:
            return 1 + self.measure(self.encoded(value), budget - 1)
        if len(value) > self.max_len:
            raise _Refused(
                f"holds a {cls.__qualname__} of {len(value)} items,"
                f" over the limit of {self.max_len}"
            )
        if kind == _MAP:
            keys = self.measure_items(value.keys(), budget - 1)
            return 1 + max(keys, self.measure_items(value.values(), budget - 1))
        return 1 + self.measure_items(value, budget - 1)

    def measure_items(self, items: Iterable[Any], budget: int) -> int:
        if _LEAVES.issuperset(map(type, items)):
            return 0
        return max(self.measure(item, budget) for item in items)

    def encoded(self, value: Any) -> Any:
        hit = self.cache.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        registration = _BY_TYPE[type(value)]
        try:
            encoded = registration.encode(value)
        except Exception as exc:
            raise _Refused(
                f"could not be encoded: the encoder registered for"
                f" {registration.cls.__qualname__!r} raised {exc!r}"
            ) from exc
        self.cache[id(value)] = (value, encoded)
        return encoded


_PLAIN: Final = _Encoder()  # holds nothing: for arguments that are all plain values
_local = threading.local()


def _plain_packer() -> Any:
    try:
        return _local.packer
    except AttributeError:
        _local.packer = msgpack.Packer(default=_PLAIN.default, strict_types=True)
        return _local.packer


_BIN8: Final = [b"\xc4" + bytes([size]) for size in range(0x100)]


def _bin_header(size: int) -> bytes:
    if size < 0x100:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 0x10000:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


# -- decoding -----------------------------------------------------------------


_ZONES: dict[int, timezone] = {0: timezone.utc}


def _zone(data: bytes, start: int, flags: int) -> timezone | None:
    """The fixed-offset zone whose offset follows the flags, or None for a naive value."""
    if flags & ~(_AWARE | _FOLD) or len(data) != start + (8 if flags & _AWARE else 0):
        raise InvalidMessage("a datetime or time payload has bad flags or length")
    if not flags & _AWARE:
        return None
    (offset,) = _OFFSET.unpack_from(data, start)
    zone = _ZONES.get(offset)
    if zone is None:
        zone = timezone(timedelta(microseconds=offset))
        if len(_ZONES) < 256:  # hostile offsets must not grow the cache
            _ZONES[offset] = zone
    return zone


def _decode_datetime(data: bytes) -> datetime:
    year, month, day, hour, minute, second, micro, flags = _DATETIME.unpack_from(data)
    zone = _zone(data, _DATETIME.size, flags)
    return datetime(year, month, day, hour, minute, second, micro, zone, fold=flags >> 1)


def _decode_time(data: bytes) -> time:
    hour, minute, second, micro, flags = _TIME.unpack_from(data)
    return time(hour, minute, second, micro, _zone(data, _TIME.size, flags), fold=flags >> 1)


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


_SCALAR_DECODERS: Final[dict[int, Callable[[bytes], Any]]] = {
    _EXT_BIGINT: _decode_bigint,
    _EXT_DATETIME: _decode_datetime,
    _EXT_DATE: _decode_date,
    _EXT_TIME: _decode_time,
    _EXT_TIMEDELTA: _decode_timedelta,
    _EXT_DECIMAL: _decode_decimal,
    _EXT_UUID: lambda data: UUID(bytes=data),
}
_DECODED_LEAVES: Final = frozenset(
    {type(None), bool, int, float, str, bytes, datetime, date, time, timedelta, Decimal, UUID}
)
_DECODED_CONTAINERS: Final = frozenset({list, tuple, dict, set, frozenset})


def _check_hashes(keys: list[Any]) -> None:
    # Ints, tuples, UUIDs and Decimals hash predictably: many keys with one hash
    # value would make building the dict or set quadratic. Distinct hash values
    # are enough, because Python's probing uses every bit of the hash.
    shared = len(keys) - len(set(map(hash, keys)))
    if shared > MAX_SHARED_HASHES:
        raise InvalidMessage(f"{shared} keys share their hash with another key (hash flooding)")


def _make_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    if len(pairs) > HASH_CHECK_MIN_ITEMS:
        _check_hashes([pair[0] for pair in pairs])
    return dict(pairs)


def _prescan(data: bytes) -> None:
    # skip() walks the structure without building anything; once it has seen
    # every claimed item, unpackb can not allocate for items that are not there.
    unpacker = msgpack.Unpacker(max_buffer_size=len(data))
    unpacker.feed(data)
    unpacker.skip()
    if unpacker.tell() != len(data):
        raise InvalidMessage("extra bytes after a value")


class _Unpacking:
    """The state of one decode: how deep the extension values nest, and the
    depth of each registered value (``memo``, by id, holding the value)."""

    __slots__ = ("level", "max_depth", "max_len", "memo")

    def __init__(self, limits: Limits) -> None:
        self.level = 0
        self.max_depth = limits.max_depth
        self.max_len = limits.max_container_len
        self.memo: dict[int, tuple[Any, int]] = {}

    def unpack(self, data: bytes) -> Any:
        size = len(data)
        if size > PRESCAN_MIN_BYTES:
            _prescan(data)
        if size <= self.max_len:  # msgpack's own limits, from the size, are the tighter ones
            return msgpack.unpackb(
                data, ext_hook=self.ext_hook, object_pairs_hook=_make_dict, strict_map_key=False
            )
        return msgpack.unpackb(
            data,
            ext_hook=self.ext_hook,
            object_pairs_hook=_make_dict,
            strict_map_key=False,
            max_array_len=self.max_len,
            max_map_len=self.max_len,
        )

    def ext_hook(self, code: int, data: bytes) -> Any:
        scalar = _SCALAR_DECODERS.get(code)
        if scalar is not None:
            return scalar(data)
        if code == _EXT_TUPLE:
            return tuple(self.items(data))
        if code in (_EXT_SET, _EXT_FROZENSET):
            items = self.items(data)
            if len(items) > HASH_CHECK_MIN_ITEMS:
                _check_hashes(items)
            return set(items) if code == _EXT_SET else frozenset(items)
        if code == _EXT_REGISTERED:
            return self.registered(data)
        raise InvalidMessage(f"unknown extension type {code}")

    def items(self, data: bytes) -> list[Any]:
        if self.level >= self.max_depth:
            raise self.too_deep()
        self.level += 1
        try:
            items = self.unpack(data)
        finally:
            self.level -= 1
        if type(items) is not list:
            raise InvalidMessage("an extension payload is not an array")
        return items

    def registered(self, data: bytes) -> Any:
        items = self.items(data)
        if len(items) != 2 or type(items[0]) is not str:
            raise InvalidMessage("a registered-type payload is not [name, value]")
        registration = _BY_NAME.get(items[0])
        if registration is None:
            raise InvalidMessage(f"unknown registered type {_short(items[0])}")
        depth = 1 + self.depth(items[1], self.max_depth - 1)
        value = registration.decode(items[1])
        hit = self.memo.get(id(value))
        if hit is not None and hit[0] is value:  # a decoder that hands out shared values
            depth = max(depth, hit[1])
        self.memo[id(value)] = (value, depth)
        return value

    def depth(self, value: Any, budget: int) -> int:
        """Return the depth of a decoded value; raise past the limit or on a stray type."""
        cls = type(value)
        if cls in _DECODED_LEAVES:
            return 0
        if cls in _DECODED_CONTAINERS:
            if budget <= 0:
                raise self.too_deep()
            if cls is dict:
                keys = self.depth_items(value.keys(), budget - 1)
                return 1 + max(keys, self.depth_items(value.values(), budget - 1))
            return 1 + self.depth_items(value, budget - 1)
        hit = self.memo.get(id(value))
        if hit is None or hit[0] is not value:
            raise InvalidMessage(f"unexpected value of type {cls.__qualname__!r}")
        if hit[1] > budget:
            raise self.too_deep()
        return hit[1]

    def too_deep(self) -> InvalidMessage:
        return InvalidMessage(f"values nest deeper than the limit of {self.max_depth} levels")

    def depth_items(self, items: Iterable[Any], budget: int) -> int:
        if _DECODED_LEAVES.issuperset(map(type, items)):
            return 0
        return max(self.depth(item, budget) for item in items)


def _read_fields(fields: Any) -> tuple[str, str, str | None, float, str, bytes]:
    """Check the envelope map; return id, signal, sender, sent_at, origin, arguments."""
    try:
        version, message_id, signal, sender, sent_at, origin_, body = (
            fields["v"],
            fields["i"],
            fields["s"],
            fields["r"],
            fields["t"],
            fields["o"],
            fields["k"],
        )
    except (KeyError, TypeError):
        raise _field_error(fields) from None
    if (
        type(version) is int
        and version == FORMAT_VERSION
        and type(message_id) is str
        and message_id
        and type(signal) is str
        and signal
        and (sender is None or type(sender) is str)
        and (type(sent_at) is float or type(sent_at) is int)
        and math.isfinite(sent_at)
        and type(origin_) is str
        and type(body) is bytes
    ):
        signature = fields.get("h")
        if len(fields) == 7 or (
            len(fields) == 8 and type(signature) is bytes and len(signature) == 32
        ):
            return message_id, signal, sender, float(sent_at), origin_, body
    raise _field_error(fields)


def _field_error(fields: Any) -> InvalidMessage:
    """Say what is wrong with an envelope map that failed the checks."""
    if type(fields) is not dict:
        return InvalidMessage("not a sigbroker message: expected a map")
    version = fields.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        return InvalidMessage(f"unsupported format version {_short(version)}")
    missing = _REQUIRED - fields.keys()
    if missing:
        return InvalidMessage(f"missing fields: {', '.join(sorted(missing))}")
    for key, value in fields.items():
        types = _FIELD_TYPES.get(key)
        if types is None:
            return InvalidMessage(f"unknown field {_short(key)}")
        if type(value) not in types:
            return InvalidMessage(f"field {key!r} has the wrong type {type(value).__qualname__}")
    if "h" in fields and len(fields["h"]) != 32:
        return InvalidMessage("the signature is not 32 bytes")
    return InvalidMessage("empty id or signal name, or a send time that is not finite")


# -- the codec ----------------------------------------------------------------


def _secret_keys(secrets: bytes | str | Sequence[bytes | str] | None) -> tuple[bytes, ...]:
    if secrets is None:
        return ()
    items = [secrets] if isinstance(secrets, str | bytes | bytearray) else list(secrets)
    keys = []
    for item in items:
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes | bytearray) or not item:
            raise ConfigurationError("a secret must be a non-empty string or bytes")
        keys.append(bytes(item))
    return tuple(keys)


class _HmacSha256:
    """HMAC-SHA256 (RFC 2104) with the key's two pads hashed once instead of per message."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))

    def digest(self, message: bytes | memoryview) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class Codec:
    """Encodes envelopes into messages and decodes messages back, with limits.

    With ``secrets`` (one, or a list for key rotation) every message is signed
    with the first and verified against any of them; a codec with secrets
    rejects unsigned messages. A codec without secret sends unsigned messages
    and accepts both kinds, checking no signature. Thread-safe: one codec can
    serve every thread of a process.
    """

    def __init__(
        self,
        secrets: bytes | str | Sequence[bytes | str] | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not isinstance(limits, Limits):
            raise ConfigurationError(f"limits must be a Limits, not {type(limits).__qualname__}")
        self.limits = limits
        self._signers = tuple(_HmacSha256(key) for key in _secret_keys(secrets))
        self._head = (b"\x88" if self._signers else b"\x87") + b"\xa1v" + bytes([FORMAT_VERSION])
        self._max_bytes = limits.max_message_bytes
        self._max_len = limits.max_container_len
        self._names: dict[tuple[str, str | None], bytes] = {}
        self._envelope_limits = {
            "max_str_len": limits.max_name_bytes,
            "max_bin_len": limits.max_message_bytes,
            "max_array_len": 0,
            "max_map_len": 16,
            "max_ext_len": 0,
        }

    def __repr__(self) -> str:
        return f"<Codec signed={self.signed} {self.limits}>"

    @property
    def signed(self) -> bool:
        """Whether this codec signs its messages (and insists on signed ones)."""
        return bool(self._signers)

    # -- sending --------------------------------------------------------------

    def pack(self, signal: str, sender: str | None, kwargs: Mapping[str, Any]) -> bytes:
        """Encode a send happening now: the fast path of :meth:`encode`.

        Makes the id, send time and origin itself and returns the same layout
        as ``encode(new_envelope(signal, sender, kwargs))``. Raises
        :class:`PayloadError`, naming the argument, for anything that can not
        be sent.
        """
        if (
            type(kwargs) is dict
            and len(kwargs) <= self._max_len
            and _LEAVES.issuperset(map(type, kwargs.values()))
            and _STR.issuperset(map(type, kwargs))
        ):
            try:  # plain values only: no walk needed, and a packer kept per thread
                body = _plain_packer().pack(kwargs)
            except Exception:
                body = self._pack_arguments(kwargs)  # raises, naming the argument
        else:
            body = self._pack_arguments(kwargs)
        try:
            names = self._names[signal, sender]
        except (KeyError, TypeError):  # TypeError: an unhashable sender, refused below
            names = self._name_entries(signal, sender)
        size = len(body)
        message = b"".join(
            (
                self._head,
                _ID_HEAD,
                b"%016x" % next(_COUNTER),
                names,
                _F64.pack(_now()),
                _ORIGIN_ENTRY,
                _BIN8[size] if size < 0x100 else _bin_header(size),
                body,
            )
        )
        if self._signers or len(message) > self._max_bytes:
            return self._finish(message)
        return message

    def encode(self, envelope: Envelope) -> bytes:
        """Encode ``envelope``; raise :class:`PayloadError` for anything that can not be sent."""
        if not isinstance(envelope, Envelope):
            raise PayloadError(f"expected an Envelope, not {type(envelope).__qualname__!r}")
        if envelope.version != FORMAT_VERSION:
            raise PayloadError(f"this codec writes format version {FORMAT_VERSION} only")
        sent_at = envelope.sent_at
        if type(sent_at) not in (float, int) or not math.isfinite(sent_at):
            raise PayloadError(f"sent_at must be a finite float, not {_short(sent_at)}")
        id_entry = b"\xa1i" + self._name_bytes(envelope.id, "the message id", empty=False)
        origin_entry = b"\xa1o" + self._name_bytes(envelope.origin, "the origin") + b"\xa1k"
        body = self._pack_arguments(envelope.kwargs)
        names = self._name_entries(envelope.signal, envelope.sender)
        message = b"".join(
            (
                self._head,
                id_entry,
                names,
                _F64.pack(sent_at),
                origin_entry,
                _bin_header(len(body)),
                body,
            )
        )
        return self._finish(message)

    def _finish(self, message: bytes) -> bytes:
        size = len(message) + (_SIG_BYTES if self._signers else 0)
        if size > self._max_bytes:
            raise PayloadError(f"message is {size} bytes, over the limit of {self._max_bytes}")
        if self._signers:
            return b"".join((message, _SIG_TAG, self._signers[0].digest(message)))
        return message

    def _name_bytes(self, value: object, what: str, *, empty: bool = True) -> bytes:
        if not isinstance(value, str) or not (empty or value):
            raise PayloadError(f"{what} must be a non-empty string, not {_short(value)}")
        try:
            size = len(value.encode())
        except UnicodeEncodeError as exc:
            raise PayloadError(f"{what} is not valid text: {exc}") from None
        if size > self.limits.max_name_bytes:
            raise PayloadError(f"{what} is over the limit of {self.limits.max_name_bytes} bytes")
        packed: bytes = msgpack.packb(str.__str__(value))
        return packed

    def _name_entries(self, signal: object, sender: object) -> bytes:
        entries = b"".join(
            (
                b"\xa1s",
                self._name_bytes(signal, "the signal name", empty=False),
                b"\xa1r",
                b"\xc0" if sender is None else self._name_bytes(sender, "the sender reference"),
                b"\xa1t\xcb",  # the send time follows: a float64
            )
        )
        if type(signal) is str and (sender is None or type(sender) is str):
            if len(self._names) >= NAME_CACHE_SIZE:
                self._names.clear()
            self._names[signal, sender] = entries
        return entries

    def _pack_arguments(self, kwargs: Mapping[str, Any]) -> bytes:
        if type(kwargs) is not dict:
            if not isinstance(kwargs, Mapping):
                raise PayloadError(f"arguments must be a mapping, not {type(kwargs).__qualname__}")
            kwargs = dict(kwargs)
        if not _STR.issuperset(map(type, kwargs)):
            for key in kwargs:
                if not isinstance(key, str):
                    raise PayloadError(f"argument names must be strings, not {_short(key)}")
        limits = self.limits
        if len(kwargs) > limits.max_container_len:
            raise PayloadError(
                f"{len(kwargs)} arguments, over the limit of {limits.max_container_len}"
            )
        if _LEAVES.issuperset(map(type, kwargs.values())):
            encoder = _PLAIN
            packer = _plain_packer()
        else:
            encoder = _Encoder(limits.max_depth, limits.max_container_len)
            for key, value in kwargs.items():
                try:
                    encoder.measure(value, limits.max_depth)
                except _Refused as exc:
                    raise PayloadError(f"argument {key!r} {exc}") from exc.__cause__
            packer = msgpack.Packer(default=encoder.default, strict_types=True)
        try:
            body: bytes = packer.pack(kwargs)
        except Exception as exc:
            raise _diagnose(encoder, kwargs, exc) from exc
        if len(body) > self._max_bytes:
            raise PayloadError(f"message is {len(body)} bytes, over the limit of {self._max_bytes}")
        return body

    # -- receiving ------------------------------------------------------------

    def decode(self, data: bytes) -> Envelope:
        """Decode and check one message; raise :class:`InvalidMessage` and nothing else."""
        try:
            return self._decode(data)
        except InvalidMessage:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {_short(str(exc))}"
            raise InvalidMessage(f"undecodable message ({reason})") from exc

    def _decode(self, data: bytes) -> Envelope:
        if type(data) is not bytes:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise InvalidMessage(f"expected bytes, not {type(data).__qualname__}")
            if memoryview(data).nbytes > self._max_bytes:
                raise InvalidMessage(f"message is over the limit of {self._max_bytes} bytes")
            data = bytes(data)
        if len(data) > self._max_bytes:
            raise InvalidMessage(
                f"message is {len(data)} bytes, over the limit of {self._max_bytes}"
            )
        if not data or data[0] & 0xF0 != 0x80:
            raise InvalidMessage("not a sigbroker message: expected a msgpack map")
        if self._signers:
            self._verify(data)
        fields = msgpack.unpackb(data, **self._envelope_limits)
        message_id, signal, sender, sent_at, origin_, body = _read_fields(fields)
        if self._signers and fields.get("h") != data[-32:]:
            raise InvalidMessage("the signature is not the last field")
        state = _Unpacking(self.limits)
        kwargs = state.unpack(body)
        if type(kwargs) is not dict or not _STR.issuperset(map(type, kwargs)):
            raise InvalidMessage("the arguments are not a map of names to values")
        state.depth_items(kwargs.values(), self.limits.max_depth)
        return Envelope(signal, sender, kwargs, message_id, sent_at, origin_)

    def _verify(self, data: bytes) -> None:
        if len(data) <= _SIG_BYTES or data[-_SIG_BYTES:-32] != _SIG_TAG:
            raise InvalidMessage("message is not signed, and this codec has a secret")
        signed = memoryview(data)[:-_SIG_BYTES]
        signature = data[-32:]
        for signer in self._signers:
            if hmac.compare_digest(signer.digest(signed), signature):
                return
        raise InvalidMessage("bad signature")


def _diagnose(encoder: _Encoder, kwargs: dict[str, Any], error: Exception) -> PayloadError:
    """Name the argument that made packing fail (rare: the walk catches most)."""
    for key, value in kwargs.items():
        try:
            encoder.packb(value)
        except Exception as exc:
            return PayloadError(
                f"argument {key!r} could not be encoded: a {type(value).__qualname__!r}"
                f" ({type(exc).__name__}: {exc})"
            )
    return PayloadError(f"arguments could not be encoded ({type(error).__name__}: {error})")


_UNSIGNED: Final = Codec()


def encode(
    envelope: Envelope,
    *,
    secret: bytes | str | Sequence[bytes | str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Encode ``envelope`` into a message, signed when ``secret`` is given."""
    codec = _UNSIGNED if secret is None and limits is DEFAULT_LIMITS else Codec(secret, limits)
    return codec.encode(envelope)


def decode(
    data: bytes,
    *,
    secrets: bytes | str | Sequence[bytes | str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Envelope:
    """Decode a message; with ``secrets``, only a message signed with one of them."""
    codec = _UNSIGNED if secrets is None and limits is DEFAULT_LIMITS else Codec(secrets, limits)
    return codec.decode(data)
