"""Packing the keyword arguments of a send into the ``"k"`` bytes of a message.

Two paths give the same bytes. Arguments whose values are all leaves (no
container, no registered type: the common payload of ids, names, amounts and
times) need no walk and go straight to a packer kept per thread
(:func:`pack_kwargs`). Everything else takes :func:`pack_arguments`, which
walks each argument first, so that one that can not be sent or breaks a
limit is refused with its name before anything is packed. Part of
:mod:`sigbroker.codec`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgpack

from ..errors import PayloadError, RemoteError
from ..naming import qualified_name
from .limits import (
    MAX_REMOTE_MESSAGE_CHARS,
    MAX_REMOTE_REPR_CHARS,
    MAX_REMOTE_TYPE_CHARS,
    Limits,
    cut,
    describe,
    short,
)
from .registry import BY_TYPE, classify
from .types import (
    DEFAULTS,
    EXCEPTION,
    KINDS,
    LEAF,
    LEAVES,
    MAP,
    REGISTERED,
    UNSUPPORTED,
    encode_leaf,
)

_STR: Final = frozenset({str})
# CPython 3.11 compiles a method call on an imported name to an attribute
# lookup and a call, not LOAD_METHOD: the hot ones are bound once, here. The
# tables grow in place and are never rebound.
_hook_for: Final = DEFAULTS.get
_kind_of: Final = KINDS.get
_all_leaves: Final = LEAVES.issuperset


class Refused(Exception):
    """An argument can not be sent; the text completes "argument 'name' ..."."""


def _unsupported(cls: type) -> Refused:
    return Refused(
        f"is not serializable: object of type {cls.__qualname__!r}"
        " (register it with sigbroker.codec.register_type)"
    )


class Encoder:
    """One encoding: the packer's default hook, and the walk that checks arguments.

    The walk runs before packing, so that an argument is refused with its name
    and nothing is half packed. It calls the encoders of registered types, and
    turns exceptions into :class:`RemoteError` values, and keeps the results in
    ``cache`` for the default hook, so that each is made once per value.
    """

    __slots__ = ("cache", "max_depth", "max_len", "values")

    def __init__(self, max_depth: int = 0, max_len: int = 0) -> None:
        self.cache: dict[int, tuple[Any, Any]] = {}
        self.max_depth = max_depth
        self.max_len = max_len
        #: Values found inside the arguments so far, counted as the decoder counts them.
        self.values = 0

    def default(self, value: Any) -> Any:
        """The packer's hook for every value that it does not pack itself."""
        hook = _hook_for(type(value))
        if hook is None:
            classify(type(value))
            hook = _hook_for(type(value))
            if hook is None:
                raise TypeError(f"object of type {type(value).__qualname__!r} is not serializable")
        return hook(self, value)

    def packb(self, value: Any) -> bytes:
        """Pack a value nested in another one (a tuple's items, a registered stand-in)."""
        # A packer is not re-entrant, and default() packs nested values: a fresh
        # small one costs less than 0.2 us.
        packer = msgpack.Packer(default=self.default, strict_types=True, buf_size=1024)
        packed: bytes = packer.pack(value)
        return packed

    def stand_in(self, value: Any) -> Any:
        """The stand-in of a registered value or an exception: the walk's, or a fresh one."""
        hit = self.cache.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        if isinstance(value, BaseException) and type(value) not in BY_TYPE:
            return self.remote(value, self.max_depth)[0]
        return BY_TYPE[type(value)].encode(value)

    def measure(self, value: Any, budget: int) -> int:
        """Return the depth of ``value``; raise Refused past the limits."""
        cls = type(value)
        kind = _kind_of(cls) or classify(cls)
        if kind == LEAF:
            return 0
        if kind == UNSUPPORTED:
            raise _unsupported(cls)
        if budget <= 0:
            raise Refused(f"nests deeper than the limit of {self.max_depth} levels")
        if kind == EXCEPTION:
            return 1 + self.measure_exception(value, budget - 1)
        if kind == REGISTERED:
            self.values += 2  # it travels as [name, encoded value]
            return 1 + self.measure(self.encoded(value), budget - 1)
        if len(value) > self.max_len:
            raise Refused(
                f"holds a {cls.__qualname__} of {len(value)} items,"
                f" over the limit of {self.max_len}"
            )
        if kind == MAP:
            self.values += 2 * len(value)
            keys = self.measure_items(value.keys(), budget - 1)
            return 1 + max(keys, self.measure_items(value.values(), budget - 1))
        self.values += len(value)
        return 1 + self.measure_items(value, budget - 1)

    def measure_items(self, items: Iterable[Any], budget: int) -> int:
        """The depth of the deepest of ``items``."""
        if _all_leaves(map(type, items)):
            return 0
        return max(self.measure(item, budget) for item in items)

    def measure_exception(self, value: BaseException, budget: int) -> int:
        """The depth of the args of an exception as it travels; keeps its RemoteError."""
        hit = self.cache.get(id(value))
        if hit is not None and hit[0] is value:  # the same exception, met again
            counted = self.values
            try:
                self.values += 3 + len(hit[1].args)  # it travels as [type name, args, message]
                return self.measure_items(hit[1].args, budget)
            except Refused:  # met deeper: made again to fit, and packed so everywhere
                self.values = counted
        remote, depth = self.remote(value, budget)
        self.cache[id(value)] = (value, remote)
        return depth

    def remote(self, value: BaseException, budget: int) -> tuple[RemoteError, int]:
        """The RemoteError that ``value`` travels as, and the depth of its args.

        Each argument that the walk accepts within ``budget`` is kept; any
        other travels as its ``repr()``, cut to a bound. Counts the values
        as the decoder will.
        """
        if isinstance(value, RemoteError):  # forwarded: it travels as itself
            type_name, message = value.type_name, value.message
        else:
            type_name, message = qualified_name(type(value)), _text(value)
        args = value.args if type(value.args) is tuple else ()
        if len(args) > self.max_len:
            raise Refused(
                f"holds an exception of {len(args)} args, over the limit of {self.max_len}"
            )
        self.values += 3 + len(args)
        kept = []
        depth = 0
        for arg in args:
            counted = self.values
            try:
                depth = max(depth, self.measure(arg, budget))
            except Refused:
                self.values = counted
                arg = short(arg, MAX_REMOTE_REPR_CHARS)
            else:
                if _kind_of(type(arg)) == EXCEPTION:
                    # Its RemoteError, just made: an exception among its own args
                    # (or deeper) then packs as the RemoteErrors of each level.
                    arg = self.cache[id(arg)][1]
            kept.append(arg)
        remote = RemoteError(
            cut(type_name, MAX_REMOTE_TYPE_CHARS), kept, cut(message, MAX_REMOTE_MESSAGE_CHARS)
        )
        self.cache[id(remote)] = (remote, remote)
        return remote, depth

    def encoded(self, value: Any) -> Any:
        """Call the registered encoder of ``value`` once, and keep its stand-in."""
        hit = self.cache.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        registration = BY_TYPE[type(value)]
        try:
            encoded = registration.encode(value)
        except PayloadError as exc:  # refused in the encoder's own words
            raise Refused(str(exc)) from exc
        except Exception as exc:
            raise Refused(
                f"could not be encoded: the encoder registered for"
                f" {registration.cls.__qualname__!r} raised {describe(exc)}"
            ) from exc
        self.cache[id(value)] = (value, encoded)
        return encoded


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a user's __str__ may fail: the message is not worth a refused send
        return "<exception str() failed>"


