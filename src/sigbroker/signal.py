"""Signals and their local receivers, with the semantics of ``django.dispatch``.

A :class:`Signal` keeps the receivers that this process connected to it.
What ``send`` does with them depends on the mode (see :mod:`sigbroker.config`):

* **eager** (``configure(eager=True)`` or ``SIGBROKER_EAGER=1``): the receivers
  run here and now and ``send`` returns ``[(receiver, response), ...]``, exactly
  like ``django.dispatch.Signal.send``. This is what a project's unit tests use.
* **published** (the default): ``send`` hands the signal to the default client,
  which publishes it; workers in other processes call *their* receivers, found
  through :meth:`Signal.remote_receivers`.

Receivers are held through weak references by default (bound methods through
:class:`weakref.WeakMethod`), are registered once per ``(receiver, sender)``
pair or per ``dispatch_uid``, and may be coroutine functions. This module knows
nothing of Redis: it imports only :mod:`sigbroker.config` and
:mod:`sigbroker.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine, Hashable, Iterable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from . import config
from .errors import ConfigurationError, PayloadError

__all__ = ["Signal", "all_signals", "describe_receivers", "receiver", "sender_reference"]

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]
#: A receiver as stored: the callable itself (weak=False) or a weak reference to it.
ReceiverSlot = Receiver | weakref.ReferenceType[Any]
#: ``[(receiver, response), ...]``, what eager sends return.
Responses = list[tuple[Receiver, Any]]
_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

# Marks a sender that the cache knows has no receivers (Django's NO_RECEIVERS).
_NO_RECEIVERS: Any = object()
# asgiref's markcoroutinefunction() sets this marker on Python < 3.12.
_LEGACY_COROUTINE_MARK = getattr(asyncio.coroutines, "_is_coroutine", None)


def _make_id(target: object) -> Hashable:
    # A bound method is a new object on every attribute access: identify it by its parts.
    if hasattr(target, "__func__"):
        return (id(target.__self__), id(target.__func__))  # type: ignore[attr-defined]
    return id(target)


_NONE_ID = _make_id(None)


def sender_reference(sender: object) -> str | None:
    """Return how ``sender`` travels on the wire: ``"module.QualName"``, the string, or None.

    Raises :class:`PayloadError` for any other object: a model instance or a
    request means nothing in another process, so it is refused at the sender.
    """
    if sender is None or isinstance(sender, str):
        return sender
    if isinstance(sender, type):
        return f"{sender.__module__}.{sender.__qualname__}"
    raise PayloadError(
        "senders that cross the wire must be a class, a string or None, "
        f"not {type(sender).__module__}.{type(sender).__qualname__}"
    )


def _is_async(func: object) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    marker = getattr(func, "_is_coroutine", None)
    if marker is not None and marker is _LEGACY_COROUTINE_MARK:
        return True
    # An instance whose __call__ is a coroutine function is async too (Django misses these).
    return callable(func) and inspect.iscoroutinefunction(type(func).__call__)


def _accepts_kwargs(func: Receiver) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True  # no introspectable signature (some builtins): it can not be checked
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', '?')}"


def _describe(receiver: Receiver) -> str:
    qualname = getattr(receiver, "__qualname__", None)
    return qualname if isinstance(qualname, str) else repr(receiver)


def _resolve(slot: ReceiverSlot) -> Receiver | None:
    if isinstance(slot, weakref.ReferenceType):
        live: Receiver | None = slot()
        return live
    return slot


def _split_live(
    targets: Iterable[tuple[ReceiverSlot, bool]],
) -> tuple[list[Receiver], list[Receiver]]:
    sync_receivers: list[Receiver] = []
    async_receivers: list[Receiver] = []
    for slot, is_async in targets:
        live = _resolve(slot)
        if live is not None:
            (async_receivers if is_async else sync_receivers).append(live)
    return sync_receivers, async_receivers


class _Registration(NamedTuple):
    """One entry of ``Signal.receivers``: Django's ``(lookup_key, receiver, is_async)``."""

    key: tuple[Hashable, Hashable]
    receiver: ReceiverSlot
    is_async: bool


