"""The envelope map on the wire: its fields, their types, and the checks on them.

The layout of version 1 is in the docstring of :mod:`sigbroker.codec`, which
publishes :data:`VERSION` as ``FORMAT_VERSION``. The decoder reads the seven
fields with one lookup and checks their types inline; only a map that fails
is examined again, to say what is wrong with it.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Final

from ._codec_limits import short
from .errors import InvalidMessage

#: The version of the wire format whose fields this module reads.
VERSION: Final = 1

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
_FIELDS: Final = operator.itemgetter("v", "i", "s", "r", "t", "o", "k")
#: The header of a bin of each size that fits in a bin8, made once.
BIN8: Final = [b"\xc4" + bytes([size]) for size in range(0x100)]


def read_fields(fields: Any) -> tuple[str, str, str | None, float, str, bytes]:
    """Check the envelope map; return id, signal, sender, sent_at, origin, arguments."""
    try:
        version, message_id, signal, sender, sent_at, origin_, body = _FIELDS(fields)
    except (KeyError, TypeError):
        raise field_error(fields) from None
    if (
        version == VERSION
        and type(version) is int
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
        if len(fields) == 7:
            return message_id, signal, sender, float(sent_at), origin_, body
        signature = fields.get("h")
        if len(fields) == 8 and type(signature) is bytes and len(signature) == 32:
            return message_id, signal, sender, float(sent_at), origin_, body
    raise field_error(fields)


def field_error(fields: Any) -> InvalidMessage:
    """Say what is wrong with an envelope map that failed the checks."""
    if type(fields) is not dict:
        return InvalidMessage("not a sigbroker message: expected a map")
    version = fields.get("v")
    if type(version) is not int or version != VERSION:
        return InvalidMessage(f"unsupported format version {short(version)}")
    missing = _REQUIRED - fields.keys()
    if missing:
        return InvalidMessage(f"missing fields: {', '.join(sorted(missing))}")
    for key, value in fields.items():
        types = _FIELD_TYPES.get(key)
        if types is None:
            return InvalidMessage(f"unknown field {short(key)}")
        if type(value) not in types:
            return InvalidMessage(f"field {key!r} has the wrong type {type(value).__qualname__}")
    if "h" in fields and len(fields["h"]) != 32:
        return InvalidMessage("the signature is not 32 bytes")
    return InvalidMessage("empty id or signal name, or a send time that is not finite")


def bin_header(size: int) -> bytes:
    """The msgpack header of a bin of ``size`` bytes."""
    if size < 0x100:
        return BIN8[size]
    if size < 0x10000:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")