_PLAIN: Final = Encoder()  # holds nothing: for arguments that are all leaves
_local = threading.local()


def _leaf_packer() -> Any:
    try:
        return _local.packer
    except AttributeError:  # a Packer is not thread-safe: one per thread
        _local.packer = msgpack.Packer(default=encode_leaf, strict_types=True)
        return _local.packer


def pack_kwargs(kwargs: Mapping[str, Any], limits: Limits) -> bytes:
    """Check and pack the arguments of a send: :func:`pack_arguments`, faster.

    Arguments with str names whose values are all in ``LEAVES`` need no walk:
    this thread's packer takes them as they are. Anything else, and anything
    that packer refuses, takes :func:`pack_arguments`, which gives the same
    bytes or refuses the argument by name.
    """
    if (
        type(kwargs) is dict
        and len(kwargs) <= limits.max_container_len
        and 2 * len(kwargs) <= limits.max_values
    ):
        leaves = LEAVES
        for name, value in kwargs.items():  # a loop beats issuperset(map(type, ...)) here
            if type(name) is not str or type(value) not in leaves:
                break
        else:
            try:
                packer = _local.packer
            except AttributeError:
                packer = _leaf_packer()
            try:
                packed: bytes = packer.pack(kwargs)
                return packed
            except Exception:
                pass  # the general path refuses it, naming the argument
    return pack_arguments(kwargs, limits)


