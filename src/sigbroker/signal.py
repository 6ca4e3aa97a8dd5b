"""Signals and their local receivers, with the semantics of ``django.dispatch``.

A :class:`Signal` keeps the receivers that this process connected to it.
What ``send`` does with them depends on the mode (see :mod:`sigbroker.config`):

* **eager** (``configure(eager=True)`` or ``SIGBROKER_EAGER=1``): the receivers
  run here and now and ``send`` returns ``[(receiver, response), ...]``, exactly
  like ``django.dispatch.Signal.send``. This is what a project's unit tests use.
* **published** (the default): ``send`` hands the signal to the default client,
  which publishes it; workers in other processes call *their* receivers, found
  through :meth:`Signal.remote_receivers` (see :mod:`sigbroker.routing`).

Receivers are held through weak references by default (bound methods through
:class:`weakref.WeakMethod`), are registered once per ``(receiver, sender)``
pair or per ``dispatch_uid``, and may be coroutine functions. A signal's name
comes from :mod:`sigbroker.naming`. This module knows nothing of Redis: the
client (and redis-py with it) is imported by the first published send, never
by the registry or an eager send. It is over 400 lines because the registry
and the send methods (``send``, ``send_robust``, ``asend``, ``asend_robust``,
``send_on_commit``) with their failure logging are one concept, Django's
``Signal``, kept readable in one file as blinker keeps its own.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar

from . import config, routing
from ._aio import is_async_callable, run_to_completion
from .durable import DEFAULT_MAXLEN
from .errors import ConfigurationError, PayloadError
from .naming import callable_name, creator_globals, find_signal_name
from .routing import Receiver, ReceiverSlot, Registration, lookup_key

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Signal", "all_signals", "receiver"]

logger = logging.getLogger(__name__)

#: ``[(receiver, response), ...]``, what eager sends return.
Responses = list[tuple[Receiver, Any]]
_F = TypeVar("_F", bound=Callable[..., Any])


def _accepts_kwargs(func: Receiver) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True  # no introspectable signature (some builtins): it can not be checked
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _mark_dead(signal_ref: weakref.ReferenceType[Signal]) -> None:
    # Runs from the garbage collector: flag only, never take the lock.
    signal = signal_ref()
    if signal is not None:
        signal._remove_receiver()


_serials = itertools.count()
_all_lock = threading.Lock()
_all: weakref.WeakSet[Signal] = weakref.WeakSet()


def _new_client(url: str, *, namespace: str, secret: tuple[bytes, ...]) -> Client:
    # Builds the default client on the first published send: only then are the
    # client and redis-py imported, so that the registry and eager sends need no Redis.
    from .client import Client

    return Client(url, namespace=namespace, secret=secret)


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
    caches the receivers per sender, as in Django. A ``durable`` signal is
    appended to a Redis stream that keeps about ``maxlen`` entries (default
    :data:`~sigbroker.durable.DEFAULT_MAXLEN`) instead of being published:
    each consumer group (a service's workers, ``--group``) processes every
    message at least once (see :mod:`sigbroker.durable`).
    """

    def __init__(
        self,
        providing_args: Iterable[str] | None = None,
        name: str | None = None,
        use_caching: bool = False,
        durable: bool = False,
        maxlen: int | None = None,
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
        self.receivers: list[Registration] = []
        #: Serializes every change to ``receivers``.
        self.lock = threading.Lock()
        self.use_caching = use_caching
        if maxlen is not None and (type(maxlen) is not int or maxlen < 1):
            raise ConfigurationError(f"maxlen must be a positive int, not {maxlen!r}")
        if maxlen is not None and not durable:
            raise ConfigurationError("maxlen applies to durable signals only (durable=True)")
        #: Appended to a stream, processed once per consumer group (see sigbroker.durable).
        self.durable = bool(durable)
        #: About how many entries the stream of a durable signal keeps.
        self.maxlen = DEFAULT_MAXLEN if maxlen is None else maxlen
        # Per sender, the receivers it reaches; weak keys so that caching keeps no sender alive.
        self.sender_receivers_cache: MutableMapping[Any, Any] = (
            weakref.WeakKeyDictionary() if use_caching else {}
        )
        self._dead_receivers = False
        self._remote_plan: routing.RemotePlan | None = None
        self._name = name
        self._origin = None if name is not None else creator_globals(self)
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
            name = self._name = find_signal_name(self, self._origin)
            self._origin = None
        return name

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
        key = lookup_key(receiver, sender, dispatch_uid)
        is_async = is_async_callable(receiver)
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
        entry = routing.connection(key, slot, is_async, sender)
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
        key = lookup_key(receiver, sender, dispatch_uid)
        removed: Registration | None = None
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

    # -- sender matching: routing.py's functions, bound as methods so that the
    # lookups of a send and of the worker's per-message path stay one call.

    _live_receivers = routing.live_receivers
    _nothing_to_send = routing.nothing_to_send
    remote_receivers = routing.remote_receivers
    has_remote_receivers = routing.has_remote_receivers

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
            return config.default_client(_new_client).send(self, sender, **named)
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
                return config.default_client(_new_client).send(self, sender, **named)
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
            return await config.default_client(_new_client).asend(self, sender, **named)
        return await self._asend_here(sender, named, None)

    async def asend_robust(self, sender: object, **named: Any) -> Any:
        """The asyncio twin of :meth:`send_robust`, with the same exception for payloads."""
        if not config.is_eager():
            try:
                return await config.default_client(_new_client).asend(self, sender, **named)
            except Exception as exc:
                self._log_send_failure("asend_robust", exc)
                return exc
        # Django 5.2 logs receiver failures of asend_robust as send_robust() too.
        return await self._asend_here(sender, named, "send_robust")

    def send_on_commit(self, sender: object, **named: Any) -> Any:
        """Send when the current database transaction commits; drop the message on rollback.

        Django only (``pip install 'sigbroker[django]'``): raises
        :class:`ConfigurationError` without it. The payload is checked and
        encoded at once, so a bad one raises :class:`PayloadError` here and
        nothing is deferred; the finished message is published by
        ``transaction.on_commit(..., robust=True)`` of the default database.
        Inside ``atomic()`` returns None (the receiver count is not known
        yet); outside a transaction publishes at once and returns what
        :meth:`send` returns. In eager mode the receivers run on commit.
        The details (no sequence number, send time) are in
        :mod:`sigbroker.contrib.django.transaction`.
        """
        # Deferred: importing this module never imports Django (nor redis).
        from .contrib.django.transaction import send_on_commit

        return send_on_commit(self, sender, named)

    # robust: None lets receiver errors propagate; else the method to log them under.

    def _send_here(self, sender: object, named: dict[str, Any], robust: str | None) -> Responses:
        self.validate(named)
        if self._nothing_to_send(sender):
            return []
        sync_receivers, async_receivers = self._live_receivers(sender)
        responses = self._call_sync(sync_receivers, sender, named, robust)
        if async_receivers:
            responses += run_to_completion(
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
        args = ("Error calling %s in Signal.%s() (%s)", callable_name(receiver), method, err)
        logger.error(*args, exc_info=err)
        if "django" in sys.modules:
            # Drop-in for django.dispatch: code that watches Django's logger sees it too.
            logging.getLogger("django.dispatch").error(*args, exc_info=err)

    def _log_send_failure(self, method: str, exc: Exception) -> None:
        logger.error(
            "Error sending %s in Signal.%s() (%s)", self._label(), method, exc, exc_info=exc
        )


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