class _Connection(_Registration):
    # The same 3-tuple, plus what the worker needs, computed once at connect time.
    remote: bool  # can a message from the wire match it? (sender is None, a class or a str)
    wire_ref: str | None  # sender_reference(sender) when remote
    sender_label: str | None  # for listings: wire_ref, or the type of a local-only sender
    sender_class: weakref.ReferenceType[type] | None
    finalizer: weakref.finalize[Any, Any] | None


@dataclass(frozen=True, slots=True)
class _RemotePlan:
    """Which receivers each sender reference reaches; rebuilt after every change."""

    source: list[_Registration]  # the receivers list it was computed from
    wildcard: tuple[tuple[ReceiverSlot, bool], ...]
    by_ref: dict[str, tuple[tuple[weakref.ReferenceType[type], ...], tuple[Any, ...]]]


def _mark_dead(signal_ref: weakref.ReferenceType[Signal]) -> None:
    # Runs from the garbage collector: flag only, never take the lock.
    signal = signal_ref()
    if signal is not None:
        signal._remove_receiver()


def _creator_globals(signal: Signal) -> dict[str, Any] | None:
    # Skip the __init__ frames of Signal and its subclasses: the creator is above them.
    frame = sys._getframe(1)
    while frame is not None and frame.f_locals.get("self") is signal:
        frame = frame.f_back  # type: ignore[assignment]
    return None if frame is None else frame.f_globals


def _module_name(namespace: Mapping[str, Any]) -> str | None:
    name = namespace.get("__name__")
    spec = namespace.get("__spec__")
    spec_name = getattr(spec, "name", None)
    if name == "__main__" and isinstance(spec_name, str):
        return spec_name  # run with ``python -m pkg.mod``: the importable name
    return name if isinstance(name, str) else None


_serials = itertools.count()
_all_lock = threading.Lock()
_all: weakref.WeakSet[Signal] = weakref.WeakSet()


def all_signals() -> list[Signal]:
    """Return every :class:`Signal` that is still alive, in the order they were created."""
    with _all_lock:
        signals = list(_all)
    return sorted(signals, key=lambda s: s._serial)