def pack_arguments(kwargs: Mapping[str, Any], limits: Limits) -> bytes:
    """Check and pack any arguments; raise :class:`PayloadError` naming the argument."""
    if type(kwargs) is not dict:
        if not isinstance(kwargs, Mapping):
            raise PayloadError(f"arguments must be a mapping, not {type(kwargs).__qualname__}")
        kwargs = dict(kwargs)
    exact_names = _STR.issuperset(map(type, kwargs))
    if not exact_names:
        for key in kwargs:
            if not isinstance(key, str):
                raise PayloadError(f"argument names must be strings, not {short(key)}")
    if len(kwargs) > limits.max_container_len:
        raise PayloadError(f"{len(kwargs)} arguments, over the limit of {limits.max_container_len}")
    if 2 * len(kwargs) > limits.max_values:
        raise PayloadError(f"{len(kwargs)} arguments hold {_over_values(limits)}")
    if exact_names and _all_leaves(map(type, kwargs.values())):
        encoder = _PLAIN  # the leaf packer knows every type here, and no name needs a hook
        packer = _leaf_packer()
    else:
        encoder = _measured(kwargs, limits)
        packer = msgpack.Packer(default=encoder.default, strict_types=True)
    try:
        body: bytes = packer.pack(kwargs)
    except Exception as exc:
        raise _diagnose(encoder, kwargs, exc) from exc
    return body


def _measured(kwargs: dict[str, Any], limits: Limits) -> Encoder:
    """An encoder that has walked every argument; PayloadError for the first one refused."""
    encoder = Encoder(limits.max_depth, limits.max_container_len)
    encoder.values = 2 * len(kwargs)
    for key, value in kwargs.items():
        try:
            encoder.measure(value, limits.max_depth)
        except Refused as exc:
            raise PayloadError(f"argument {key!r} {exc}") from exc.__cause__
        if encoder.values > limits.max_values:
            raise PayloadError(f"argument {key!r} brings the arguments to {_over_values(limits)}")
    return encoder


def _over_values(limits: Limits) -> str:
    return (
        f"more than {limits.max_values} values, the limit of one message"
        " (Limits.max_values: every item, key and value counts)"
    )


def _diagnose(encoder: Encoder, kwargs: dict[str, Any], error: Exception) -> PayloadError:
    """Name the argument that made packing fail (rare: the walk catches most)."""
    for key, value in kwargs.items():
        try:
            encoder.packb(value)
        except Exception as exc:
            return PayloadError(
                f"argument {key!r} could not be encoded: a {type(value).__qualname__!r}"
                f" ({describe(exc)})"
            )
    return PayloadError(f"arguments could not be encoded ({describe(error)})")
