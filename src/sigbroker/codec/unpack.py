"""Unpacking the ``"k"`` bytes of a message back into keyword arguments.

Two paths give the same arguments and the same errors.
:func:`unpack_arguments` first tries the common case with no state: maps
with str or bytes keys only (``strict_map_key``, and those keys hash with a
per-process random key, so no map can be flooded), extension values that are
scalars, and short tuples and sets of them. Anything else makes msgpack
raise, and the careful path (:func:`unpack_carefully`) starts over: it checks
the hashes of other keys, bounds how deep tuples, sets and registered values
nest while they are unpacked, and measures the depth of registered values
and exceptions.
Either way the bytes are prescanned once, and the depth of every argument is
checked.

The time a decode takes grows with the values unpacked, so their number is
bounded (``Limits.max_values``). Every value takes at least one byte: a body
no longer than the limit can not break it and takes the stateless path. A
longer one takes the careful path, which counts the items of each list and
map as msgpack builds them, and the extension values as it meets them, and
stops as soon as the count passes the limit. Part of :mod:`sigbroker.codec`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgpack

from ..errors import InvalidMessage, RemoteError
from .limits import (
    HASH_CHECK_MIN_ITEMS,
    MAX_REMOTE_MESSAGE_CHARS,
    MAX_REMOTE_TYPE_CHARS,
    PRESCAN_MIN_BYTES,
    Limits,
    check_hashes,
    make_dict,
    prescan,
    short,
)
from .registry import BY_NAME
from .types import (
    DECODED_CONTAINERS,
    DECODED_LEAVES,
    EXT_EXCEPTION,
    EXT_FROZENSET,
    EXT_REGISTERED,
    EXT_SET,
    EXT_TUPLE,
    SCALAR_DECODERS,
    decode_scalar,
    ext_hook,
)

_STR: Final = frozenset({str})
# CPython 3.11 compiles a method call on an imported name to an attribute
# lookup and a call, not LOAD_METHOD: the hot ones are bound once, here.
_registration_named: Final = BY_NAME.get
_all_decoded_leaves: Final = DECODED_LEAVES.issuperset
_unpackb: Final = msgpack.unpackb


class _NeedsCare(LookupError):
    """A value that the stateless path leaves to the careful one."""


def _flat_items(data: bytes) -> list[Any]:
    # The items of a tuple or set in the stateless path: no prescan is needed
    # below PRESCAN_MIN_BYTES, and a nested tuple, set or registered value
    # raises LookupError from decode_scalar, for the careful path to count it.
    if len(data) > PRESCAN_MIN_BYTES:
        raise _NeedsCare
    items = _unpackb(data, ext_hook=decode_scalar)
    if type(items) is not list:
        raise InvalidMessage("an extension payload is not an array")
    return items


def _flat_set(data: bytes) -> set[Any]:
    items = _flat_items(data)
    if len(items) > HASH_CHECK_MIN_ITEMS:
        check_hashes(items)
    return set(items)


def _flat_frozenset(data: bytes) -> frozenset[Any]:
    items = _flat_items(data)
    if len(items) > HASH_CHECK_MIN_ITEMS:
        check_hashes(items)
    return frozenset(items)


# Short tuples and sets are no deeper than one level and hold no more items
# than bytes: with at least PRESCAN_MIN_BYTES allowed per container, the
# careful path would apply no limit that this one skips.
_decode_flat: Final = ext_hook(
    {
        **SCALAR_DECODERS,
        EXT_TUPLE: lambda data: tuple(_flat_items(data)),
        EXT_SET: _flat_set,
        EXT_FROZENSET: _flat_frozenset,
    }
)


def unpack_arguments(body: bytes, limits: Limits) -> dict[str, Any]:
    """Unpack and check the arguments of a message whose signature was verified.

    The stateless path first; the careful one when msgpack raises on its way.
    """
    size = len(body)
    if size > limits.max_values:  # it could hold too many values: count them
        return unpack_carefully(body, limits)
    if size > PRESCAN_MIN_BYTES:
        prescan(body)
    max_len = limits.max_container_len
    hook = _decode_flat if max_len >= PRESCAN_MIN_BYTES else decode_scalar
    try:
        if size <= max_len:  # msgpack's own limits, from the size, are the tighter ones
            kwargs = _unpackb(body, ext_hook=hook)
        else:
            kwargs = _unpackb(body, ext_hook=hook, max_array_len=max_len, max_map_len=max_len)
    except (LookupError, ValueError):
        # LookupError: an extension value that the stateless path leaves to the
        # careful one; ValueError: a key that is not str or bytes, or bad input.
        return _Unpacking(limits).arguments(body)
    if type(kwargs) is not dict:
        raise _not_arguments()
    nested = False
    leaves = DECODED_LEAVES
    for name, value in kwargs.items():  # a loop beats issuperset(map(type, ...)) here
        if type(name) is not str:
            raise _not_arguments()
        if type(value) not in leaves:
            nested = True
    if nested:
        _Unpacking(limits).depth_items(kwargs.values(), limits.max_depth)
    return kwargs


def _not_arguments() -> InvalidMessage:
    return InvalidMessage("the arguments are not a map of names to values")


def unpack_carefully(body: bytes, limits: Limits) -> dict[str, Any]:
    """What :func:`unpack_arguments` returns or raises, by the careful path alone."""
    if len(body) > PRESCAN_MIN_BYTES:
        prescan(body)
    return _Unpacking(limits).arguments(body)


class _Unpacking:
    """The state of one careful decode: how deep the extension values nest, the
    depth of each registered value and exception (``memo``, by id, holding the
    value), and how many values and extension values were unpacked so far."""

    __slots__ = ("extensions", "level", "max_depth", "max_len", "max_values", "memo", "values")

    def __init__(self, limits: Limits) -> None:
        self.level = 0
        self.max_depth = limits.max_depth
        # msgpack builds a whole list or map before its hook can count it: no
        # single one may hold more items than the message may hold values.
        self.max_len = min(limits.max_container_len, limits.max_values)
        self.max_values = limits.max_values
        self.memo: dict[int, tuple[Any, int]] = {}
        self.values = 0
        self.extensions = 0

    def count_items(self, items: list[Any]) -> list[Any]:
        """msgpack's hook for each array: count its items."""
        self.values += len(items)
        if self.values > self.max_values:
            raise self.too_many()
        return items

    def count_pairs(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        """msgpack's hook for each map: count its keys and values, and build it."""
        self.values += 2 * len(pairs)
        if self.values > self.max_values:
            raise self.too_many()
        return make_dict(pairs)

    def too_many(self) -> InvalidMessage:
        """The error for arguments that hold more values than the limit."""
        return InvalidMessage(f"the arguments hold more than {self.max_values} values")

    def arguments(self, body: bytes) -> dict[str, Any]:
        """Unpack prescanned arguments and check them."""
        kwargs = self.unpackb(body)
        if type(kwargs) is not dict or not _STR.issuperset(map(type, kwargs)):
            raise _not_arguments()
        self.depth_items(kwargs.values(), self.max_depth)
        return kwargs

    def unpack(self, data: bytes) -> Any:
        """Unpack an extension payload, prescanning it first when it is long."""
        if len(data) > PRESCAN_MIN_BYTES:
            prescan(data)
        return self.unpackb(data)

    def unpackb(self, data: bytes) -> Any:
        """Unpack prescanned bytes, with the hooks that check what they hold."""
        if len(data) <= self.max_len:
            return _unpackb(
                data,
                ext_hook=self.ext_hook,
                list_hook=self.count_items,
                object_pairs_hook=self.count_pairs,
                strict_map_key=False,
            )
        return _unpackb(
            data,
            ext_hook=self.ext_hook,
            list_hook=self.count_items,
            object_pairs_hook=self.count_pairs,
            strict_map_key=False,
            max_array_len=self.max_len,
            max_map_len=self.max_len,
        )

    def ext_hook(self, code: int, data: bytes) -> Any:
        """Decode one extension value of any type."""
        # Each is an item of some list or map too, and counted there once it is
        # built: this count stops a flood of them before then.
        self.extensions += 1
        if self.extensions > self.max_values:
            raise self.too_many()
        if code in SCALAR_DECODERS:
            return decode_scalar(code, data)
        if code == EXT_TUPLE:
            return tuple(self.items(data))
        if code in (EXT_SET, EXT_FROZENSET):
            items = self.items(data)
            if len(items) > HASH_CHECK_MIN_ITEMS:
                check_hashes(items)
            return set(items) if code == EXT_SET else frozenset(items)
        if code == EXT_REGISTERED:
            return self.registered(data)
        if code == EXT_EXCEPTION:
            return self.exception(data)
        raise InvalidMessage(f"unknown extension type {code}")

    def items(self, data: bytes) -> list[Any]:
        """The items of a tuple, set or registered payload, one level deeper."""
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
        """Rebuild a registered value with its local decoder, and remember its depth."""
        items = self.items(data)
        if len(items) != 2 or type(items[0]) is not str:
            raise InvalidMessage("a registered-type payload is not [name, value]")
        registration = _registration_named(items[0])
        if registration is None:
            raise InvalidMessage(f"unknown registered type {short(items[0])}")
        depth = 1 + self.depth(items[1], self.max_depth - 1)
        value = registration.decode(items[1])
        hit = self.memo.get(id(value))
        if hit is not None and hit[0] is value:  # a decoder that hands out shared values
            depth = max(depth, hit[1])
        self.memo[id(value)] = (value, depth)
        return value

    def exception(self, data: bytes) -> RemoteError:
        """Build the RemoteError of an exception payload, and remember its depth.

        The type name is only ever a string here: nothing is imported or looked up.
        """
        items = self.items(data)
        if (
            len(items) != 3
            or type(items[0]) is not str
            or type(items[1]) is not list
            or type(items[2]) is not str
        ):
            raise InvalidMessage("an exception payload is not [type name, args, message]")
        type_name, args, message = items
        if not 0 < len(type_name) <= MAX_REMOTE_TYPE_CHARS:
            raise InvalidMessage(
                f"an exception's type name is empty or over {MAX_REMOTE_TYPE_CHARS} characters"
            )
        if len(message) > MAX_REMOTE_MESSAGE_CHARS:
            raise InvalidMessage(
                f"an exception's message is over {MAX_REMOTE_MESSAGE_CHARS} characters"
            )
        depth = 1 + self.depth_items(args, self.max_depth - 1)
        value = RemoteError(type_name, args, message)
        self.memo[id(value)] = (value, depth)
        return value

    def depth(self, value: Any, budget: int) -> int:
        """Return the depth of a decoded value; raise past the limit or on a stray type."""
        cls = type(value)
        if cls in DECODED_LEAVES:
            return 0
        if cls in DECODED_CONTAINERS:
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
        """The error for values that nest past the limit."""
        return InvalidMessage(f"values nest deeper than the limit of {self.max_depth} levels")

    def depth_items(self, items: Iterable[Any], budget: int) -> int:
        """The depth of the deepest of ``items``."""
        if _all_decoded_leaves(map(type, items)):
            return 0
        return max(self.depth(item, budget) for item in items)
