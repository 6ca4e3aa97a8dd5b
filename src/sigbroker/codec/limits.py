"""The codec's limits, and its guards against hostile input.

:class:`Limits` bounds one message at the sender and again at the decoder.
The guards here are what keeps a decoder's time and memory bounded whatever
arrives: the allocation-free prescan that stops msgpack from preallocating
for items that are not there, the check that refuses maps and sets whose keys
were chosen to share a hash value, and the short, safe text that error
messages quote from hostile input. Part of :mod:`sigbroker.codec`, which
exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack

from ..errors import ConfigurationError, InvalidMessage

#: The default of ``Limits.max_values``: the values all arguments of one message hold together.
MAX_VALUES: Final = 4096
#: Arguments longer than this are walked by msgpack's ``skip()`` before they are unpacked.
PRESCAN_MIN_BYTES: Final = 256
#: Maps and sets above this size have their key hashes checked for flooding.
HASH_CHECK_MIN_ITEMS: Final = 16
#: Most keys of one map or set that may share a hash value with another key.
MAX_SHARED_HASHES: Final = 32
#: Characters of an exception's type name that travel (the sender cuts, the decoder checks).
MAX_REMOTE_TYPE_CHARS: Final = 512
#: Characters of an exception's message, ``str(exc)``, that travel.
MAX_REMOTE_MESSAGE_CHARS: Final = 2048
#: Characters of the ``repr()`` that travels in place of an exception's argument
#: that the codec can not encode.
MAX_REMOTE_REPR_CHARS: Final = 256

# Python hashes these with a per-process random key (PYTHONHASHSEED), so an
# attacker can not choose many of them with one hash value.
_RANDOMLY_HASHED: Final = frozenset({str, bytes})


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one message, enforced by the sender and again by the decoder.

    ``max_message_bytes`` bounds the whole message, ``max_depth`` the nesting
    of containers in each argument, ``max_container_len`` the items of any one
    list, tuple, map or set, and ``max_name_bytes`` the signal name, sender
    reference, id and origin. No string or bytes value can be longer than the
    message, so they need no limit of their own.

    ``max_values`` bounds the values of all arguments together, which is
    what the decoder's time grows with: each argument's name and value, each
    item of a list, tuple or set, each key and each value of a map, and the
    name and encoded value of a registered type count one. ``{"ids": [1, 2,
    3]}`` holds 5 values. The default keeps the worst message a decoder can be
    sent to about 10 ms of CPU time on a small VM (a flood of extension values
    is the worst case), while a payload of model instances, requests and
    forms holds a few hundred values.
    """

    max_message_bytes: int = 1024 * 1024
    max_depth: int = 32
    max_container_len: int = 100_000
    max_name_bytes: int = 1024
    max_values: int = MAX_VALUES

    def __post_init__(self) -> None:
        # msgpack's C stacks stop at 511 (packer) and 1024 (unpacker) levels, and
        # Python's recursion limit at 1000 frames: depth stays far below all three.
        for name, low, high in (
            ("max_message_bytes", 256, 2**31 - 1),
            ("max_depth", 1, 100),
            ("max_container_len", 1, 2**31 - 1),
            ("max_name_bytes", 512, 65_535),
            ("max_values", 16, 2**31 - 1),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ConfigurationError(f"Limits.{name} must be an int from {low} to {high}")


#: The limits of a codec that is given none.
DEFAULT_LIMITS: Final = Limits()


def prescan(data: bytes) -> None:
    """Walk ``data`` without building anything; raise if it is not one whole value.

    Once ``skip()`` has seen every item that a header claims, ``unpackb`` can
    not allocate for items that are not there.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=len(data))
    unpacker.feed(data)
    unpacker.skip()
    if unpacker.tell() != len(data):
        raise InvalidMessage("extra bytes after a value")


def check_hashes(keys: list[Any]) -> None:
    """Refuse keys of which too many share a hash value (hash flooding).

    Ints, tuples, UUIDs and Decimals hash predictably: many keys with one hash
    value would make building the dict or set quadratic. Distinct hash values
    are enough, because Python's probing uses every bit of the hash. Strings
    and bytes hash with a random key, so they are left out: only a repeated
    key shares their hash, and repeating a key costs nothing.
    """
    if _RANDOMLY_HASHED.issuperset(map(type, keys)):
        return
    chosen = [key for key in keys if type(key) not in _RANDOMLY_HASHED]
    shared = len(chosen) - len(set(map(hash, chosen)))
    if shared > MAX_SHARED_HASHES:
        raise InvalidMessage(f"{shared} keys share their hash with another key (hash flooding)")


def make_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """Build a decoded map, refusing keys that flood its hash table."""
    if len(pairs) > HASH_CHECK_MIN_ITEMS:
        check_hashes([pair[0] for pair in pairs])
    return dict(pairs)


def short(value: object, max_chars: int = 100) -> str:
    """A short repr, safe to put in an error message about hostile input."""
    if isinstance(value, str | bytes):
        value = value[:80]
    try:
        text = repr(value)
    except Exception:  # a huge int has no repr, and a user's __repr__ may fail
        text = f"<{type(value).__qualname__} object>"
    return cut(text, max_chars)


def cut(text: str, max_chars: int) -> str:
    """``text``, or its start and ``"..."`` in ``max_chars`` characters when it is longer."""
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` for an exception, short and safe to log."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {short(text)}"
