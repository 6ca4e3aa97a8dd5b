"""A durable consumer's messages whose receivers raised: retried alone, then dead-lettered.

:class:`Retries` keeps the messages that wait for another delivery (a
retry after a backoff, or a message claimed from a dead consumer, due at
once) and the group's bookkeeping of them in ``{namespace}:retry:{group}``:
how many attempts each had and which receivers succeeded, so that any worker
of the group that takes it over runs only the others and counts on from
there. Past ``max_deliveries`` a message goes to ``{namespace}:dlq:{group}``,
one entry per failing receiver, and is acknowledged in the same transaction.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from time import monotonic
from typing import Any, NamedTuple

from ..backoff import compute_backoff
from ..durable import DLQ_MAXLEN, ConsumerOptions, dlq_key, lost_key, retry_field, retry_key
from ..errors import BrokerUnavailable
from ..stats import Stats
from ..throttle import Throttle
from .base import Delivery
from .redis_link import Link, command

__all__ = ["Retries", "Waiting", "read_entry"]

logger = logging.getLogger(__name__)

#: First retry delay of a receiver that raised; doubles each attempt, with jitter.
RETRY_BASE_S = 1.0
#: Longest retry delay.
RETRY_MAX_S = 60.0


#: Acknowledges entries gone from the stream and counts those it removed from the
#: pending list (or, with ARGV[2] = 0, all of them: Redis removed them already).
#: KEYS: stream, lost hash, retry hash; ARGV: group, pending, n, n entry ids, n fields.
LOST_SCRIPT = """
local n = tonumber(ARGV[3])
local counted = 0
for i = 4, 3 + n do
  local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  if ARGV[2] == '0' then acked = 1 end
  counted = counted + acked
  redis.call('HDEL', KEYS[3], ARGV[i + n])
