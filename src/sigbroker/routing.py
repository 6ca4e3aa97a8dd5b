"""Which local receivers a send or a message from the wire reaches: sender matching.

A send in this process reaches the receivers connected for any sender and
those connected for that very sender object, as in ``django.dispatch``
(:func:`live_receivers`, with Django's optional cache per sender).

A message from the wire names its sender by reference (:func:`~sigbroker.naming.sender_reference`).
Receivers connected for any sender always match it; those connected with a
class or a string match when its reference equals the message's; those
connected with any other object (an instance) never do. Each connection
records, once at connect time, what this matching needs (:func:`connection`);
the per-signal :class:`RemotePlan` maps every reference to its receivers, so
that the worker's per-message lookup is one dict access.

The functions that take the signal as first argument are bound as methods of
:class:`~sigbroker.signal.Signal`.
This module does not import :mod:`sigbroker.signal`: it reads a signal through
the :class:`Routable` protocol.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Hashable, Iterable, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from .naming import qualified_name, sender_reference

__all__ = [
    "Connection",
    "Registration",
    "RemotePlan",
    "Routable",
    "connection",
    "describe_receivers",
    "has_remote_receivers",
    "live_receivers",
    "lookup_key",
    "nothing_to_send",
    "remote_receivers",
    "resolve",
    "split_live",
]

Receiver = Callable[..., Any]
#: A receiver as stored: the callable itself (weak=False) or a weak reference to it.
ReceiverSlot = Receiver | weakref.ReferenceType[Any]
#: ``(receiver or weak reference, is_async)``: what a send needs of a registration.
Target = tuple[ReceiverSlot, bool]

# Marks a sender that the cache knows has no receivers (Django's NO_RECEIVERS).
_NO_RECEIVERS: Any = object()


def _make_id(target: object) -> Hashable:
    # A bound method is a new object on every attribute access: identify it by its parts.
    if hasattr(target, "__func__"):
        return (id(target.__self__), id(target.__func__))  # type: ignore[attr-defined]
    return id(target)


_NONE_ID = _make_id(None)


def lookup_key(
    receiver: object, sender: object, dispatch_uid: Hashable | None
) -> tuple[Hashable, Hashable]:
    """Django's lookup key of a connection: ``(receiver or dispatch_uid, sender)`` ids."""
    return (dispatch_uid if dispatch_uid else _make_id(receiver), _make_id(sender))


class Registration(NamedTuple):
    """One entry of ``Signal.receivers``: Django's ``(lookup_key, receiver, is_async)``."""

    key: tuple[Hashable, Hashable]
    receiver: ReceiverSlot
    is_async: bool


class Connection(Registration):
    # The same 3-tuple, plus what routing needs, computed once at connect time.
    remote: bool  # can a message from the wire match it? (sender is None, a class or a str)
    wire_ref: str | None  # sender_reference(sender) when remote
    sender_label: str | None  # for listings: wire_ref, or the type of a local-only sender
    sender_class: weakref.ReferenceType[type] | None
    finalizer: weakref.finalize[Any, Any] | None  # set by the signal for weak receivers


def connection(
    key: tuple[Hashable, Hashable], slot: ReceiverSlot, is_async: bool, sender: object
) -> Connection:
    """The registration of a receiver connected for ``sender``, with its routing facts."""
    entry = Connection(key, slot, is_async)
    entry.remote = sender is None or isinstance(sender, type | str)
    entry.wire_ref = sender_reference(sender) if entry.remote else None
    entry.sender_class = weakref.ref(sender) if isinstance(sender, type) else None
    entry.sender_label = entry.wire_ref if entry.remote else f"<{qualified_name(type(sender))}>"
    entry.finalizer = None
    return entry


def resolve(slot: ReceiverSlot) -> Receiver | None:
    """The receiver in ``slot``, or None if it was weakly held and has died."""
    if isinstance(slot, weakref.ReferenceType):
        live: Receiver | None = slot()
        return live
    return slot


def split_live(targets: Iterable[Target]) -> tuple[list[Receiver], list[Receiver]]:
    """The live receivers among ``targets``, as ``(sync, async)`` lists in order."""
    sync_receivers: list[Receiver] = []
    async_receivers: list[Receiver] = []
    for slot, is_async in targets:
        live = resolve(slot)
        if live is not None:
            (async_receivers if is_async else sync_receivers).append(live)
    return sync_receivers, async_receivers


@dataclass(frozen=True, slots=True)
class RemotePlan:
    """Which receivers each sender reference reaches; rebuilt after every change."""

    source: list[Registration]  # the receivers list it was computed from
    wildcard: tuple[Target, ...]
    by_ref: dict[str, tuple[tuple[weakref.ReferenceType[type], ...], tuple[Target, ...]]]


class Routable(Protocol):
    """What routing reads of a signal; :class:`~sigbroker.signal.Signal` implements it."""

    _remote_plan: RemotePlan | None

    @property
    def receivers(self) -> list[Registration]:
        """The registrations, in connect order."""

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """Serializes every change to ``receivers``."""

    @property
    def use_caching(self) -> bool:
        """Whether the receivers of a send are cached per sender (Django's option)."""

    @property
    def sender_receivers_cache(self) -> MutableMapping[Any, Any]:
        """Per sender, the targets it reaches (or ``_NO_RECEIVERS``)."""

    @property
    def _dead_receivers(self) -> bool:
        """True when a weakly held receiver died since ``receivers`` was last cleaned."""

    def _clear_dead_receivers(self) -> None:
        """Drop the registrations of dead receivers (the caller holds ``lock``)."""


