"""Durable delivery on Redis Streams: append with retention, consume in groups.

Sending: :func:`append_command` frames one ``EVAL`` of :data:`APPEND_SCRIPT`
(``XADD`` with an approximate ``MAXLEN``, then the number of consumer groups
of the stream), which the publisher carries like a ``PUBLISH``: group commit,
batches, no retry once written.

Consuming: a :class:`StreamConsumer` reads the streams of a worker's durable
signals as one consumer (the worker's id) of a group (the service), on a
connection of its own. Acknowledgements of finished messages go in the same
write as the next read. Per receiver at-least-once: a message whose
receivers all returned is acknowledged; when some raised, the group's retry
hash notes the attempts and the receivers that succeeded, and the failing
ones run again alone after a backoff, until ``max_deliveries`` sends the
message to the group's dead letters. The worker's pulse (:meth:`pulse`, on
a second connection) keeps what this worker holds from looking idle, claims
the messages of dead consumers and of anything idle past ``claim_idle_s``,
removes dead consumers once nothing is pending on them, and counts what the
group lost to trimming. Everything speaks RESP2 on our own connections, so
the replies have one shape whatever redis-py and its protocol.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

import redis

from ..backoff import compute_backoff
from ..durable import DLQ_MAXLEN, ConsumerOptions, dlq_key, lost_key, retry_field, retry_key
from ..errors import BrokerUnavailable
from ..stats import Stats
from ..throttle import Throttle
from .base import Delivery, DurableHandler, Outcome, Source, Stream
from .redis_endpoint import CONNECTION_ERRORS, Endpoint, Replies

__all__ = ["APPEND_SCRIPT", "StreamConsumer", "append_command", "command"]

logger = logging.getLogger(__name__)

#: XADD with retention, then how many groups will read the entry: one round trip.
APPEND_SCRIPT = (
    b"redis.call('XADD',KEYS[1],'MAXLEN','~',ARGV[1],'*','d',ARGV[2]) "
    b"return #redis.call('XINFO','GROUPS',KEYS[1])"
)
#: Counts what a group lost to trimming once, whichever of its workers sees it first.
LOST_SCRIPT = """
local base = redis.call('HGET', KEYS[1], ARGV[1] .. '|base')
local d = tonumber(ARGV[2])
if base == false or tonumber(ARGV[3]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1] .. '|base', math.max(d, 0))
  return 0
end
base = tonumber(base)
redis.call('HSET', KEYS[1], ARGV[1] .. '|base', d)
if d > base then
  redis.call('HINCRBY', KEYS[1], ARGV[1], d - base)
  return d - base
end
return 0
"""

#: Entries one read takes per stream.
READ_COUNT = 100
#: Longest a read blocks: the stop flag is checked at least this often.
BLOCK_MS = 1000
#: First retry delay of a receiver that raised; doubles each attempt, with jitter.
RETRY_BASE_S = 1.0
#: Longest retry delay.
RETRY_MAX_S = 60.0
#: Messages waiting for a retry before the reader stops taking new ones.
MAX_WAITING = 10_000
#: A consumer without a heartbeat idle this long is dead: its messages are claimed.
DEAD_IDLE_MS = 5000
#: Held messages older than this get their idle time reset by the pulse.
REFRESH_AFTER_S = 2.0
#: Entries claimed at once.
CLAIM_COUNT = 100
#: Batches of a dead consumer's entries one pulse claims.
CLAIM_ROUNDS = 20
#: Longest wait before a reconnect.
RECONNECT_MAX_S = 5.0
#: Stands for a read when the reader takes nothing new: its reply is no batch.
_NOTHING = b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"


def command(*args: bytes | str | int | float) -> bytes:
    """One command in Redis's protocol."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def append_command(stream: Stream) -> bytes:
    """The EVAL that appends to ``stream``, up to (not including) the message."""
    key = stream.key.encode()
    maxlen = str(stream.maxlen).encode()
    return b"*6\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(APPEND_SCRIPT),
        APPEND_SCRIPT,
        len(key),
        key,
        len(maxlen),
        maxlen,
    )


def _pairs(flat: list[Any]) -> dict[str, Any]:
    # A RESP2 map (XINFO's replies): alternate names and values.
    it = iter(flat)
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): v for k, v in zip(it, it, strict=False)
    }