end
if counted > 0 then redis.call('HINCRBY', KEYS[2], KEYS[1], counted) end
return counted
"""


def read_entry(values: list[bytes]) -> tuple[bytes, str | None, str | None, frozenset[str]]:
    """A stream entry's fields: the message, and for a replayed dead letter its group,
    its one receiver, or the receivers it skips."""
    record = dict(zip(values[::2], values[1::2], strict=False))
    group, only, skip = record.get(b"g"), record.get(b"r"), record.get(b"s")
    return (
        record.get(b"d", b""),
        None if group is None else group.decode(errors="replace"),
        None if only is None else only.decode(errors="replace"),
        _names(skip) if skip else frozenset(),
    )


def _names(raw: bytes) -> frozenset[str]:
    # A replay's list of receivers to skip; anything else skips none (the
    # message itself is checked by the dispatcher as any other).
    try:
        names = json.loads(raw)
    except ValueError:
        return frozenset()
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return frozenset(names)
    return frozenset()


class Waiting(NamedTuple):
    """A message due for another delivery (heap order: due time, then arrival)."""

    due: float
    order: int
    stream: bytes
    entry: bytes
    data: bytes
    deliveries: int
    skip: frozenset[str]
    only: str | None


class Retries:
    """The messages waiting for another delivery, and the group's record of their attempts."""

    def __init__(
        self,
        link: Link,
        *,
        options: ConsumerOptions,
        consumer: str,
        namespace: str,
        stats: Stats,
        throttle: Throttle,
    ) -> None:
        self._link = link
        self._options = options
        self._group = options.group
        self._consumer = consumer
        self._stats = stats
        self._throttle = throttle
        self._dlq = dlq_key(namespace, self._group)
        #: The group's hashes: attempts of the messages being retried, and its losses.
        self.key = retry_key(namespace, self._group)
        self.lost_key = lost_key(namespace, self._group)
        self._heap: list[Waiting] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        # Messages with a field in the retry hash, deleted when they are acknowledged.
        self._noted: set[tuple[bytes, bytes]] = set()
        # Dead letters that could not be written yet (Redis away): tried again each pulse.
        self._letters: list[tuple[bytes, bytes, bytes, int, list[tuple[str, str, str]], list[str]]]
        self._letters = []

    def __len__(self) -> int:
        return len(self._heap)

    def next_due(self) -> float | None:
        """When the first waiting message is due (``time.monotonic()``), or None."""
        heap = self._heap
        return heap[0].due if heap else None

    def pop_due(self, now: float) -> Waiting | None:
        """The first message due by ``now``, taken off the heap; None if none is."""
        with self._lock:
            if self._heap and self._heap[0].due <= now:
                return heapq.heappop(self._heap)
        return None

    def held(self) -> list[tuple[bytes, bytes]]:
        """The (stream, entry) of every waiting message (dead letters not written yet too)."""
        with self._lock:
            return [(w.stream, w.entry) for w in self._heap] + [
                (letter[0], letter[1]) for letter in self._letters
            ]

    def write_letters(self) -> None:
        """Try again the dead letters that could not be written (the pulse calls it)."""
        with self._lock:
            letters, self._letters = self._letters, []
        for letter in letters:
            self.dead_letter(*letter)

    def wait(
        self,
        due: float,
        stream: bytes,
        entry: bytes,
        data: bytes,
        deliveries: int,
        skip: frozenset[str],
        only: str | None,
    ) -> None:
        """Have the message delivered again at ``due``, as delivery number ``deliveries``."""
        item = Waiting(due, next(self._order), stream, entry, data, deliveries, skip, only)
        with self._lock:
            heapq.heappush(self._heap, item)

    def forget(self, stream: bytes, entries: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """The commands that drop the record of ``entries`` (acknowledged now), and whose."""
        noted = self._noted
        if not noted:
            return [], []
        done = [e for e in entries if (stream, e) in noted]
        if not done:
            return [], []
        noted.difference_update((stream, e) for e in done)
        name = stream.decode()
        fields = (retry_field(name, e.decode()) for e in done)
        return [command("HDEL", self.key, *fields)], done

    def renote(self, stream: bytes, entries: list[bytes]) -> None:
        """``entries`` still have a record: their acknowledgement did not reach Redis."""
        self._noted.update((stream, e) for e in entries)

    def failed(self, stream: bytes, entry: bytes, delivery: Delivery) -> None:
        """Some receivers raised: retry them later, or dead-letter them past the limit."""
        done = sorted(delivery.skip.union(delivery.succeeded))
        n = delivery.deliveries
        if n >= self._options.max_deliveries:
            failures = [(name, error, trace) for name, (error, trace) in delivery.failures.items()]
            self.dead_letter(stream, entry, delivery.data, n, failures, done)
            return
        delay = compute_backoff(n, base_s=RETRY_BASE_S, max_s=RETRY_MAX_S)
        field = retry_field(delivery.stream, delivery.entry)
        try:
            self._link.run(command("HSET", self.key, field, json.dumps({"n": n, "done": done})))
            self._noted.add((stream, entry))
        except BrokerUnavailable as exc:  # the retry still happens here; others may count less
            logger.debug("Could not note the attempts of %s: %s", field, exc)
        skip = frozenset(done)
        self.wait(monotonic() + delay, stream, entry, delivery.data, n + 1, skip, delivery.only)
        self._stats.add(retried=1)
        self._throttle.warning(
            f"retry:{delivery.stream}",
            f"{', '.join(delivery.failures) or 'a receiver'} raised on {delivery.stream} "
            f"(entry {delivery.entry}, delivery {n} of {self._options.max_deliveries}); "
            f"retrying in {delay:.1f}s",
        )

    def dead_letter(
        self,
        stream: bytes,
        entry: bytes,
        data: bytes,
        deliveries: int,
        failures: list[tuple[str, str, str]],
        done: list[str],
    ) -> None:
        """Put the message in the group's dead letters (one entry per receiver), then ack it.

        ``failures`` are (receiver, error line, traceback); a receiver named
        ``""`` stands for every receiver not in ``done``.
        """
        name = stream.decode()
        signal = name.split(":stream:", 1)[-1]
        now = f"{time.time():.6f}"
        adds = [
            command(
                "XADD",
                self._dlq,
                "MAXLEN",
                "~",
                DLQ_MAXLEN,
                "*",
                "d",
                data,
                "signal",
                signal,
                "stream",
                name,
                "entry",
                entry,
                "receiver",
                receiver,
                "error",
                error,
                "traceback",
                trace,
                "deliveries",
                deliveries,
                "worker",
                self._consumer,
                "failed_at",
                now,
                "done",
                json.dumps(done),
            )
            for receiver, error, trace in failures
        ]
        try:
            self._link.run(
                command("MULTI"),
                *adds,
                command("XACK", stream, self._group, entry),
                command("HDEL", self.key, retry_field(name, entry.decode())),
                command("EXEC"),
            )
        except BrokerUnavailable as exc:
            # Still pending on this worker, which tries again at its next pulse.
            logger.error("Could not dead-letter %s %s yet: %s", name, entry.decode(), exc)
            with self._lock:
                self._letters.append((stream, entry, data, deliveries, failures, done))
            return
        self._noted.discard((stream, entry))
        self._stats.add(dead_lettered=len(failures))
        self._throttle.warning(
            f"dlq:{name}",
            f"Dead-lettered {name} entry {entry.decode()} after {deliveries} deliveries "
            f"to {self._dlq}: "
            + "; ".join(f"{r or 'its receivers'}: {error}" for r, error, _ in failures),
        )

    def lost(self, stream: bytes, entries: list[bytes], why: str, *, pending: bool = True) -> None:
        """Entries gone from the stream while pending: acknowledged, counted, never run.

        Each is counted by the worker whose acknowledgement removed it from
        the pending list (one script), so two workers that find it gone, or a
        retried round trip, count it once. ``pending=False``: Redis removed
        them already (``XAUTOCLAIM`` reports them to its caller only).
        """
        name = stream.decode()
        fields = [retry_field(name, e.decode()) for e in entries]
        try:
            (counted,) = self._link.run(
                command(
                    "EVAL",
                    LOST_SCRIPT,
                    3,
                    stream,
                    self.lost_key,
                    self.key,
                    self._group,
                    int(pending),
                    len(entries),
                    *entries,
                    *fields,
                )
            )
        except BrokerUnavailable as exc:  # still pending: found and counted again later
            logger.debug("Could not acknowledge lost entries: %s", exc)
            return
        if isinstance(counted, int):
            self.counted_lost(stream, counted, why)

    def counted_lost(self, stream: bytes, count: int, why: str) -> None:
        """``count`` entries of ``stream`` were counted lost in Redis: count and say so here."""
        if count > 0:
            self._stats.add(lost=count)
            name = stream.decode()
            self._throttle.warning(
                f"lost:{name}", f"{count} entries of {name} were {why}: counted as lost"
            )

    def take_over(
        self, stream: bytes, entries: list[tuple[bytes, list[bytes]]], *, dead_holder: bool
    ) -> None:
        """Messages claimed (or found in this consumer's history): due now, or dead letters.

        A dead holder may have been running a message when it died: that
        counts as an attempt, unless a warm stop handed the message back.
        """
        name = stream.decode()
        fields = [retry_field(name, e.decode()) for e, _ in entries]
        (states,) = self._link.run(command("HMGET", self.key, *fields))
        writes: list[str] = []
        now = monotonic()
        others: list[bytes] = []
        for (entry, values), field, raw in zip(entries, fields, states, strict=True):
            data, group, only, skip = read_entry(values)
            if group is not None and group != self._group:
                others.append(entry)  # another group's replay: not this group's to run
                continue
            state: dict[str, Any] = json.loads(raw) if raw else {}
            cut_short = dead_holder and not state.get("returned")
            attempts = int(state.get("n", 0)) + cut_short
            done = sorted(skip.union(state.get("done", [])))
            if attempts >= self._options.max_deliveries:
                error = f"WorkerLost: its workers stopped while holding it ({attempts} deliveries)"
                self.dead_letter(stream, entry, data, attempts, [("", error, "")], done)
                continue
            writes += [field, json.dumps({"n": attempts, "done": done})]
            self._noted.add((stream, entry))
            self.wait(now, stream, entry, data, attempts + 1, frozenset(done), only)
        if others:
            self._link.run(command("XACK", stream, self._group, *others))
        if writes:
            self._link.run(command("HSET", self.key, *writes))
        self._stats.add(claimed=len(entries))

    def hand_back(self, entries: list[tuple[bytes, bytes]]) -> None:
        """A warm stop: ``entries`` (read, not started) and every waiting one left pending.

        Each is marked as handed back, so that the worker that claims it does
        not count an attempt that never ran.
        """
        with self._lock:
            waiting, self._heap = self._heap, []
        marks: list[str] = []
        for stream, entry in entries:
            marks += [retry_field(stream.decode(), entry.decode()), '{"n": 0, "returned": true}']
        for w in waiting:
            state = {"n": w.deliveries - 1, "done": sorted(w.skip), "returned": True}
            marks += [retry_field(w.stream.decode(), w.entry.decode()), json.dumps(state)]
        if marks:
            try:
                self._link.run(command("HSET", self.key, *marks))
            except BrokerUnavailable as exc:
                logger.debug("Could not mark the messages handed back: %s", exc)