def live_receivers(signal: Routable, sender: object) -> tuple[list[Receiver], list[Receiver]]:
    """Return the live ``(sync, async)`` receivers that a send from ``sender`` reaches."""
    targets = None
    if signal.use_caching and not signal._dead_receivers:
        targets = _cached(signal, sender)
        if targets is _NO_RECEIVERS:
            return [], []
    if targets is None:
        with signal.lock:
            signal._clear_dead_receivers()
            sender_id = _make_id(sender)
            targets = [
                (slot, is_async)
                for (_, r_sender_id), slot, is_async in signal.receivers
                if r_sender_id in (_NONE_ID, sender_id)
            ]
            if signal.use_caching:
                # Cache the weak references, never the receivers themselves.
                with contextlib.suppress(TypeError):  # sender can't be a weak key
                    signal.sender_receivers_cache[sender] = targets or _NO_RECEIVERS
    return split_live(targets)


def nothing_to_send(signal: Routable, sender: object) -> bool:
    """True when a send from ``sender`` surely reaches no receiver (a cheap early exit)."""
    return not signal.receivers or _cached(signal, sender) is _NO_RECEIVERS


def _cached(signal: Routable, sender: object) -> Any:
    try:
        return signal.sender_receivers_cache.get(sender)
    except TypeError:  # not weakly referenceable or not hashable: never cached
        return None


def remote_receivers(
    signal: Routable, sender_ref: str | None
) -> tuple[object, list[Receiver], list[Receiver]]:
    """For a message from the wire: ``(sender, sync receivers, async receivers)``.

    Receivers connected for any sender always match; those connected with
    a class or a string match when its :func:`sender_reference` equals
    ``sender_ref``; those connected with any other object never do. The
    sender is the class when a receiver here was connected with a class
    of that reference, else ``sender_ref`` itself. Nothing is imported or
    looked up by the name that came from the wire.
    """
    plan = signal._remote_plan
    if plan is None or plan.source is not signal.receivers or signal._dead_receivers:
        plan = _build_remote_plan(signal)
    hit = None if sender_ref is None else plan.by_ref.get(sender_ref)
    sender: object = sender_ref
    if hit is None:
        sync_receivers, async_receivers = split_live(plan.wildcard)
        return sender, sync_receivers, async_receivers
    classes, targets = hit
    for class_ref in classes:
        known = class_ref()
        if known is not None:
            sender = known
            break
    sync_receivers, async_receivers = split_live(targets)
    return sender, sync_receivers, async_receivers


def has_remote_receivers(signal: Routable) -> bool:
    """True if a message from the wire can reach a live receiver here.

    Unlike ``has_listeners()``, this counts receivers connected for a
    specific class or string sender: a worker subscribes to every signal
    for which this is true.
    """
    plan = signal._remote_plan
    if plan is None or plan.source is not signal.receivers or signal._dead_receivers:
        plan = _build_remote_plan(signal)
    groups = [plan.wildcard, *(targets for _, targets in plan.by_ref.values())]
    return any(resolve(slot) is not None for group in groups for slot, _ in group)


def _build_remote_plan(signal: Routable) -> RemotePlan:
    with signal.lock:
        signal._clear_dead_receivers()
        wildcard: list[Target] = []
        by_ref: dict[str, list[Target]] = {}
        classes: dict[str, list[weakref.ReferenceType[type]]] = {}
        for entry in signal.receivers:
            if not isinstance(entry, Connection) or not entry.remote:
                continue
            target = (entry.receiver, entry.is_async)
            ref = entry.wire_ref
            if ref is None:  # any sender: reaches every reference, in connect order
                wildcard.append(target)
                for targets in by_ref.values():
                    targets.append(target)
                continue
            by_ref.setdefault(ref, list(wildcard)).append(target)
            if entry.sender_class is not None:
                classes.setdefault(ref, []).append(entry.sender_class)
        plan = RemotePlan(
            source=signal.receivers,
            wildcard=tuple(wildcard),
            by_ref={r: (tuple(classes.get(r, ())), tuple(t)) for r, t in by_ref.items()},
        )
        signal._remote_plan = plan
        return plan


def describe_receivers(signal: Routable) -> list[dict[str, Any]]:
    """Describe the live receivers of ``signal`` in connect order, for listings.

    Each is ``{"receiver": "module.qualname", "sender": reference or None,
    "async": bool, "remote": bool}``; ``remote`` tells whether a message from
    the wire can reach it, and a local-only sender shows as ``"<its type>"``.
    """
    rows: list[dict[str, Any]] = []
    for entry in list(signal.receivers):
        live = resolve(entry[1])
        if live is None:
            continue
        target = getattr(live, "__func__", live)
        if not hasattr(target, "__qualname__"):  # a callable instance: name its class
            target = type(target)
        rows.append(
            {
                "receiver": qualified_name(target),
                "sender": getattr(entry, "sender_label", None),
                "async": entry[2],
                "remote": getattr(entry, "remote", False),
            }
        )
    return rows
