"""The dispatcher's durable path: which receivers a delivery runs, and which of them raised.

A durable message is delivered again until each of its receivers returned
once: :func:`durable_caller` runs those a :class:`~sigbroker.transport.base.Delivery`
does not skip and notes, by the name :func:`receiver_names` gives them
(the same in every process of the service), the ones that raised, with the
error and its traceback, for the source to retry or dead-letter.
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from .codec import Fields
from .errors import InvalidMessage
from .message import MessageFields, running
from .naming import callable_name, qualified_name
from .routing import Receiver
from .signal import Signal
from .stats import Stats
from .transport.base import BatchSink, Delivery, DurableBatch, Outcome

__all__ = ["DurableCaller", "RunAsync", "durable_batch", "durable_caller", "receiver_names"]

#: Calls a durable message's receivers: (cell, delivery, sender reference, arguments, message).
DurableCaller = Callable[
    [list[str | None], Delivery, str | None, dict[str, Any], MessageFields], Outcome
]
#: Runs async receivers on the worker's loop: each one's exception (logged) or None.
RunAsync = Callable[
    [Signal, object, dict[str, Any], list[Receiver], MessageFields], list[BaseException | None]
]

PROCESSED, FAILED = Outcome.PROCESSED, Outcome.FAILED

logger = logging.getLogger(__name__)


def durable_caller(
    signal: Signal, stats: Stats, *, threads: int, run_async: RunAsync
) -> DurableCaller:
    """The function that calls ``signal``'s receivers for one durable delivery, and counts.

    Like the dispatcher's pub/sub caller, robustly, with the message in
    ``cell`` and :func:`~sigbroker.current_message`; it skips the
    receivers the delivery names (or runs only its ``only``) and notes each
    one that raised by name in the delivery. The common case (a first
    delivery to sync receivers) takes a short path; ``threads`` above 1
    counts under the stats' lock. The hooks are the dispatcher's to add.
    """
    receivers_for = signal.remote_receivers
    lock = stats.lock if threads > 1 else None
    here = running

    def call(
        cell: list[str | None],
        delivery: Delivery,
        sender_ref: str | None,
        kwargs: dict[str, Any],
        message: MessageFields,
    ) -> Outcome:
        cell[0] = message[0]
        here.message = message
        sender, sync_receivers, async_receivers = receivers_for(sender_ref)
        failed = 0
        if async_receivers or delivery.skip or delivery.only is not None:
            everything = sync_receivers + async_receivers
            first_async = len(sync_receivers)
            failed = _run_chosen(
                signal, run_async, delivery, sender, everything, first_async, kwargs, message
            )
        else:
            errors: list[tuple[int, BaseException]] | None = None
            for i, receiver in enumerate(sync_receivers):
                try:
                    receiver(signal=signal, sender=sender, **kwargs)
                except Exception as exc:
                    _log_failure(receiver, message, delivery)
                    errors = errors or []
                    errors.append((i, exc))
            if errors:
                _note(delivery, sync_receivers, range(len(sync_receivers)), errors)
                failed = len(errors)
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

    return call


def durable_batch(
    signal: Signal,
    group: str,
    read: Callable[[bytes], Fields],
    reject: Callable[[str, str, str], None],
    call: DurableCaller,
    cell: list[str | None],
    stats: Stats,
) -> DurableBatch:
    """The lean path: a batch of first deliveries of ``signal`` on the reading thread.

    What :func:`durable_caller` does for one delivery, in one loop for the
    batch, with no object made per message unless a receiver raises: the
    receivers of each sender are looked up once per batch, and the counters
    are added once. A message with async receivers goes through ``call``.
    Only for a worker without a pool and without message hooks.
    """
    name = signal.name
    receivers_for = signal.remote_receivers
    here = running

    def run(stream: bytes, entries: list[Any], acks: deque[bytes], sink: BatchSink) -> int:
        stream_name = stream.decode()
        plans: dict[str | None, tuple[object, list[Receiver], list[Receiver]]] = {}
        processed = failed = 0
        handled = 0
        for entry, fields in entries:
            if sink.stopping:
                break
            handled += 1
            if len(fields) != 2:
                sink.unusual(stream, entry, fields)
                continue
            data = fields[1]
            try:
                signal_name, sender_ref, kwargs, message_id, sent_at, origin, _ = read(data)
            except InvalidMessage as exc:
                reject(name, exc.reason, str(exc))
                acks.append(entry)
                continue
            if signal_name != name or "signal" in kwargs or "sender" in kwargs:
                reject(name, "invalid", _refusal(signal_name, name))
                acks.append(entry)
                continue
            sender, sync_receivers, async_receivers = plans.get(sender_ref) or plans.setdefault(
                sender_ref, receivers_for(sender_ref)
            )
            # The entry id stays bytes here: current_message() decodes it if asked.
            message = (message_id, name, origin, sent_at, 1, entry, group)
            if async_receivers:
                message = (message_id, name, origin, sent_at, 1, entry.decode(), group)
                delivery = Delivery(stream_name, entry.decode(), data)
                if call(cell, delivery, sender_ref, kwargs, message) is FAILED:
                    sink.failed(stream, entry, delivery)
                else:
                    acks.append(entry)
                continue
            cell[0] = message_id
            here.message = message
            errors: list[tuple[int, BaseException]] | None = None
            for i, receiver in enumerate(sync_receivers):
                try:
                    receiver(signal=signal, sender=sender, **kwargs)
                except Exception as exc:
                    errors = errors or []
                    errors.append((i, exc))
                    logger.exception(
                        "Error calling %s for %s (message %s, entry %s, delivery 1)",
                        callable_name(receiver),
                        name,
                        message_id,
                        entry.decode(),
                    )
            processed += 1
            if errors:
                delivery = Delivery(stream_name, entry.decode(), data)
                _note(delivery, sync_receivers, range(len(sync_receivers)), errors)
                failed += len(errors)
                sink.failed(stream, entry, delivery)
            else:
                acks.append(entry)
        cell[0] = None
        here.message = None
        stats.add(processed=processed, failed=failed)  # once a batch: under the lock
        return handled

    return run


def _refusal(signal_name: str, name: str) -> str:
    if signal_name != name:
        return f"a message for {signal_name!r} on this stream"
    return "arguments named 'signal' or 'sender' are not allowed"


def receiver_names(receivers: list[Receiver]) -> list[str]:
    """The receivers' names as durable delivery records them: ``module.QualName``.

    The same in every process of a service (they name the receivers that
    succeeded, across retries and claims, and the one a replay runs): a
    callable object is named after its class, and the second receiver of one
    name gets ``#2``.
    """
    seen: dict[str, int] = {}
    names = []
    for receiver in receivers:
        named = getattr(receiver, "__qualname__", None)
        name = qualified_name(receiver if isinstance(named, str) else type(receiver))
        seen[name] = count = seen.get(name, 0) + 1
        names.append(name if count == 1 else f"{name}#{count}")
    return names


def _run_chosen(
    signal: Signal,
    run_async: RunAsync,
    delivery: Delivery,
    sender: object,
    everything: list[Receiver],
    first_async: int,
    kwargs: dict[str, Any],
    message: MessageFields,
) -> int:
    """Run the receivers of a durable delivery that it does not skip; note failures; count them.

    ``everything`` holds the sync receivers, then (from ``first_async``) the async ones.
    """
    # Positions in ``everything`` of the receivers to run this time.
    runs: range | list[int] = range(len(everything))
    if delivery.skip or delivery.only is not None:
        names = receiver_names(everything)
        runs = [i for i in runs if _runs(names[i], delivery.skip, delivery.only)]
    errors: list[tuple[int, BaseException]] = []
    for i in runs:
        if i >= first_async:
            break
        try:
            everything[i](signal=signal, sender=sender, **kwargs)
        except Exception as exc:
            errors.append((i, exc))
            _log_failure(everything[i], message, delivery)
    async_runs = [i for i in runs if i >= first_async]
    if async_runs:
        chosen = [everything[i] for i in async_runs]
        results = run_async(signal, sender, kwargs, chosen, message)
        errors += [(i, e) for i, e in zip(async_runs, results, strict=True) if e is not None]
    if errors:
        _note(delivery, everything, runs, errors)
    return len(errors)


def _runs(name: str, skip: frozenset[str], only: str | None) -> bool:
    return name not in skip and (only is None or name == only)


def _log_failure(receiver: Receiver, message: MessageFields, delivery: Delivery) -> None:
    logger.exception(
        "Error calling %s for %s (message %s, entry %s, delivery %d)",
        callable_name(receiver),
        message[1],
        message[0],
        delivery.entry,
        delivery.deliveries,
    )


def _note(
    delivery: Delivery,
    receivers: list[Receiver],
    ran: range | list[int],
    errors: list[tuple[int, BaseException]],
) -> None:
    """Note in ``delivery`` which receivers (by position) raised, and which of ``ran`` returned."""
    names = receiver_names(receivers)
    for i, exc in errors:
        text = "".join(traceback.format_exception(exc))
        delivery.failures[names[i]] = (f"{type(exc).__qualname__}: {exc}", text)
    failed = {i for i, _ in errors}
    delivery.succeeded.extend(names[i] for i in ran if i not in failed)