class Signal:
    """A signal: receivers connect to it, senders send it.

    ``providing_args`` declares the keyword arguments that every send carries
    (checked by :meth:`validate`); ``name`` is the stable name that the signal
    has on the wire (by default ``"<module>.<variable>"``); ``use_caching``
    caches the receivers per sender, as in Django.
    """

    def __init__(
        self,
        providing_args: Iterable[str] | None = None,
        name: str | None = None,
        use_caching: bool = False,
    ) -> None:
        if isinstance(providing_args, str):
            raise TypeError("providing_args must be a list of argument names, not a string")
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"a signal name must be a non-empty string, not {name!r}")
        #: The declared keyword arguments, or None when any are accepted.
        self.providing_args: frozenset[str] | None = (
            None if providing_args is None else frozenset(providing_args)
        )
        #: ``[(lookup_key, receiver or weak reference, is_async), ...]`` as in Django.
        self.receivers: list[_Registration] = []
        #: Serializes every change to ``receivers``.
        self.lock = threading.Lock()
        self.use_caching = use_caching
        # Per sender, the receivers it reaches; weak keys so that caching keeps no sender alive.
        self.sender_receivers_cache: MutableMapping[Any, Any] = (
            weakref.WeakKeyDictionary() if use_caching else {}
        )
        self._dead_receivers = False
        self._remote_plan: _RemotePlan | None = None
        self._name = name
        self._origin = None if name is not None else _creator_globals(self)
        self._serial = next(_serials)
        with _all_lock:
            _all.add(self)

    def __repr__(self) -> str:
        name = self.name_or_none
        if name is None:
            return f"<{type(self).__name__} (unnamed) at {id(self):#x}>"
        return f"<{type(self).__name__} {name!r}>"

    # -- naming -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The stable name of the signal: ``name=`` if given, else ``"<module>.<variable>"``.

        Found on first use by looking for the signal among the globals of the
        module that created it; raises :class:`ConfigurationError` when no
        module-level variable holds it.
        """
        name = self._name
        if name is None:
            name = self._name = self._find_name()
            self._origin = None
        return name

    def _find_name(self) -> str:
        namespace = self._origin
        module = None if namespace is None else _module_name(namespace)
        if namespace is not None and module is not None:
            for variable, value in list(namespace.items()):
                if value is self:
                    return f"{module}.{variable}"
        raise ConfigurationError(
            f"can not derive a name for the signal created in module {module!r}: it is not "
            "held by a module-level variable there; pass Signal(name=...)"
        )

    @property
    def name_or_none(self) -> str | None:
        """The name if it is given or can be derived, else None (for listings; never raises)."""
        try:
            return self.name
        except ConfigurationError:
            return None

    def _label(self) -> str:
        return self.name_or_none or repr(self)

    # -- connecting ---------------------------------------------------------

    def connect(
        self,
        receiver: Receiver,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> None:
        """Connect ``receiver`` to this signal, for ``sender`` only or (None) for any sender.

        The receiver must be callable and accept ``**kwargs``; it may be a
        coroutine function. With ``weak=True`` only a weak reference is kept
        and the receiver disappears with its object. A second connect of the
        same receiver and sender, or of the same ``dispatch_uid`` and sender,
        does nothing.
        """
        if not callable(receiver):
            raise TypeError("Signal receivers must be callable.")
        if not _accepts_kwargs(receiver):
            raise ValueError("Signal receivers must accept keyword arguments (**kwargs).")
        key = (dispatch_uid if dispatch_uid else _make_id(receiver), _make_id(sender))
        is_async = _is_async(receiver)
        slot: ReceiverSlot = receiver
        owner: object = None
        if weak:
            if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
                # A bound method dies with its instance, not with the method object.
                owner = receiver.__self__
                slot = weakref.WeakMethod(receiver)
            else:
                owner = receiver
                slot = weakref.ref(receiver)
        entry = _Connection(key, slot, is_async)
        entry.remote = sender is None or isinstance(sender, type | str)
        entry.wire_ref = sender_reference(sender) if entry.remote else None
        entry.sender_class = weakref.ref(sender) if isinstance(sender, type) else None
        entry.sender_label = entry.wire_ref if entry.remote else f"<{_dotted(type(sender))}>"
        entry.finalizer = None
        with self.lock:
            self._clear_dead_receivers()
            if not any(existing[0] == key for existing in self.receivers):
                if weak:
                    entry.finalizer = weakref.finalize(owner, _mark_dead, weakref.ref(self))
                    entry.finalizer.atexit = False
                self.receivers.append(entry)
                self._remote_plan = None
            self.sender_receivers_cache.clear()

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: object = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect ``receiver`` (or the one connected as ``dispatch_uid``) from ``sender``.

        Return True if a receiver was disconnected. Weak receivers need no
        disconnect: they go away with their object.
        """
        key = (dispatch_uid if dispatch_uid else _make_id(receiver), _make_id(sender))
        removed: _Registration | None = None
        with self.lock:
            self._clear_dead_receivers()
            for index, existing in enumerate(self.receivers):
                if existing[0] == key:
                    removed = self.receivers.pop(index)
                    self._remote_plan = None
                    break
            self.sender_receivers_cache.clear()
        finalizer = getattr(removed, "finalizer", None)
        if finalizer is not None:
            finalizer.detach()  # its object may live on; this signal no longer cares
        return removed is not None

    def has_listeners(self, sender: object = None) -> bool:
        """True if a send from ``sender`` would reach a live receiver (Django semantics).

        With no sender this counts only the receivers connected for any sender;
        :meth:`has_remote_receivers` tells whether a worker has work here.
        """
        sync_receivers, async_receivers = self._live_receivers(sender)
        return bool(sync_receivers or async_receivers)

    def _remove_receiver(self, receiver: object = None) -> None:
        # Called (through _mark_dead) when a weakly held receiver dies, possibly
        # while this thread holds self.lock: only flag, the next locked call cleans up.
        self._dead_receivers = True

    def _clear_dead_receivers(self) -> None:
        # The caller holds self.lock.
        if self._dead_receivers:
            self._dead_receivers = False
            self.receivers = [
                r
                for r in self.receivers
                if not (isinstance(r[1], weakref.ReferenceType) and r[1]() is None)
            ]
            self._remote_plan = None

    def _cached(self, sender: object) -> Any:
        try:
            return self.sender_receivers_cache.get(sender)
        except TypeError:  # not weakly referenceable or not hashable: never cached
            return None

    def _live_receivers(self, sender: object) -> tuple[list[Receiver], list[Receiver]]:
        """Return the live ``(sync, async)`` receivers that a send from ``sender`` reaches."""
        targets = None
        if self.use_caching and not self._dead_receivers:
            targets = self._cached(sender)
            if targets is _NO_RECEIVERS:
                return [], []
        if targets is None:
            with self.lock:
                self._clear_dead_receivers()
                sender_id = _make_id(sender)
                targets = [
                    (slot, is_async)
                    for (_, r_sender_id), slot, is_async in self.receivers
                    if r_sender_id in (_NONE_ID, sender_id)
                ]
                if self.use_caching:
                    # Cache the weak references, never the receivers themselves.
                    with contextlib.suppress(TypeError):  # sender can't be a weak key
                        self.sender_receivers_cache[sender] = targets or _NO_RECEIVERS
        return _split_live(targets)

    def _nothing_to_send(self, sender: object) -> bool:
        return not self.receivers or self._cached(sender) is _NO_RECEIVERS

    # -- the worker's view --------------------------------------------------

    def remote_receivers(
        self, sender_ref: str | None
    ) -> tuple[object, list[Receiver], list[Receiver]]:
        """For a message from the wire: ``(sender, sync receivers, async receivers)``.

        Receivers connected for any sender always match; those connected with
        a class or a string match when its :func:`sender_reference` equals
        ``sender_ref``; those connected with any other object never do. The
        sender is the class when a receiver here was connected with a class
        of that reference, else ``sender_ref`` itself. Nothing is imported or
        looked up by the name that came from the wire.
        """
        plan = self._remote_plan
        if plan is None or plan.source is not self.receivers or self._dead_receivers:
            plan = self._build_remote_plan()
        hit = None if sender_ref is None else plan.by_ref.get(sender_ref)
        sender: object = sender_ref
        if hit is None:
            sync_receivers, async_receivers = _split_live(plan.wildcard)
            return sender, sync_receivers, async_receivers
        classes, targets = hit
        for class_ref in classes:
            known = class_ref()
            if known is not None:
                sender = known
                break
        sync_receivers, async_receivers = _split_live(targets)
        return sender, sync_receivers, async_receivers

    def has_remote_receivers(self) -> bool:
        """True if a message from the wire can reach a live receiver here.

        Unlike ``has_listeners()``, this counts receivers connected for a
        specific class or string sender: a worker subscribes to every signal
        for which this is true.
        """
        plan = self._remote_plan
        if plan is None or plan.source is not self.receivers or self._dead_receivers:
            plan = self._build_remote_plan()
        groups = [plan.wildcard, *(targets for _, targets in plan.by_ref.values())]
        return any(_resolve(slot) is not None for group in groups for slot, _ in group)

    def _build_remote_plan(self) -> _RemotePlan:
        with self.lock:
            self._clear_dead_receivers()
            wildcard: list[tuple[ReceiverSlot, bool]] = []
            by_ref: dict[str, list[tuple[ReceiverSlot, bool]]] = {}
            classes: dict[str, list[weakref.ReferenceType[type]]] = {}
            for entry in self.receivers:
                if not isinstance(entry, _Connection) or not entry.remote:
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
            plan = _RemotePlan(
                source=self.receivers,
                wildcard=tuple(wildcard),
                by_ref={r: (tuple(classes.get(r, ())), tuple(t)) for r, t in by_ref.items()},
            )
            self._remote_plan = plan
            return plan

    # -- payload ------------------------------------------------------------

    def validate(self, kwargs: Mapping[str, object]) -> None:
        """Check the keyword arguments of a send against ``providing_args``.

        Raise :class:`PayloadError` naming every unexpected and every missing
        argument. Without ``providing_args`` any arguments are accepted.
        """
        declared = self.providing_args
        if declared is None or kwargs.keys() == declared:
            return
        problems = []
        unexpected = sorted(k for k in kwargs if k not in declared)
        missing = sorted(declared.difference(kwargs))
        if unexpected:
            noun = "an unexpected argument" if len(unexpected) == 1 else "unexpected arguments"
            problems.append(f"got {noun} {', '.join(map(repr, unexpected))}")
        if missing:
            noun = "argument" if len(missing) == 1 else "arguments"
            problems.append(f"is missing the {noun} {', '.join(map(repr, missing))}")
        declared_text = ", ".join(sorted(declared)) or "none"
        raise PayloadError(
            f"{self._label()} {' and '.join(problems)} (providing_args: {declared_text})"
        )

    # -- sending ------------------------------------------------------------

    def send(self, sender: object, **named: Any) -> Any:
        """Send the signal from ``sender`` with the keyword arguments ``named``.

        Published mode: return how many workers received it (an ``int``);
        raises :class:`PayloadError` or :class:`BrokerUnavailable`.
        Eager mode: call the receivers, sync ones first, then the async ones
        concurrently on an event loop, and return ``[(receiver, response),
        ...]``; a receiver's exception propagates and stops the loop.
        (Annotated ``Any`` because the mode is chosen at run time.)
        """
        if not config.is_eager():
            return config.default_client().send(self, sender, **named)
        return self._send_here(sender, named, None)

    def send_robust(self, sender: object, **named: Any) -> Any:
        """Like :meth:`send`, but a failure is logged (with its traceback) and returned.

        Published mode: return the ``int`` from the client or, if anything at
        all is raised (:class:`BrokerUnavailable`, :class:`PayloadError`, ...),
        the exception. Eager mode: return ``[(receiver, response or exception),
        ...]`` as Django does. One exception to "never raises": in eager mode a
        payload that breaks ``providing_args`` raises :class:`PayloadError`
        before any receiver runs, because it is a bug of the caller, not a
        failure of a receiver (Django's ``send_robust`` catches only those).
        """
        if not config.is_eager():
            try:
                return config.default_client().send(self, sender, **named)
            except Exception as exc:
                self._log_send_failure("send_robust", exc)
                return exc
        return self._send_here(sender, named, "send_robust")

    async def asend(self, sender: object, **named: Any) -> Any:
        """The asyncio twin of :meth:`send`.

        Eager mode: the sync receivers run in a worker thread while the async
        ones run concurrently on the current loop; the responses list the
        sync receivers first.
        """
        if not config.is_eager():
            return await config.default_client().asend(self, sender, **named)
        return await self._asend_here(sender, named, None)

    async def asend_robust(self, sender: object, **named: Any) -> Any:
        """The asyncio twin of :meth:`send_robust`, with the same exception for payloads."""
        if not config.is_eager():
            try:
                return await config.default_client().asend(self, sender, **named)
            except Exception as exc:
                self._log_send_failure("asend_robust", exc)
                return exc
        # Django 5.2 logs receiver failures of asend_robust as send_robust() too.
        return await self._asend_here(sender, named, "send_robust")

    # robust: None lets receiver errors propagate; else the method to log them under.

    def _send_here(self, sender: object, named: dict[str, Any], robust: str | None) -> Responses:
        self.validate(named)
        if self._nothing_to_send(sender):
            return []
        sync_receivers, async_receivers = self._live_receivers(sender)
        responses = self._call_sync(sync_receivers, sender, named, robust)
        if async_receivers:
            responses += _run_to_completion(
                lambda: self._call_async(async_receivers, sender, named, robust)
            )
        return responses

    async def _asend_here(
        self, sender: object, named: dict[str, Any], robust: str | None
    ) -> Responses:
        self.validate(named)
        if self._nothing_to_send(sender):
            return []
        sync_receivers, async_receivers = self._live_receivers(sender)

        async def sync_part() -> Responses:
            if not sync_receivers:
                return []
            return await asyncio.to_thread(self._call_sync, sync_receivers, sender, named, robust)

        sync_responses, async_responses = await asyncio.gather(
            sync_part(), self._call_async(async_receivers, sender, named, robust)
        )
        return sync_responses + async_responses

    def _call_sync(
        self, receivers: list[Receiver], sender: object, named: dict[str, Any], robust: str | None
    ) -> Responses:
        responses: Responses = []
        for receiver in receivers:
            if robust is None:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
                continue
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as err:
                self._log_receiver_failure(robust, receiver, err)
                response = err
            responses.append((receiver, response))
        return responses

    async def _call_async(
        self, receivers: list[Receiver], sender: object, named: dict[str, Any], robust: str | None
    ) -> Responses:
        async def guarded(receiver: Receiver, method: str) -> Any:
            try:
                return await receiver(signal=self, sender=sender, **named)
            except Exception as err:
                self._log_receiver_failure(method, receiver, err)
                return err

        if robust is None:
            calls = [receiver(signal=self, sender=sender, **named) for receiver in receivers]
        else:
            calls = [guarded(receiver, robust) for receiver in receivers]
        return list(zip(receivers, await asyncio.gather(*calls), strict=True))

    def _log_receiver_failure(self, method: str, receiver: Receiver, err: Exception) -> None:
        args = ("Error calling %s in Signal.%s() (%s)", _describe(receiver), method, err)
        logger.error(*args, exc_info=err)
        if "django" in sys.modules:
            # Drop-in for django.dispatch: code that watches Django's logger sees it too.
            logging.getLogger("django.dispatch").error(*args, exc_info=err)

    def _log_send_failure(self, method: str, exc: Exception) -> None:
        logger.error(
            "Error sending %s in Signal.%s() (%s)", self._label(), method, exc, exc_info=exc
        )


