"""The registry of users' types, and the classification of every other type.

:func:`register_type` lets instances of a class (and, with
``subclasses=True``, of its subclasses) travel under a name; the decoder
finds them again by that name in :data:`BY_NAME` only, never by importing
anything. :func:`classify` files a type seen for the first time (a subclass
of a registered base or of a built-in type, or an unsupported one) into the
dispatch tables of :mod:`sigbroker.codec.types`. Part of :mod:`sigbroker.codec`.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import msgpack

from ..errors import ConfigurationError
from ..naming import qualified_name
from .types import (
    BASES,
    BUILTIN,
    DEFAULTS,
    EXT_REGISTERED,
    KINDS,
    LEAF,
    LEAVES,
    REGISTERED,
    UNSUPPORTED,
    Nesting,
)

_new_tuple = tuple.__new__  # ExtType without its checks in Python: ours are known good


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered type: its wire name, its functions, and its payload's prefix."""

    cls: type
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    prefix: bytes  # array header and packed name, the start of every payload
    subclasses: bool = False  # instances of subclasses of cls travel under it too

    def default(self, enc: Nesting, value: Any) -> msgpack.ExtType:
        """The packer's default hook for this type."""
        packed = self.prefix + enc.packb(enc.stand_in(value))
        return _new_tuple(msgpack.ExtType, (EXT_REGISTERED, packed))


_REGISTRY_LOCK = threading.Lock()
BY_TYPE: dict[type, Registration] = {}
BY_NAME: dict[str, Registration] = {}
#: The registrations made with ``subclasses=True``, by their class.
BY_BASE: dict[type, Registration] = {}


def classify(cls: type) -> int:
    """Find and remember what kind of value an instance of ``cls`` is."""
    with _REGISTRY_LOCK:
        if cls in BY_TYPE:
            return REGISTERED
        inherited = _registered_base(cls)
        if inherited is not None:  # the nearest registered base in the MRO
            BY_TYPE[cls] = inherited
            KINDS[cls] = REGISTERED
            DEFAULTS[cls] = inherited.default
            return REGISTERED
        kind: int = UNSUPPORTED
        if not issubclass(cls, Enum):
            for base, base_kind, hook in BASES:
                if issubclass(cls, base):
                    kind = base_kind
                    DEFAULTS[cls] = hook
                    break
        if kind == LEAF:
            LEAVES.add(cls)
        KINDS[cls] = kind
        return kind


def _registered_base(cls: type) -> Registration | None:
    if not BY_BASE:
        return None
    for base in cls.__mro__[1:]:
        registration = BY_BASE.get(base)
        if registration is not None:
            return registration
    return None


def register_type(
    cls: type,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
    *,
    name: str | None = None,
    subclasses: bool = False,
) -> None:
    """Let instances of ``cls`` travel in signal arguments.

    ``encode(value)`` returns an encodable stand-in (itself made of supported
    types) and ``decode(stand_in)`` rebuilds the value in the worker; for an
    Enum they default to ``member.value`` and ``cls(value)``. The class
    travels under ``name`` (default ``"module.QualName"``), which the worker
    must have registered too: a message naming an unknown type is rejected.
    ``decode`` gets what arrived on the wire and should check it; whatever it
    raises rejects the message as :class:`InvalidMessage`. ``encode`` may
    raise :class:`PayloadError` to refuse a value in its own words, which
    follow ``"argument 'name' "`` in the error (``"is an unsaved shop.Order"``).
    Only instances of exactly ``cls`` match, unless ``subclasses`` is true:
    then instances of its subclasses travel under the same name and
    functions too (every Django model under one name, for instance), unless
    a subclass or a nearer base is registered itself.
    Registering a class again replaces its functions (and name). A name that
    belongs to another class raises :class:`ConfigurationError`, unless that
    class has the same module and qualname (a reloaded module): the new class
    then takes the name over.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type() needs a class, not {type(cls).__qualname__!r}")
    if cls in BUILTIN:
        raise ConfigurationError(f"{cls.__qualname__} is built in and can not be registered")
    if issubclass(cls, Enum):
        encode = encode or operator.attrgetter("value")
        decode = decode or cls
    if not callable(encode) or not callable(decode):
        raise TypeError(f"register_type({cls.__qualname__}) needs encode and decode functions")
    wire_name = qualified_name(cls) if name is None else name
    if not isinstance(wire_name, str) or not 0 < len(wire_name.encode()) <= 255:
        raise ConfigurationError(f"a type name must be a string of 1 to 255 bytes: {wire_name!r}")
    prefix = b"\x92" + msgpack.packb(wire_name)
    registration = Registration(cls, wire_name, encode, decode, prefix, subclasses)
    with _REGISTRY_LOCK:
        holder = BY_NAME.get(wire_name)
        if holder is not None and holder.cls is not cls:
            if qualified_name(holder.cls) != qualified_name(cls):
                raise ConfigurationError(
                    f"the type name {wire_name!r} is already registered for {holder.cls!r}"
                )
            _forget(holder.cls)  # the same class, defined again: a reloaded module
        previous = BY_TYPE.get(cls)
        if previous is not None and previous.name != wire_name:
            del BY_NAME[previous.name]
        BY_TYPE[cls] = BY_NAME[wire_name] = registration
        KINDS[cls] = REGISTERED
        DEFAULTS[cls] = registration.default
        LEAVES.discard(cls)
        BY_BASE.pop(cls, None)
        if subclasses:
            BY_BASE[cls] = registration
        _reclassify_subclasses(cls)


def _reclassify_subclasses(cls: type) -> None:
    """Make the subclasses of ``cls`` filed so far be classified again, on next use.

    The caller holds the registry lock. A subclass registered itself stays.
    """
    for seen in [t for t in KINDS if t is not cls and t not in BUILTIN and issubclass(t, cls)]:
        own = BY_TYPE.get(seen)
        if own is not None and own.cls is seen:
            continue
        BY_TYPE.pop(seen, None)
        KINDS.pop(seen, None)
        DEFAULTS.pop(seen, None)
        LEAVES.discard(seen)


def _forget(cls: type) -> None:
    """Drop a registered class from the tables (the caller holds the registry lock)."""
    registration = BY_TYPE.pop(cls)
    del BY_NAME[registration.name]
    KINDS.pop(cls, None)
    DEFAULTS.pop(cls, None)
    BY_BASE.pop(cls, None)
    _reclassify_subclasses(cls)
