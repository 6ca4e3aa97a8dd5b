"""The dispatcher: one encoded message in, the local receivers called, an outcome out.

Every source of the worker (a pub/sub subscription, an in-memory source, a
durable stream later) hands the raw bytes of a channel's messages to the
handler :meth:`Dispatcher.handler` made for its signal, which decodes and
verifies them, finds the receivers in the local registry and calls them with
``send_robust`` semantics: a receiver that raises is logged with its traceback
and counted, and the others still run. Each message ends in an
:class:`~sigbroker.transport.base.Outcome`, returned and, for a source that
acknowledges, reported through its ``done`` callback. Nothing here talks to Redis.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ._aio import EventLoopThread
from .codec import Codec
from .durable_calls import durable_batch, durable_caller
from .errors import ConfigurationError, InvalidMessage
from .message import Message, MessageFields, current_async, running
from .naming import callable_name
from .sequences import Sequences
from .signal import Signal
from .stats import Stats
from .throttle import Throttle
from .transport.base import (
    Delivery,
    Done,
    DurableDone,
    DurableHandler,
    DurableRoute,
    Handler,
    Outcome,
)

__all__ = ["REPLAY_WINDOW_S", "Dispatcher", "Hook", "Submit"]

#: How a worker runs receivers elsewhere: it is given a function that calls them.
Submit = Callable[[Callable[[], None]], None]
#: Calls a signal's receivers for one message: (cell, sender reference, arguments, message).
Caller = Callable[[list[str | None], str | None, dict[str, Any], MessageFields], Outcome]
#: Called without arguments before or after each message's receivers (see :class:`Dispatcher`).
Hook = Callable[[], object]
_C = TypeVar("_C", bound=Callable[..., Outcome])

PROCESSED, FAILED, REJECTED = Outcome.PROCESSED, Outcome.FAILED, Outcome.REJECTED

#: With a secret, messages sent longer ago than this (or as far ahead) are replays.
REPLAY_WINDOW_S = 300.0
#: Ids of signed version-1 messages (which have no sequence) remembered against replays.
MAX_SEEN_IDS = 100_000

_now = time.time

logger = logging.getLogger(__name__)


class Dispatcher:
    """Decode messages of known signals, check them, and call their local receivers.

    ``threads`` is how many threads may call the handlers at once: with more
    than one, the counters are updated under the stats lock. When the codec
    has a secret, a message sent more than ``max_age_s`` ago (or that far in
    the future: the clocks of senders and workers must agree within it), or
    one already seen from its origin, is rejected as a replay.

    ``before_message`` and ``after_message`` are called without arguments
    around the receivers of each message that is admitted, in the thread that
    calls them (so a framework can tidy its thread-local state there: Django's
    database connections, say); ``after_message`` runs even when a receiver
    raised. A hook that raises is logged and the message still runs. Without
    hooks the per-message path is the same function as before: they cost
    nothing unless given.
    """

    def __init__(
        self,
        codec: Codec,
        stats: Stats,
        loop: EventLoopThread,
        *,
        threads: int = 1,
        max_age_s: float = REPLAY_WINDOW_S,
        before_message: Hook | None = None,
        after_message: Hook | None = None,
    ) -> None:
        if not max_age_s > 0:
            raise ConfigurationError("max_age_s must be positive")
        self.codec = codec
        self.stats = stats
        self.loop = loop
        self.threads = threads
        self.max_age_s = max_age_s
        self.before_message = before_message
        self.after_message = after_message
        self.throttle = Throttle(logger)
        self._cells: list[tuple[str, list[str | None]]] = []
        self._handlers: dict[Signal, Handler] = {}
        self._lock = threading.Lock()
        self._sequences: list[Sequences] = []
        self._seen_ids: dict[str, float] = {}

    def in_flight(self) -> list[tuple[str, str]]:
        """``(signal name, message id)`` of each message whose receivers are running now."""
        with self._lock:
            cells = list(self._cells)
        return [(name, message_id) for name, (message_id,) in cells if message_id is not None]

    def settle(self, *, everything: bool = False) -> int:
        """Count as lost what has been missing long enough; log suppressed warnings.

        A worker calls it now and then (its pulse) and with ``everything``
        when it stops. Returns how many messages it counted as lost.
        """
        lost = sum(seqs.settle(everything=everything) for seqs in list(self._sequences))
        self.throttle.flush()
        return lost

    def handle(self, signal: Signal, data: bytes) -> Outcome | None:
        """Dispatch one message that arrived on ``signal``'s channel; never raises.

        The handler is made once per signal and kept, with its sequence state.
        """
        handler = self._handlers.get(signal)
        if handler is None:
            handler = self._handlers[signal] = self.handler(signal)
        return handler(data)

    def handler(self, signal: Signal, submit: Submit | None = None) -> Handler:
        """The function that dispatches the messages of ``signal``'s channel.

        The returned function decodes and checks each message in the calling
        thread, in the order they arrive (sequence numbers are tracked
        there). With ``submit``, the receivers are not called there:
        ``submit`` is given a function without arguments that calls them (a
        thread pool's, say). It returns the message's outcome, or None when
        it was submitted; ``done``, if the source gives one, is called with the
        outcome once the receivers returned, in whatever thread ran them. It
        is the worker's per-message path, so everything that does not change
        between messages is looked up once, here.
        """
        read = self.codec.read
        name = signal.name
        stats = self.stats
        reject = self._reject
        sequences = Sequences(name, stats, self.throttle)
        self._sequences.append(sequences)
        highest = sequences.highest
        signed = self.codec.signed
        admit = self._admit
        call = self._caller(signal)
        # The id of the message whose receivers run: in the reading thread one
        # cell per handler; in a pool's threads, one per thread.
        cell = self._cell(name)
        cells = threading.local()

        def pooled(
            sender_ref: str | None,
            kwargs: dict[str, Any],
            message: MessageFields,
            done: Done | None,
        ) -> None:
            try:
                mine = cells.cell
            except AttributeError:
                mine = cells.cell = self._cell(name)
            outcome = call(mine, sender_ref, kwargs, message)
            if done is not None:
                done(outcome)

        def handle(data: bytes, done: Done | None = None) -> Outcome | None:
            try:
                signal_name, sender_ref, kwargs, message_id, sent_at, origin, seq = read(data)
            except InvalidMessage as exc:
                reject(name, exc.reason, str(exc))
                if done is not None:
                    done(REJECTED)
                return REJECTED
            if (
                seq
                and highest.get(origin) == seq - 1
                and signal_name == name
                and not signed
                and "signal" not in kwargs
                and "sender" not in kwargs
            ):
                highest[origin] = seq  # the common case: the next message of a known origin
            elif not admit(sequences, signal_name, kwargs, message_id, sent_at, origin, seq):
                if done is not None:
                    done(REJECTED)
                return REJECTED
            message = (message_id, name, origin, sent_at, 1, None, None)
            if submit is None:
                outcome = call(cell, sender_ref, kwargs, message)
                if done is not None:
                    done(outcome)
                return outcome
            submit(lambda: pooled(sender_ref, kwargs, message, done))
            return None

        return handle

    def durable_route(
        self, signal: Signal, group: str, submit: Submit | None = None
    ) -> DurableRoute:
        """How a durable source hands over ``signal``'s messages (see :meth:`durable_handler`).

        Without a pool and without message hooks, a batch of first deliveries
        takes the lean path as well (:func:`~sigbroker.durable_calls.durable_batch`).
        """
        handle = self.durable_handler(signal, group, submit)
        if submit is not None or self.before_message or self.after_message:
            return DurableRoute(handle)
        call = durable_caller(signal, self.stats, threads=self.threads, run_async=self._run_async)
        batch = durable_batch(
            signal, group, self.codec.read, self._reject, call, self._cell(signal.name), self.stats
        )
        return DurableRoute(handle, batch)

    def durable_handler(
        self, signal: Signal, group: str, submit: Submit | None = None
    ) -> DurableHandler:
        """The function that runs the receivers of ``signal``'s durable messages.

        Like :meth:`handler`, but for a stream read in consumer ``group``:
        no sequence or age checks (a redelivery, or a backlog older than the
        replay window, is expected), the receivers named in the delivery's
        ``skip`` are not run (and only ``only``, when set), and each receiver
        that raises is noted in the delivery, so that only it is retried.
        """
        read = self.codec.read
        name = signal.name
        reject = self._reject
        call = self._hooked(
            durable_caller(signal, self.stats, threads=self.threads, run_async=self._run_async)
        )
        cell = self._cell(name)
        cells = threading.local()

        def pooled(
            delivery: Delivery,
            sender_ref: str | None,
            kwargs: dict[str, Any],
            message: MessageFields,
            done: DurableDone,
        ) -> None:
            try:
                mine = cells.cell
            except AttributeError:
                mine = cells.cell = self._cell(name)
            done(delivery, call(mine, delivery, sender_ref, kwargs, message))

        def handle(delivery: Delivery, done: DurableDone) -> Outcome | None:
            try:
                signal_name, sender_ref, kwargs, message_id, sent_at, origin, _ = read(
                    delivery.data
                )
            except InvalidMessage as exc:
                reject(name, exc.reason, str(exc))
                return REJECTED
            if signal_name != name:
                reject(name, "invalid", f"a message for {signal_name!r} on this stream")
                return REJECTED
            if "signal" in kwargs or "sender" in kwargs:
                reject(name, "invalid", "arguments named 'signal' or 'sender' are not allowed")
                return REJECTED
            message = (
                message_id,
                name,
                origin,
                sent_at,
                delivery.deliveries,
                delivery.entry,
                group,
            )
            if submit is None:
                return call(cell, delivery, sender_ref, kwargs, message)
            submit(lambda: pooled(delivery, sender_ref, kwargs, message, done))
            return None

        return handle

    def _cell(self, name: str) -> list[str | None]:
        # Where a thread that calls receivers of ``name`` notes the message id.
        cell: list[str | None] = [None]
        with self._lock:
            self._cells.append((name, cell))
        return cell

    def _caller(self, signal: Signal) -> Caller:
        """The function that calls ``signal``'s receivers for one message, robustly, and counts.

        It notes the message's id in the cell it is given while the receivers
        run (for :meth:`in_flight`): a store, far cheaper than a lock or a
        dict; and the message itself for :func:`~sigbroker.current_message`.
        """
        name = signal.name
        receivers_for = signal.remote_receivers
        stats = self.stats
        lock = stats.lock if self.threads > 1 else None
        run_async = self._run_async
        here = running

        def call(
            cell: list[str | None],
            sender_ref: str | None,
            kwargs: dict[str, Any],
            message: MessageFields,
        ) -> Outcome:
            cell[0] = message_id = message[0]
            here.message = message
            sender, sync_receivers, async_receivers = receivers_for(sender_ref)
            failed = 0
            for receiver in sync_receivers:
                try:
                    receiver(signal=signal, sender=sender, **kwargs)
                except Exception:
                    failed += 1
                    logger.exception(
                        "Error calling %s for %s (message %s)",
                        callable_name(receiver),
                        name,
                        message_id,
                    )
            if async_receivers:
                results = run_async(signal, sender, kwargs, async_receivers, message)
                failed += sum(result is not None for result in results)
            cell[0] = None
            here.message = None
            if lock is None:
                stats.processed += 1
                stats.failed += failed
            else:
                with lock:
                    stats.processed += 1
                    stats.failed += failed
            return FAILED if failed else PROCESSED

        return self._hooked(call)

    def _hooked(self, call: _C) -> _C:
        """``call`` between the message hooks (``call`` itself when there are none).

        ``call`` is a caller of either kind: its last argument is the message.
        """
        before, after = self.before_message, self.after_message
        if before is None and after is None:
            return call

        def hooked(*args: Any) -> Outcome:
            message_id = args[-1][0]
            if before is not None:
                _run_hook(before, message_id)
            try:
                result: Outcome = call(*args)
                return result
            finally:
                if after is not None:
                    _run_hook(after, message_id)

        return cast(_C, hooked)

    def _admit(
        self,
        sequences: Sequences,
        signal_name: str,
        kwargs: dict[str, Any],
        message_id: str,
        sent_at: float,
        origin: str,
        seq: int,
    ) -> bool:
        """The checks of a message off the common path; reject it and return False if it fails."""
        name = sequences.signal
        if signal_name != name:
            self._reject(name, "invalid", f"a message for {signal_name!r} on this channel")
        elif "signal" in kwargs or "sender" in kwargs:
            self._reject(name, "invalid", "arguments named 'signal' or 'sender' are not allowed")
        elif self.codec.signed and abs(_now() - sent_at) > self.max_age_s:
            self._reject(name, "replay", f"message {message_id} is outside the replay window")
        elif not (sequences.accept(origin, seq) if seq else self._unsequenced(message_id, sent_at)):
            self._reject(name, "replay", f"message {message_id} was seen before")
        else:
            return True
        return False

    def _unsequenced(self, message_id: str, sent_at: float) -> bool:
        # A message of format version 1 has no sequence number: with a secret,
        # its id is remembered for the replay window instead. Only senders
        # that are not upgraded yet take this path.
        if not self.codec.signed:
            return True
        seen = self._seen_ids
        if message_id in seen:
            return False
        if len(seen) >= MAX_SEEN_IDS:
            horizon = _now() - self.max_age_s
            for old in [i for i, at in seen.items() if at < horizon] or list(seen)[::2]:
                del seen[old]
        seen[message_id] = sent_at
        return True

    def _reject(self, name: str, reason: str, detail: str) -> None:
        self.stats.reject(reason)
        self.throttle.warning(f"rejected:{reason}", f"Rejected a message on {name}: {detail}")

    def _run_async(
        self,
        signal: Signal,
        sender: object,
        kwargs: dict[str, Any],
        receivers: list[Callable[..., Any]],
        message: MessageFields,
    ) -> list[BaseException | None]:
        """Run async receivers together on the loop; each one's exception (logged) or None."""

        async def call(receiver: Callable[..., Any]) -> Any:
            current_async.set(Message._make(message))  # the task's own context
            return await receiver(signal=signal, sender=sender, **kwargs)

        async def gather() -> list[Any]:
            return await asyncio.gather(*map(call, receivers), return_exceptions=True)

        out: list[BaseException | None] = []
        for receiver, result in zip(receivers, self.loop.run(gather()), strict=True):
            if isinstance(result, Exception):
                out.append(result)
                logger.error(
                    "Error calling %s for %s (message %s)",
                    callable_name(receiver),
                    signal.name,
                    message[0],
                    exc_info=result,
                )
            else:
                out.append(None)
        return out


def _run_hook(hook: Hook, message_id: str) -> None:
    try:
        hook()
    except Exception:
        logger.exception(
            "Error calling the message hook %s (message %s)", callable_name(hook), message_id
        )