def describe_receivers(signal: Signal) -> list[dict[str, Any]]:
    """Describe the live receivers of ``signal`` in connect order, for listings.

    Each is ``{"receiver": "module.qualname", "sender": reference or None,
    "async": bool, "remote": bool}``; ``remote`` tells whether a message from
    the wire can reach it, and a local-only sender shows as ``"<its type>"``.
    """
    rows: list[dict[str, Any]] = []
    for entry in list(signal.receivers):
        live = _resolve(entry[1])
        if live is None:
            continue
        target = getattr(live, "__func__", live)
        if not hasattr(target, "__qualname__"):  # a callable instance: name its class
            target = type(target)
        rows.append(
            {
                "receiver": _dotted(target),
                "sender": getattr(entry, "sender_label", None),
                "async": entry[2],
                "remote": getattr(entry, "remote", False),
            }
        )
    return rows


def receiver(
    signal: Signal | list[Signal] | tuple[Signal, ...], **kwargs: Any
) -> Callable[[_F], _F]:
    """Connect the decorated function to one signal or a list of them; return it unchanged.

    ::

        @receiver(order_placed, sender=Order)
        def notify(sender, order_id, **kwargs): ...

    ``kwargs`` are passed to :meth:`Signal.connect` (``sender``, ``weak``, ``dispatch_uid``).
    """

    def decorator(func: _F) -> _F:
        for one in signal if isinstance(signal, list | tuple) else (signal,):
            one.connect(func, **kwargs)
        return func

    return decorator


def _run_to_completion(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to its end from synchronous code and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        busy = False  # decided outside the handler: receiver errors must not chain to this
    else:
        busy = True
    if not busy:
        return _run_on_private_loop(make)
    # This thread's loop is busy running us and can not be re-entered: use a fresh
    # loop in a worker thread, carrying the caller's context variables along.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sigbroker-send") as pool:
        return pool.submit(context.run, _run_on_private_loop, make).result()


def _run_on_private_loop(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    # Like asyncio.run(), minus set_event_loop(): the thread's current loop stays as it was.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
