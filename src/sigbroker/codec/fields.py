"""The envelope map on the wire: its fields, their types, and the checks on them.

The layout is in the docstring of :mod:`sigbroker.codec`, which publishes
:data:`FORMAT_VERSION`. The decoder reads the current version's fields with
one lookup and checks their types inline; a map of the previous version (a
sender not yet upgraded) is read as the current one with sequence 0, and
only a map that fails is examined again, to say what is wrong with it. The
encoder takes the signal name, sender reference, id and origin entries from
here, checked and packed (:func:`packed_name`).
"""

from __future__ import annotations

import math
import operator
from typing import Any, Final

import msgpack

from ..errors import InvalidMessage, PayloadError
from .limits import short

#: The version of the wire format that the encoder writes.
FORMAT_VERSION: Final = 2
#: The previous version, still read so that a rolling upgrade loses nothing.
PREVIOUS_VERSION: Final = 1
#: The largest sequence number: an unsigned 64-bit integer.
MAX_SEQUENCE: Final = 2**64 - 1

_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "v": (int,),
    "i": (str,),
    "s": (str,),
    "r": (str, type(None)),
    "t": (float, int),
    "o": (str,),
    "n": (int,),
    "k": (bytes,),
    "h": (bytes,),
}
_REQUIRED: Final = {
    FORMAT_VERSION: frozenset(_FIELD_TYPES) - {"h"},
    PREVIOUS_VERSION: frozenset(_FIELD_TYPES) - {"h", "n"},
}
_FIELDS: Final = operator.itemgetter("v", "i", "s", "r", "t", "o", "n", "k")
#: The key and uint64 marker of the sequence number, which ends every message's fixed part.
SEQUENCE_TAG: Final = b"\xa1n\xcf"
#: The header of a bin of each size that fits in a bin8, made once.
BIN8: Final = [b"\xc4" + bytes([size]) for size in range(0x100)]

#: What :func:`read_fields` returns: id, signal, sender, sent_at, origin, sequence, arguments.
RawFields = tuple[str, str, str | None, float, str, int, bytes]


def read_fields(fields: Any) -> RawFields:
    """Check the envelope map; return id, signal, sender, sent_at, origin, sequence, arguments.

    A message of the previous version has no sequence number: it reads as 0.
    """
    try:
        version, message_id, signal, sender, sent_at, origin_, seq, body = _FIELDS(fields)
    except (KeyError, TypeError):
        return _read_previous(fields)
    if (
        version == FORMAT_VERSION
        and type(version) is int
        and type(message_id) is str
        and message_id
        and type(signal) is str
        and signal
        and (sender is None or type(sender) is str)
        and (type(sent_at) is float or type(sent_at) is int)
        and math.isfinite(sent_at)
        and type(origin_) is str
        and type(seq) is int
        and seq >= 0  # msgpack has no int above MAX_SEQUENCE
        and type(body) is bytes
        and (len(fields) == 8 or _signed(fields))
    ):
        return message_id, signal, sender, float(sent_at), origin_, seq, body
    raise field_error(fields)


def _read_previous(fields: Any) -> RawFields:
    # A map of the previous version is the current one without a sequence:
    # read it as that, with sequence 0, and explain a failure in its own terms.
    previous = (
        type(fields) is dict
        and type(fields.get("v")) is int
        and fields["v"] == PREVIOUS_VERSION
        and "n" not in fields
    )
    if previous:
        try:
            return read_fields({**fields, "v": FORMAT_VERSION, "n": 0})
        except InvalidMessage:
            pass
    raise field_error(fields)


def _signed(fields: dict[str, Any]) -> bool:
    # The version's 8 fields and a 32-byte signature, nothing else.
    signature = fields.get("h")
    return len(fields) == 9 and type(signature) is bytes and len(signature) == 32


def field_error(fields: Any) -> InvalidMessage:
    """Say what is wrong with an envelope map that failed the checks."""
    if type(fields) is not dict:
        return InvalidMessage("not a sigbroker message: expected a map")
    version = fields.get("v")
    if type(version) is not int or version not in _REQUIRED:
        return InvalidMessage(f"unsupported format version {short(version)}")
    missing = _REQUIRED[version] - fields.keys()
    if missing:
        return InvalidMessage(f"missing fields: {', '.join(sorted(missing))}")
    for key, value in fields.items():
        types = _FIELD_TYPES.get(key)
        if types is None or (key not in _REQUIRED[version] and key != "h"):
            return InvalidMessage(f"unknown field {short(key)}")
        if type(value) not in types:
            return InvalidMessage(f"field {key!r} has the wrong type {type(value).__qualname__}")
    if "h" in fields and len(fields["h"]) != 32:
        return InvalidMessage("the signature is not 32 bytes")
    if "n" in fields and not 0 <= fields["n"] <= MAX_SEQUENCE:
        return InvalidMessage("the sequence number is out of range")
    return InvalidMessage("empty id or signal name, or a send time that is not finite")


def bin_header(size: int) -> bytes:
    """The msgpack header of a bin of ``size`` bytes."""
    if size < 0x100:
        return BIN8[size]
    if size < 0x10000:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def packed_name(value: object, what: str, max_bytes: int, *, empty: bool = True) -> bytes:
    """``value`` packed as a msgpack str; :class:`PayloadError` unless it is valid
    text of at most ``max_bytes`` (and, unless ``empty``, not empty)."""
    if not isinstance(value, str) or not (empty or value):
        raise PayloadError(f"{what} must be a non-empty string, not {short(value)}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{what} is not valid text: {exc}") from None
    if size > max_bytes:
        raise PayloadError(f"{what} is over the limit of {max_bytes} bytes")
    packed: bytes = msgpack.packb(str.__str__(value))
    return packed


def name_entries(signal: object, sender: object, max_bytes: int) -> bytes:
    """The signal name and sender entries, then the key and float64 marker of the send time."""
    return b"".join(
        (
            b"\xa1s",
            packed_name(signal, "the signal name", max_bytes, empty=False),
            b"\xa1r",
            b"\xc0" if sender is None else packed_name(sender, "the sender reference", max_bytes),
            b"\xa1t\xcb",
        )
    )