def _id(entry: bytes) -> tuple[int, int]:
    ms, _, seq = entry.partition(b"-")
    return int(ms), int(seq or 0)


class _Link:
    """A RESP2 connection of the consumer's own for the commands off the read path.

    Used by the pulse thread and by whatever thread finishes a failing
    message; one round trip at a time. Connection errors are retried within
    the endpoint's budget: every command sent here may run twice harmlessly
    (claims, acks, hash writes), but for a dead letter, which a retry may
    write twice.
    """

    def __init__(self, endpoint: Endpoint, use_hiredis: bool) -> None:
        self._endpoint = endpoint
        self._use_hiredis = use_hiredis
        self._lock = threading.Lock()
        self._conn: Any = None
        self._replies: Replies | None = None

    def run(self, *commands: bytes) -> list[Any]:
        """Send ``commands`` (framed by :func:`command`) as one pipeline; return the replies."""
        payload = b"".join(commands)
        with self._lock:
            return self._endpoint.retrying(
                lambda: self._try(payload, len(commands)), CONNECTION_ERRORS
            )

    def _try(self, payload: bytes, count: int) -> list[Any]:
        try:
            if self._conn is None or self._replies is None:
                self._conn = self._endpoint.connect()
                self._replies = Replies(self._conn, use_hiredis=self._use_hiredis)
            self._conn._sock.sendall(payload)
            return self._replies.read(count)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn, self._replies = self._conn, None, None
        if conn is not None:
            conn.disconnect()


