"""Durable delivery on Redis Streams: append with retention, consume in groups.

Sending is the publisher's (:func:`.redis_publisher.append_command`: one
``EVAL`` that appends with an approximate ``MAXLEN`` and counts the groups,
carried like a ``PUBLISH``).

Consuming: a :class:`StreamConsumer` reads the streams of a worker's durable
signals as one consumer (the worker's id) of a group (the service), on a
connection of its own. The next read goes out before the batch in hand runs,
and the acknowledgements of finished messages go in the same write. A batch
of first deliveries takes the dispatcher's lean path where the worker allows
it. Per receiver at-least-once: a message whose receivers all returned is
acknowledged; the others go to :mod:`.redis_retries` (retried alone after a
backoff, dead-lettered past ``max_deliveries``). The worker's pulse has
:mod:`.redis_claims` keep what this worker holds from looking idle, claim
what dead or idle consumers held, and count what the group lost to
trimming, on a second connection (:mod:`.redis_link`). Everything speaks
RESP2 on our own connections, so the replies have one shape whatever
redis-py and its protocol. It is over 400 lines because the reader's loop,
its reconnects and its warm stop all keep one state, what the worker holds
(the batch, the pool's messages, the acks on their way): split, each part
would reach into the others'.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

import redis

from ..backoff import compute_backoff
from ..durable import ConsumerOptions
from ..errors import BrokerUnavailable
from ..stats import Stats
from ..throttle import Throttle
from .base import Delivery, DurableRoute, Outcome, Source
from .redis_claims import Claims
from .redis_endpoint import CONNECTION_ERRORS, Endpoint, Replies
from .redis_link import Link, command, passing
from .redis_retries import Retries, read_entry

__all__ = ["StreamConsumer"]

logger = logging.getLogger(__name__)

#: Entries one read takes per stream.
READ_COUNT = 100
#: Longest a read blocks: the stop flag is checked at least this often.
BLOCK_MS = 1000
#: Messages waiting for a retry before the reader stops taking new ones.
MAX_WAITING = 10_000
#: Held messages older than this get their idle time reset by the pulse.
REFRESH_AFTER_S = 2.0
#: Longest wait before a reconnect.
RECONNECT_MAX_S = 5.0
#: Entries of its own history a consumer takes back after a reconnect, per stream.
HISTORY_COUNT = 1000
#: Stands for a read when the reader takes nothing new: its reply is no batch.
_NOTHING = command("ECHO", "")


class StreamConsumer(Source):
    """The durable signals' streams, read as one consumer of a group (see the module).

    ``routes`` maps each stream key to the dispatcher's durable handler of its
    signal. :meth:`run` reads on the calling thread; :meth:`pulse` is called
    by the worker's pulse thread every few seconds.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        routes: Mapping[str, DurableRoute],
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
        self._stats = stats
        self._use_hiredis = use_hiredis
        self._handlers = {key.encode(): route.handle for key, route in routes.items()}
        self._batches = {key.encode(): route.batch for key, route in routes.items()}
        self._streams = sorted(self._handlers)
        self._throttle = Throttle(logger)
        link = self._link = Link(endpoint, use_hiredis)
        self._retries = Retries(
            link,
            options=options,
            consumer=consumer,
            namespace=namespace,
            stats=stats,
            throttle=self._throttle,
        )
        self._claims = Claims(
            link,
            self._retries,
            options=options,
            consumer=consumer,
            alive_key=alive_key,
            stats=stats,
        )
        block_ms = max(1, min(BLOCK_MS, int(endpoint.socket_timeout_s * 500)))
        self._read = self._read_command(block_ms, ">")
        self._read_now = self._read_command(None, ">")
        # Finished messages to acknowledge with the next read, per stream
        # (deques: appended from pool threads, emptied by the reader), and
        # those whose acknowledgement is on its way (back in the deques if
        # the connection breaks before Redis answered).
        self._acks: dict[bytes, deque[bytes]] = {s: deque() for s in self._streams}
        self._acking: list[tuple[bytes, list[bytes], list[bytes]]] = []
        # XACK's name, stream and group, framed once per stream.
        self._xack = {
            s: command("XACK", s, self._group).partition(b"\r\n")[2] for s in self._streams
        }
        # What this worker holds, besides the retries waiting: the batch
        # running [stream, entries, since] and the messages in a pool.
        self._batch: list[Any] | None = None
        self._pooled: dict[tuple[bytes, bytes], float] = {}
        self._pooled_early: set[tuple[bytes, bytes]] = set()
        self._lock = threading.Lock()
        #: Set by a stop of either kind: the reader takes nothing new (a batch on
        #: the lean path checks it before each message).
        self.stopping = False
        #: Set by a stop at once: nothing more is finished or acknowledged.
        self._stop_now = False
        self._finishing = False
        self._created: set[bytes] = set()

    def _read_command(self, block_ms: int | None, start: str) -> bytes:
        # A read of every stream from ``start``, blocking up to block_ms if nothing is there.
        block = () if block_ms is None else ("BLOCK", block_ms)
        count = READ_COUNT if start == ">" else HISTORY_COUNT
        return command(
            "XREADGROUP",
            "GROUP",
            self._group,
            self._consumer,
            "COUNT",
            count,
            *block,
            "STREAMS",
            *self._streams,
            *([start] * len(self._streams)),
        )

    # -- the reader -----------------------------------------------------------

    def run(self) -> None:
        """Read and dispatch until stopped; reconnect with backoff on connection errors."""
        attempt = 0
        while not self.stopping:
            conn: Any = None
            try:
                conn = self._endpoint.connect()
                replies = Replies(conn, use_hiredis=self._use_hiredis)
                self._setup(conn, replies)
                self.ready.set()
                attempt = 0
                self._loop(conn, replies)
            except CONNECTION_ERRORS as exc:
                self.ready.clear()
                self._requeue_acks()
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
                # Redis loading its data, a failover, out of memory: wait and
                # read again. Anything else (WRONGTYPE, NOPERM) is for a human.
                self.ready.clear()
                self._requeue_acks()
                if not passing(exc):
                    raise BrokerUnavailable(
                        f"Redis at {self._endpoint.display} refused the durable read "
                        f"({self._endpoint.detail(exc)})"
                    ) from exc
                if "NOGROUP" in str(exc):
                    logger.warning("Group %s was deleted; creating it again", self._group)
                    self._created.clear()
                attempt += 1
                delay = compute_backoff(attempt, base_s=0.1, max_s=RECONNECT_MAX_S)
                self._throttle.warning(
                    "refused",
                    f"Durable consumer {self._consumer}: Redis at {self._endpoint.display} "
                    f"answered {self._endpoint.detail(exc)}; reading again in {delay:.1f}s",
                )
                self._sleep(delay)
            finally:
                if conn is not None:
                    conn.disconnect()
        self.ready.clear()
        try:
            if not self._stop_now:
                self._finish()
        finally:
            self._link.close()

    def _sleep(self, seconds: float) -> None:
        end = monotonic() + seconds
        while not self.stopping and monotonic() < end:
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
                self._claims.count_trimmed(stream, created=True)
            elif "BUSYGROUP" not in str(reply):
                raise reply
            self._created.add(stream)
        # Entries Redis delivered to this consumer that this worker neither
        # holds nor finished (a read whose reply a broken connection lost).
        conn._sock.sendall(self._read_command(None, "0"))
        (history,) = replies.read(1)
        if isinstance(history, Exception):
            raise history
        known = set(self._holding()) | {(s, e) for s, q in self._acks.items() for e in q}
        for stream, entries in history or ():
            gone = [e for e, f in entries if not f and (stream, e) not in known]
            if gone:
                self._retries.lost(stream, gone, "deleted or trimmed while pending")
            mine = [(e, f) for e, f in entries if f and (stream, e) not in known]
            if mine:
                self._retries.take_over(stream, mine, dead_holder=False)

    def _loop(self, conn: Any, replies: Replies) -> None:
        # The next read goes out before the batch in hand runs: Redis gathers
        # it while the receivers work. Acks of finished messages ride along.
        sock = conn._sock
        read = replies.read
        retries = self._retries
        sent = self._request(sock)
        while True:
            got = read(sent)
            for reply in got:
                if isinstance(reply, redis.ResponseError):
                    raise reply  # the acks of this round trip are sent again
            self._acking = []
            batch = got[-1]
            if self.stopping:
                if batch:  # read after the stop: back to the group, untouched
                    self._hand_back([(s, e) for s, entries in batch for e, _ in entries])
                return
            sent = self._request(sock)
            if batch:
                self._dispatch(batch)
            due = retries.next_due()
            if due is not None and due <= monotonic():
                self._run_due()

    def _request(self, sock: Any) -> int:
        """Send the acks of what finished and the next read; return how many replies come."""
        commands = self._ack_commands()
        retries = self._retries
        due = retries.next_due()
        if len(retries) >= MAX_WAITING:
            # Too much waiting for a retry already: take nothing new for now.
            self._sleep(0.1)
            commands.append(_NOTHING)
        elif due is not None and due - monotonic() < BLOCK_MS / 1000:
            commands.append(self._read_now)
        else:
            commands.append(self._read)
        sock.sendall(b"".join(commands))
        return len(commands)

    def _ack_commands(self) -> list[bytes]:
        """The XACKs (and retry records' deletions) of what finished."""
        out: list[bytes] = []
        for stream, pending in self._acks.items():
            if not pending:
                continue
            ids = [pending.popleft() for _ in range(len(pending))]
            # command("XACK", stream, group, *ids), framed here: it runs for every batch.
            framed = b"".join([b"$%d\r\n%s\r\n" % (len(e), e) for e in ids])
            out.append(b"*%d\r\n%s%s" % (len(ids) + 3, self._xack[stream], framed))
            deletions, forgotten = self._retries.forget(stream, ids)
            out += deletions
            self._acking.append((stream, ids, forgotten))
        return out

    def _requeue_acks(self) -> None:
        # The connection broke with acks on their way: send them again later.
        for stream, ids, forgotten in self._acking:
            self._acks[stream].extend(ids)
            self._retries.renote(stream, forgotten)
        self._acking = []

    def _dispatch(self, batch: list[Any]) -> None:
        # The worker's per-message path: the lean one (a batch at a time), or
        # one Delivery and one handler call each.
        pooled_done = self._pooled_done
        failed = self._retries.failed
        for at, (stream, entries) in enumerate(batch):
            acks = self._acks[stream]
            self._batch = [stream, entries, monotonic()]
            lean = self._batches[stream]
            if lean is not None:
                done = lean(stream, entries, acks, self)
                if done < len(entries):
                    self._stop_in(batch, at, done)
                    return
                continue
            handler = self._handlers[stream]
            name = stream.decode()
            for i, (entry, fields) in enumerate(entries):
                if self.stopping:
                    self._stop_in(batch, at, i)
                    return
                if len(fields) != 2:
                    self.unusual(stream, entry, fields)
                    continue
                delivery = Delivery(name, entry.decode(), fields[1])
                outcome = handler(delivery, pooled_done)
                if outcome is None:
                    self._pooled_out(stream, entry)
                elif outcome is Outcome.FAILED:
                    failed(stream, entry, delivery)
                else:
                    acks.append(entry)
        self._batch = None

    def _stop_in(self, batch: list[Any], at: int, done: int) -> None:
        # A stop came in the middle of ``batch``: the rest of the stream at
        # ``at`` and every later stream's entries go back to the group, unrun.
        self._batch = None
        rest = [(batch[at][0], e) for e, _ in batch[at][1][done:]]
        rest += [(stream, e) for stream, entries in batch[at + 1 :] for e, _ in entries]
        self._hand_back(rest)

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
                self._retries.failed(stream, entry, delivery)
            else:
                self._acks[stream].append(entry)
        finally:
            with self._lock:
                if self._pooled.pop((stream, entry), None) is None:
                    self._pooled_early.add((stream, entry))

    def _holding(self) -> dict[tuple[bytes, bytes], float]:
        """What this worker holds (read and not finished) and since when (0: waiting)."""
        # A message only moves from the pool to the retries (or is done), so
        # the pool is read first: none is missed between the two reads.
        with self._lock:
            held = dict(self._pooled)
        held.update(dict.fromkeys(self._retries.held(), 0.0))
        batch = self._batch
        if batch is not None:
            stream, entries, since = batch
            held.update(((stream, e), since) for e, _ in entries)
        return held

    def failed(self, stream: bytes, entry: bytes, delivery: Delivery) -> None:
        """Some receivers of a message raised: retried, or dead-lettered (a BatchSink's part)."""
        self._retries.failed(stream, entry, delivery)

    def unusual(self, stream: bytes, entry: bytes, fields: list[bytes] | None) -> None:
        """An entry that is not one plain message: a replayed dead letter, or deleted.

        (A :class:`~sigbroker.transport.base.BatchSink`'s part, as :meth:`failed` is.)
        """
        if not fields:
            self._retries.lost(stream, [entry], "deleted while pending")
            return
        data, group, only, skip = read_entry(fields)
        if not data or (group is not None and group != self._group):
            self._acks[stream].append(entry)  # another group's replay, or not ours to read
            return
        self._run(stream, entry, data, 1, skip, only)

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
            self._retries.failed(stream, entry, delivery)
        else:
            self._acks[stream].append(entry)

    def _run_due(self) -> None:
        now = monotonic()
        while not self.stopping:
            item = self._retries.pop_due(now)
            if item is None:
                return
            self._run(item.stream, item.entry, item.data, item.deliveries, item.skip, item.only)

    # -- stopping -------------------------------------------------------------

    def _hand_back(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Read and not started (and retries waiting): left pending for the group."""
        self._retries.hand_back(entries)

    def _finish(self) -> None:
        """A warm stop: wait for the pool's messages, acknowledge what finished, hand back."""
        self._finishing = True  # the pulse keeps what is still running fresh meanwhile
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

    def stop(self) -> None:
        """Stop at once; what was read and not finished stays pending for the group."""
        self._stop_now = self.stopping = True

    def drain(self) -> None:
        """Stop warmly: finish the message running, acknowledge, hand the rest back."""
        self.stopping = True

    def abandon(self) -> int:
        """Stop at once; nothing is lost (it stays pending for the group): returns 0."""
        self._stop_now = self.stopping = True
        return 0

    # -- the pulse ------------------------------------------------------------

    def pulse(self) -> None:
        """Keep held messages fresh, claim from dead or idle consumers, count trimmed entries."""
        if not (self.ready.is_set() or self._finishing):
            return
        now = monotonic()
        self._claims.refresh(
            k for k, since in self._holding().items() if now - since > REFRESH_AFTER_S
        )
        if self._finishing:
            return  # stopping: it holds on to what runs, and takes nothing new
        self._retries.write_letters()
        for stream in self._streams:
            self._claims.recover(stream)
            self._claims.count_trimmed(stream)
        self._throttle.flush()