class StreamConsumer(Source):
    """The durable signals' streams, read as one consumer of a group (see the module).

    ``routes`` maps each stream key to the dispatcher's durable handler of its
    signal. :meth:`run` reads on the calling thread; :meth:`pulse` is called
    by the worker's pulse thread every few seconds.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        routes: Mapping[str, DurableHandler],
        *,
        options: ConsumerOptions,
        consumer: str,
        namespace: str,
        alive_key: Callable[[str], str],
        stats: Stats,
        use_hiredis: bool,
    ) -> None:
        self.ready = threading.Event()
        self._endpoint = endpoint
        self._options = options
        self._group = options.group
        self._consumer = consumer
        self._alive_key = alive_key
        self._stats = stats
        self._use_hiredis = use_hiredis
        self._handlers = {key.encode(): handler for key, handler in routes.items()}
        self._streams = sorted(self._handlers)
        self._dlq = dlq_key(namespace, self._group)
        self._retry = retry_key(namespace, self._group)
        self._lost = lost_key(namespace, self._group)
        self._link = _Link(endpoint, use_hiredis)
        self._throttle = Throttle(logger)
        block_ms = max(1, min(BLOCK_MS, int(endpoint.socket_timeout_s * 500)))
        self._read = self._read_command(block_ms)
        self._read_now = self._read_command(None)
        # Finished messages to acknowledge with the next read, per stream
        # (deques: appended from pool threads, emptied by the reader).
        self._acks: dict[bytes, deque[bytes]] = {s: deque() for s in self._streams}
        # What this worker holds, that the pulse keeps from looking idle: the
        # batch running (stream, entries, since), the messages in a pool, and
        # those waiting for a retry.
        self._batch: list[Any] | None = None
        self._pooled: dict[tuple[bytes, bytes], float] = {}
        self._pooled_early: set[tuple[bytes, bytes]] = set()
        # Messages with a field in the retry hash, to delete on acknowledgement.
        self._stateful: set[tuple[bytes, bytes]] = set()
        # (due, n, stream, entry, data, deliveries, skip, only): retries and claims.
        self._waiting: list[tuple[float, int, bytes, bytes, bytes, int, frozenset[str], str | None]]
        self._waiting = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._stop_now = False
        self._draining = False
        self._created: set[bytes] = set()

    def _read_command(self, block_ms: int | None) -> bytes:
        # New entries of every stream; blocking up to block_ms when there are none.
        block = () if block_ms is None else ("BLOCK", block_ms)
        return command(
            "XREADGROUP",
            "GROUP",
            self._group,
            self._consumer,
            "COUNT",
            READ_COUNT,
            *block,
            "STREAMS",
            *self._streams,
            *([">"] * len(self._streams)),
        )

    # -- the reader -----------------------------------------------------------

    def run(self) -> None:
        """Read and dispatch until stopped; reconnect with backoff on connection errors."""
        attempt = 0
        conn: Any = None
        while not (self._stop_now or self._draining):
            try:
                conn = self._endpoint.connect()
                replies = Replies(conn, use_hiredis=self._use_hiredis)
                self._setup(conn, replies)
                self.ready.set()
                attempt = 0
                self._loop(conn, replies)
            except CONNECTION_ERRORS as exc:
                self.ready.clear()
                attempt += 1
                self._stats.add(resubscribes=1)
                delay = compute_backoff(attempt, base_s=0.1, max_s=RECONNECT_MAX_S)
                self._throttle.warning(
                    "reconnect",
                    f"Durable consumer {self._consumer} lost Redis at {self._endpoint.display} "
                    f"({self._endpoint.detail(exc)}); reconnecting in {delay:.1f}s",
                )
                self._sleep(delay)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise BrokerUnavailable(
                        f"Redis at {self._endpoint.display} refused the durable read "
                        f"({self._endpoint.detail(exc)})"
                    ) from None
                logger.warning("Group %s was deleted; creating it again", self._group)
                self._created.clear()
            finally:
                if conn is not None:
                    conn.disconnect()
                    conn = None
        self.ready.clear()
        if not self._stop_now:
            self._finish()

    def _sleep(self, seconds: float) -> None:
        end = monotonic() + seconds
        while not (self._stop_now or self._draining) and monotonic() < end:
            time.sleep(min(0.1, end - monotonic()))

    def _setup(self, conn: Any, replies: Replies) -> None:
        """Create the groups that are missing; take back what Redis holds for this consumer."""
        start = "0" if self._options.from_start else "$"
        for stream in self._streams:
            if stream in self._created:
                continue
            conn._sock.sendall(command("XGROUP", "CREATE", stream, self._group, start, "MKSTREAM"))
            (reply,) = replies.read(1)
            if not isinstance(reply, redis.ResponseError):
                logger.info("Created group %s on %s at %s", self._group, stream.decode(), start)
                self._count_trimmed(stream, created=True)
            elif "BUSYGROUP" not in str(reply):
                raise reply
            self._created.add(stream)
        # Entries Redis delivered to this consumer and this worker does not
        # hold (a read whose reply a broken connection lost): its history.
        conn._sock.sendall(
            command(
                "XREADGROUP",
                "GROUP",
                self._group,
                self._consumer,
                "COUNT",
                1000,
                "STREAMS",
                *self._streams,
                *(["0"] * len(self._streams)),
            )
        )
        (history,) = replies.read(1)
        held = self._holding()
        for stream, entries in history or ():
            lost = [e for e, f in entries if not f and (stream, e) not in held]
            if lost:
                self._count_lost(stream, lost, "deleted or trimmed while pending")
            mine = [(e, f) for e, f in entries if f and (stream, e) not in held]
            if mine:
                self._take_over(stream, mine, dead_holder=False)

    def _loop(self, conn: Any, replies: Replies) -> None:
        # The next read goes out before the batch in hand runs: Redis gathers
        # it while the receivers work. Acks of finished messages ride along.
        sock = conn._sock
        read = replies.read
        sent = self._request(sock)
        while True:
            batch = read(sent)[-1]
            if isinstance(batch, redis.ResponseError):
                raise batch
            if self._stop_now or self._draining:
                if batch:  # read after the stop: back to the group, untouched
                    self._hand_back([(s, e) for s, entries in batch for e, _ in entries])
                return
            sent = self._request(sock)
            if batch:
                self._dispatch(batch)
            if self._waiting and self._waiting[0][0] <= monotonic():
                self._run_due()

    def _request(self, sock: Any) -> int:
        """Send the acks of what finished and the next read; return how many replies come."""
        commands = self._ack_commands()
        waiting = self._waiting
        if len(waiting) >= MAX_WAITING:
            # Too much waiting for a retry already: take nothing new for now.
            self._sleep(0.1)
            commands.append(_NOTHING)
        elif waiting and waiting[0][0] - monotonic() < BLOCK_MS / 1000:
            commands.append(self._read_now)
        else:
            commands.append(self._read)
        sock.sendall(b"".join(commands))
        return len(commands)

    def _ack_commands(self) -> list[bytes]:
        """The XACKs (and retry-hash deletions) of what finished."""
        out: list[bytes] = []
        stateful = self._stateful
        for stream, pending in self._acks.items():
            if not pending:
                continue
            ids = [pending.popleft() for _ in range(len(pending))]
            out.append(command("XACK", stream, self._group, *ids))
            if stateful:
                done = [e for e in ids if (stream, e) in stateful]
                if done:
                    stateful.difference_update((stream, e) for e in done)
                    fields = [retry_field(stream.decode(), e.decode()) for e in done]
                    out.append(command("HDEL", self._retry, *fields))
        return out

    def _dispatch(self, batch: list[Any]) -> None:
        # The worker's per-message path: one Delivery and one handler call each.
        pooled_done = self._pooled_done
        for stream, entries in batch:
            handler = self._handlers[stream]
            acks = self._acks[stream]
            name = stream.decode()
            self._batch = [stream, entries, monotonic()]
            for i, (entry, fields) in enumerate(entries):
                if self._draining or self._stop_now:
                    self._batch = None
                    self._hand_back([(stream, e) for e, _ in entries[i:]])
                    return
                if len(fields) != 2:
                    self._unusual(stream, entry, fields)
                    continue
                delivery = Delivery(name, entry.decode(), fields[1])
                outcome = handler(delivery, pooled_done)
                if outcome is None:
                    self._pooled_out(stream, entry)
                elif outcome is Outcome.FAILED:
                    self._failed(stream, entry, delivery)
                else:
                    acks.append(entry)
        self._batch = None

    def _pooled_out(self, stream: bytes, entry: bytes) -> None:
        # A message handed to a pool: held until _pooled_done (which may come first).
        key = (stream, entry)
        with self._lock:
            if key in self._pooled_early:
                self._pooled_early.discard(key)
            else:
                self._pooled[key] = monotonic()

    def _pooled_done(self, delivery: Delivery, outcome: Outcome) -> None:
        # A message handed to a pool finished, in the pool's thread.
        stream, entry = delivery.stream.encode(), delivery.entry.encode()
        try:
            if outcome is Outcome.FAILED:
                self._failed(stream, entry, delivery)
            else:
                self._acks[stream].append(entry)
        finally:
            with self._lock:
                if self._pooled.pop((stream, entry), None) is None:
                    self._pooled_early.add((stream, entry))

    def _holding(self) -> dict[tuple[bytes, bytes], float]:
        """What this worker holds (read and not finished) and since when."""
        held: dict[tuple[bytes, bytes], float] = {}
        batch = self._batch
        if batch is not None:
            stream, entries, since = batch
            held.update(((stream, e), since) for e, _ in entries)
        with self._lock:
            held.update(self._pooled)
            held.update(((w[2], w[3]), 0.0) for w in self._waiting)
        return held

    def _unusual(self, stream: bytes, entry: bytes, fields: list[bytes] | None) -> None:
        """An entry that is not a plain message: a replayed dead letter, or deleted."""
        if not fields:
            self._count_lost(stream, [entry], "deleted while pending")
            return
        record = dict(zip(fields[::2], fields[1::2], strict=False))
        data = record.get(b"d")
        group = record.get(b"g")
        if data is None or (group is not None and group.decode() != self._group):
            self._acks[stream].append(entry)  # another group's replay, or not ours to read
            return
        only = record.get(b"r")
        skip = frozenset(json.loads(record[b"s"])) if b"s" in record else frozenset()
        self._run(stream, entry, data, 1, skip, only.decode() if only else None)

    def _run(
        self,
        stream: bytes,
        entry: bytes,
        data: bytes,
        deliveries: int,
        skip: frozenset[str],
        only: str | None,
    ) -> None:
        delivery = Delivery(stream.decode(), entry.decode(), data, deliveries, skip, only)
        outcome = self._handlers[stream](delivery, self._pooled_done)
        if outcome is None:
            self._pooled_out(stream, entry)
        elif outcome is Outcome.FAILED:
            self._failed(stream, entry, delivery)
        else:
            self._acks[stream].append(entry)

    def _run_due(self) -> None:
        now = monotonic()
        while self._waiting and self._waiting[0][0] <= now:
            if self._draining or self._stop_now:
                return
            with self._lock:
                _, _, stream, entry, data, deliveries, skip, only = heapq.heappop(self._waiting)
            self._run(stream, entry, data, deliveries, skip, only)

    def _wait(
        self,
        due: float,
        stream: bytes,
        entry: bytes,
        data: bytes,
        deliveries: int,
        skip: frozenset[str],
        only: str | None,
    ) -> None:
        with self._lock:
            heapq.heappush(
                self._waiting, (due, next(self._order), stream, entry, data, deliveries, skip, only)
            )

    # -- failures, retries, dead letters --------------------------------------

    def _failed(self, stream: bytes, entry: bytes, delivery: Delivery) -> None:
        """Some receivers raised: retry them later, or dead-letter them past the limit."""
        data = delivery.data
        done = sorted(delivery.skip.union(delivery.succeeded))
        n = delivery.deliveries
        if n >= self._options.max_deliveries:
            failures = [
                (receiver, error, trace) for receiver, (error, trace) in delivery.failures.items()
            ]
            self._dead_letter(stream, entry, data, n, failures, done)
            return
        delay = compute_backoff(n, base_s=RETRY_BASE_S, max_s=RETRY_MAX_S)
        field = retry_field(delivery.stream, delivery.entry)
        try:
            self._link.run(command("HSET", self._retry, field, json.dumps({"n": n, "done": done})))
            self._stateful.add((stream, entry))
        except BrokerUnavailable as exc:  # the retry still happens here; others may count less
            logger.debug("Could not note the attempts of %s: %s", field, exc)
        self._wait(monotonic() + delay, stream, entry, data, n + 1, frozenset(done), delivery.only)
        self._stats.add(retried=1)
        self._throttle.warning(
            f"retry:{delivery.stream}",
            f"{', '.join(delivery.failures) or 'a receiver'} raised on {delivery.stream} "
            f"(entry {delivery.entry}, delivery {n} of {self._options.max_deliveries}); "
            f"retrying in {delay:.1f}s",
        )

    def _dead_letter(
        self,
        stream: bytes,
        entry: bytes,
        data: bytes,
        deliveries: int,
        failures: list[tuple[str, str, str]],
        done: list[str],
    ) -> None:
        """Put the message in the group's dead letters (one entry per receiver), then ack it."""
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
                command("HDEL", self._retry, retry_field(name, entry.decode())),
                command("EXEC"),
            )
        except BrokerUnavailable as exc:
            # Still pending on this worker: the next claim or restart tries again.
            logger.error("Could not dead-letter %s %s: %s", name, entry.decode(), exc)
            return
        self._stateful.discard((stream, entry))
        self._stats.add(dead_lettered=len(failures))
        self._throttle.warning(
            f"dlq:{name}",
            f"Dead-lettered {name} entry {entry.decode()} after {deliveries} deliveries "
            f"to {self._dlq}: "
            + "; ".join(
                f"{receiver or 'its receivers'}: {error}" for receiver, error, _ in failures
            ),
        )

    def _count_lost(self, stream: bytes, entries: list[bytes], why: str) -> None:
        """Entries gone from the stream while pending: acknowledged, counted, never run."""
        name = stream.decode()
        try:
            self._link.run(
                command("XACK", stream, self._group, *entries),
                command("HINCRBY", self._lost, name, len(entries)),
                command("HDEL", self._retry, *(retry_field(name, e.decode()) for e in entries)),
            )
        except BrokerUnavailable as exc:
            logger.debug("Could not acknowledge lost entries: %s", exc)
        self._stats.add(lost=len(entries))
        self._throttle.warning(
            f"lost:{name}", f"{len(entries)} entries of {name} were {why}: counted as lost"
        )

    # -- stopping -------------------------------------------------------------

    def _hand_back(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Read and not started (and retries waiting): left pending, marked as not attempted.

        The mark tells the worker that claims them that no delivery of this
        one was cut short: their delivery count is not raised.
        """
        with self._lock:
            waiting, self._waiting = self._waiting, []
        marks: list[tuple[str, str]] = []
        for stream, entry in entries:
            field = retry_field(stream.decode(), entry.decode())
            marks.append((field, json.dumps({"n": 0, "returned": 1})))
        for _, _, s, entry, _, deliveries, skip, _ in waiting:
            state = {"n": deliveries - 1, "done": sorted(skip), "returned": 1}
            marks.append((retry_field(s.decode(), entry.decode()), json.dumps(state)))
        if marks:
            try:
                self._link.run(command("HSET", self._retry, *itertools.chain(*marks)))
            except BrokerUnavailable as exc:
                logger.debug("Could not mark the messages handed back: %s", exc)

    def _finish(self) -> None:
        """A warm stop: wait for the pool's messages, acknowledge what finished, hand back."""
        while not self._stop_now:
            with self._lock:
                if not self._pooled:
                    break
            time.sleep(0.01)
        self._hand_back([])
        acks = self._ack_commands()
        if acks:
            try:
                self._link.run(*acks)
            except BrokerUnavailable as exc:
                logger.warning("Could not acknowledge the last messages (they run again): %s", exc)
        self._link.close()

    def stop(self) -> None:
        """Stop at once; what was read and not finished stays pending for the group."""
        self._stop_now = True

    def drain(self) -> None:
        """Stop warmly: finish the message running, acknowledge, hand the rest back."""
        self._draining = True

    def abandon(self) -> int:
        """Stop at once; nothing is lost (it stays pending for the group): returns 0."""
        self._stop_now = True
        return 0

    # -- the pulse ------------------------------------------------------------

    def pulse(self) -> None:
        """Keep held messages fresh, claim from dead or idle consumers, count trimmed entries."""
        if not self.ready.is_set():
            return
        self._refresh()
        for stream in self._streams:
            self._recover(stream)
            self._count_trimmed(stream)
        self._throttle.flush()

    def _refresh(self) -> None:
        now = monotonic()
        old: dict[bytes, list[bytes]] = {}
        for (stream, entry), since in self._holding().items():
            if now - since > REFRESH_AFTER_S:
                old.setdefault(stream, []).append(entry)
        for stream, entries in old.items():
            for at in range(0, len(entries), 500):
                chunk = entries[at : at + 500]
                self._link.run(
                    command("XCLAIM", stream, self._group, self._consumer, 0, *chunk, "JUSTID")
                )
        batch = self._batch
        if batch is not None and batch[0] in old:
            batch[2] = now  # in place: the reader may have moved to the next batch
        with self._lock:
            for key in self._pooled.keys() & {(s, e) for s, es in old.items() for e in es}:
                self._pooled[key] = now

    def _recover(self, stream: bytes) -> None:
        (consumers,) = self._link.run(command("XINFO", "CONSUMERS", stream, self._group))
        if isinstance(consumers, redis.ResponseError):
            return  # the group is being created again
        others = [_pairs(c) for c in consumers]
        others = [c for c in others if c["name"].decode() != self._consumer]
        if others:
            alive = self._link.run(
                *(command("EXISTS", self._alive_key(c["name"].decode())) for c in others)
            )
            for info, up in zip(others, alive, strict=True):
                if up or info["idle"] < DEAD_IDLE_MS:
                    continue
                if info["pending"]:
                    for _ in range(CLAIM_ROUNDS):  # a pulse takes up to this many batches
                        if self._claim_from(stream, info["name"]) < CLAIM_COUNT:
                            break
                else:
                    self._link.run(
                        command("XGROUP", "DELCONSUMER", stream, self._group, info["name"])
                    )
                    logger.info(
                        "Removed the dead consumer %s from %s", info["name"].decode(), self._group
                    )
        # Anything idle past the bound, whoever holds it.
        idle_ms = int(self._options.claim_idle_s * 1000)
        (reply,) = self._link.run(
            command(
                "XAUTOCLAIM",
                stream,
                self._group,
                self._consumer,
                idle_ms,
                "0-0",
                "COUNT",
                CLAIM_COUNT,
            )
        )
        if isinstance(reply, redis.ResponseError):
            return
        claimed = [(e, f) for e, f in reply[1] if f]
        deleted = [e for e, f in reply[1] if not f] + (list(reply[2]) if len(reply) > 2 else [])
        if deleted:
            self._count_lost(stream, deleted, "deleted or trimmed while pending")
        if claimed:
            self._take_over(stream, claimed, dead_holder=True)

    def _claim_from(self, stream: bytes, consumer: bytes) -> int:
        """Claim a batch of a dead consumer's pending messages; return how many were pending."""
        (pending,) = self._link.run(
            command("XPENDING", stream, self._group, "-", "+", CLAIM_COUNT, consumer)
        )
        ids = [p[0] for p in pending]
        if not ids:
            return 0
        (claimed,) = self._link.run(
            command("XCLAIM", stream, self._group, self._consumer, DEAD_IDLE_MS, *ids)
        )
        got = [(e, f) for e, f in (c for c in claimed if c) if f]
        gone = set(ids) - {e for e, _ in got}
        # Deleted entries vanish from the claim (Redis 7) or come back empty;
        # those another worker claimed first are still pending on it.
        if gone:
            (still,) = self._link.run(
                command("XPENDING", stream, self._group, "-", "+", len(ids) + 100)
            )
            pending_now = {p[0] for p in still}
            vanished = [e for e in gone if e not in pending_now]
            if vanished:
                self._count_lost(stream, vanished, "deleted or trimmed while pending")
        if got:
            logger.info(
                "Claimed %d messages of %s from the dead consumer %s",
                len(got),
                stream.decode(),
                consumer.decode(),
            )
            self._take_over(stream, got, dead_holder=True)
        return len(ids)

    def _take_over(
        self, stream: bytes, entries: list[tuple[bytes, list[bytes]]], *, dead_holder: bool
    ) -> None:
        """Messages claimed (or found in this consumer's history): run them, or dead-letter them.

        A dead holder may have been running a message when it died: that
        counts as an attempt, unless a warm stop handed the message back.
        """
        name = stream.decode()
        fields = [retry_field(name, e.decode()) for e, _ in entries]
        (states,) = self._link.run(command("HMGET", self._retry, *fields))
        writes: list[str] = []
        now = monotonic()
        for (entry, data_fields), field, raw in zip(entries, fields, states, strict=True):
            state = json.loads(raw) if raw else {}
            attempts = int(state.get("n", 0)) + (
                1 if dead_holder and not state.get("returned") else 0
            )
            done = list(state.get("done", []))
            record = dict(zip(data_fields[::2], data_fields[1::2], strict=False))
            data = record.get(b"d", b"")
            if attempts >= self._options.max_deliveries:
                error = f"WorkerLost: its workers stopped while holding it ({attempts} deliveries)"
                self._dead_letter(stream, entry, data, attempts, [("", error, "")], done)
                continue
            writes += [field, json.dumps({"n": attempts, "done": done})]
            self._stateful.add((stream, entry))
            only = record.get(b"r")
            self._wait(
                now,
                stream,
                entry,
                data,
                attempts + 1,
                frozenset(done),
                only.decode() if only else None,
            )
        if writes:
            self._link.run(command("HSET", self._retry, *writes))
        self._stats.add(claimed=len(entries))

    def _count_trimmed(self, stream: bytes, *, created: bool = False) -> None:
        """Count entries trimmed (or deleted) before the group read them, once per group."""
        info, groups = self._link.run(
            command("XINFO", "STREAM", stream), command("XINFO", "GROUPS", stream)
        )
        if isinstance(info, redis.ResponseError) or isinstance(groups, redis.ResponseError):
            return
        s = _pairs(info)
        group = next((g for g in map(_pairs, groups) if g["name"].decode() == self._group), None)
        if group is None:
            return
        added, read = s.get("entries-added"), group.get("entries-read")
        if added is None or read is None:
            if created:
                self._link.run(command("EVAL", LOST_SCRIPT, 1, self._lost, stream, 0, 1))
            return
        last = group["last-delivered-id"]
        first = s["first-entry"][0] if s.get("first-entry") else None
        if first is None or _id(first) > _id(last):
            unread = s["length"]
        elif last == s["last-generated-id"]:
            unread = 0
        else:
            return  # reading in the middle of the stream: nothing to compare yet
        missing = added - read - unread
        (counted,) = self._link.run(
            command("EVAL", LOST_SCRIPT, 1, self._lost, stream, missing, 1 if created else 0)
        )
        if isinstance(counted, int) and counted > 0:
            self._stats.add(lost=counted)
            logger.warning(
                "Group %s lost %d entries of %s: trimmed before it read them "
                "(raise the signal's maxlen, or add workers)",
                self._group,
                counted,
                stream.decode(),
            )
