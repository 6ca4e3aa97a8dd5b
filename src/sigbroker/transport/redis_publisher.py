"""Publishing on Redis: pre-framed PUBLISH (and stream append) commands with group commit.

:class:`Publisher` writes the commands itself, already framed in Redis's
protocol (``make bench`` shows it pays: a send costs less than redis-py's
``publish``), on one connection that concurrent senders share through group
commit. :func:`apublish` is the asyncio variant, on ``redis.asyncio``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from _thread import allocate_lock as _allocate_lock
from time import monotonic as _monotonic
from typing import Any

import redis
import redis.asyncio

from ..errors import BatchRefused, BrokerUnavailable
from .base import Stream
from .redis_endpoint import CONNECTION_ERRORS, Endpoint, Replies, closed

__all__ = ["APPEND_SCRIPT", "Publisher", "append_command", "apublish", "frame", "publish_command"]

#: Round trips a sender makes for others queued behind it before passing the lead on.
LEAD_ROUNDS = 8
#: Idle time after which the publisher's connection is checked (one poll, no
#: syscall otherwise) for a close by Redis before a command is written on it.
STALE_CHECK_IDLE_S = 0.001
#: Round trips a queued send may wait through (the one in flight, its own, and
#: one for scheduling slack); each is bounded by the endpoint's timeouts.
FOLLOWER_WAIT_ROUNDS = 3


def publish_command(channel: str) -> bytes:
    """A PUBLISH command in Redis's protocol, up to (not including) the message."""
    raw = channel.encode()
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(raw), raw)


#: XADD with retention, then how many groups will read the entry: one round trip.
APPEND_SCRIPT = (
    b"redis.call('XADD',KEYS[1],'MAXLEN','~',ARGV[1],'*','d',ARGV[2]) "
    b"return #redis.call('XINFO','GROUPS',KEYS[1])"
)


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


def frame(command: bytes, data: bytes) -> bytes:
    """``command`` (see :func:`publish_command`) completed with the message ``data``."""
    return b"%s$%d\r\n%s\r\n" % (command, len(data), data)


class _Waiter:
    """Sends queued behind the round trip in flight (see :class:`_Publisher`)."""

    __slots__ = ("count", "error", "frames", "lead", "many", "result", "wake")

    def __init__(self, frames: bytes, count: int, many: bool) -> None:
        self.frames = frames
        self.count = count
        self.many = many
        self.result: Any = None
        self.error: BaseException | None = None
        self.lead = False
        # A bare lock, taken now and released to wake the waiter: far cheaper
        # than a threading.Event (no Condition, no second lock per wait).
        self.wake = _allocate_lock()
        self.wake.acquire()


class Publisher:
    """Writes PUBLISH commands on one connection, grouping concurrent senders.

    Group commit, leader/follower, with no background thread: a send that
    finds no round trip in flight makes its own at once, so a lone sender pays
    nothing extra. A send that finds one in flight queues. The sender whose
    round trip just ended stays leader for a few more rounds: each time it
    sends everything queued by then as one pipeline and wakes those senders;
    then it hands the lead to the first sender still queued. Each caller gets
    its own count or its own error, and since a send returns only after its
    reply, each thread's messages stay in order. Only the leader touches the
    connection. A queued send waits a bounded time (FOLLOWER_WAIT_ROUNDS round
    trips, each bounded by the client's timeouts), then raises.
    """

    def __init__(self, endpoint: Endpoint, *, use_hiredis: bool) -> None:
        self._endpoint = endpoint
        self._use_hiredis = use_hiredis
        self._conn: Any = None
        self._replies: Replies | None = None
        self._used = 0.0  # time.monotonic() of the last write
        self._mutex = threading.Lock()
        self._busy = False
        self._queue: list[_Waiter] = []
        self._wait_s = FOLLOWER_WAIT_ROUNDS * endpoint.round_trip_s

    def publish(self, frames: bytes, count: int = 1, many: bool = False) -> Any:
        """Publish ``count`` framed commands; return the count, or the list of counts."""
        with self._mutex:
            if self._busy:
                waiter = _Waiter(frames, count, many)
                self._queue.append(waiter)
            else:
                self._busy = True
                waiter = None
        if waiter is None:
            try:
                replies = self._round_trip(frames, count)
            except BaseException:
                self._hand_over()
                raise
            self._keep_leading()
            if many:
                return self._endpoint.counts(replies)
            reply = replies[0]
            if type(reply) is int:
                return reply
            raise self._endpoint.refused(reply)
        if not waiter.wake.acquire(timeout=self._wait_s):
            self._give_up(waiter)
        if waiter.lead:
            self._keep_leading()  # the first batch it sends holds its own message
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _give_up(self, waiter: _Waiter) -> None:
        """Raise for a queued send that got no turn in time (unless woken just now)."""
        endpoint = self._endpoint
        with self._mutex:  # the lead is handed over under the mutex
            if waiter.wake.acquire(blocking=False):
                return  # woken between the timeout and here: carry on
            queued = waiter in self._queue
            if queued:
                self._queue.remove(waiter)
        if queued:
            raise BrokerUnavailable(
                f"Redis at {endpoint.display} is unavailable: a send queued behind "
                f"others got no turn within {self._wait_s:.0f}s; it was not sent"
            )
        # A leader took it into a pipeline that has not come back.
        raise endpoint.delivery_unknown(
            TimeoutError(f"no reply within {self._wait_s:.0f}s"), waiter.count
        )

    def _keep_leading(self) -> None:
        # Leading on saves the wake-up of a new leader per round trip; the
        # bound keeps one thread from serving the others for too long.
        for _ in range(LEAD_ROUNDS):
            with self._mutex:
                batch, self._queue = self._queue, []
                if not batch:
                    self._busy = False
                    return
            if not self._send_batch(batch):
                break
        self._hand_over()

    def _send_batch(self, batch: list[_Waiter]) -> bool:
        """One pipeline for the queued senders; wake them; return whether it went through."""
        endpoint = self._endpoint
        try:
            total = sum(w.count for w in batch)
            replies = self._round_trip(b"".join(w.frames for w in batch), total)
        except BaseException as exc:
            for w in batch:
                w.error = exc
            return False
        else:
            # Each sender gets its own outcome: a refusal of one message (an
            # error reply) says nothing about the others of the pipeline.
            at = 0
            for w in batch:
                if w.many:
                    try:
                        w.result = endpoint.counts(replies[at : at + w.count])
                    except BatchRefused as exc:
                        w.error = exc
                elif type(reply := replies[at]) is int:
                    w.result = reply
                else:
                    w.error = endpoint.refused(reply)
                at += w.count
            return True
        finally:
            for w in batch:
                w.wake.release()

    def _hand_over(self) -> None:
        with self._mutex:
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                nxt.wake.release()
            else:
                self._busy = False

    def _round_trip(self, payload: bytes, replies: int) -> list[Any]:
        """Send ``payload``, read all ``replies`` replies; retry only errors before the write.

        Returns the replies in order: an int per PUBLISH that Redis ran, a
        :class:`redis.ResponseError` per command it refused (an ACL refusal of
        one channel, say). Every reply is read, refused or not, so the
        connection stays in step and the other commands' counts are known.
        Once a byte of ``payload`` has left, an error (end of file, reset,
        timeout) raises :class:`DeliveryUnknown`: Redis may have run the
        commands, and sending them again could deliver them twice.
        """
        return self._endpoint.retrying(lambda: self._try(payload, replies), CONNECTION_ERRORS)

    def _try(self, payload: bytes, replies: int) -> list[Any]:
        # One attempt of a round trip. A connection error before the write
        # (refused, a connect timeout, a stale connection) propagates to the
        # retry loop: nothing of the command reached Redis. After it, it
        # becomes DeliveryUnknown, which the loop does not retry.
        written = False
        try:
            conn = self._conn
            now = _monotonic()
            replies_of = self._replies
            if (
                conn is None
                or replies_of is None
                or (now - self._used > STALE_CHECK_IDLE_S and closed(conn._sock))
            ):
                conn, replies_of = self._connect()
            self._used = now
            sock = conn._sock
            sent = sock.send(payload)  # raises before any byte leaves, or sends some
            written = True
            if sent < len(payload):
                sock.sendall(memoryview(payload)[sent:])
            return replies_of.read(replies)
        except CONNECTION_ERRORS as exc:
            self._drop()
            if written:
                raise self._endpoint.delivery_unknown(exc, replies) from exc
            raise
        except BaseException:
            # A refused handshake (AUTH, SELECT: the loop raises it as
            # BrokerUnavailable), an interrupt: the connection goes.
            self._drop()
            raise

    def _connect(self) -> tuple[Any, Replies]:
        self._drop()  # a stale one, if any
        conn = self._endpoint.connect()  # AUTH, TLS, SELECT: redis-py's handshake
        # From here on the replies are read by our own reader: redis-py's
        # parser has nothing buffered after the handshake.
        replies = Replies(conn, use_hiredis=self._use_hiredis)
        self._conn, self._replies = conn, replies
        return conn, replies

    def _drop(self) -> None:
        conn, self._conn, self._replies = self._conn, None, None
        if conn is not None:
            conn.disconnect()

    def close(self) -> None:
        """Close the connection (the next send opens a new one)."""
        with self._mutex:
            self._drop()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connection and group-commit state.

        The parent's other threads do not exist here: a lock they held, a
        queue they were in and the connection they were using are replaced,
        not waited for. Closing the socket closes only the child's copy.
        """
        conn, self._conn, self._replies = self._conn, None, None
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            sock.close()
        self._mutex = threading.Lock()
        self._busy = False
        self._queue = []


async def apublish(endpoint: Endpoint, pool: Any, frames: bytes) -> int:
    """Write one framed PUBLISH on a connection of the asyncio ``pool``; return its count.

    Getting a healthy connection (connect, or replace a pooled one that Redis
    closed) is retried; once the command is being written, an error raises
    :class:`DeliveryUnknown` and nothing is retried. Cancelled once the command
    is being written, the connection is closed, so no later send reads this
    one's reply.
    """
    deadline = time.monotonic() + endpoint.timeout_s
    attempt = 0
    while True:
        try:
            conn = await _checked_out(pool)
        except CONNECTION_ERRORS as exc:
            attempt += 1  # nothing was written: safe to try again
            await asyncio.sleep(endpoint.retry_delay(attempt, deadline, exc))
            continue
        except redis.RedisError as exc:
            raise endpoint.unavailable(exc, attempt + 1) from exc
        try:
            await conn.send_packed_command(frames, check_health=False)
            return int(await conn.read_response())
        except CONNECTION_ERRORS as exc:
            await conn.disconnect()
            raise endpoint.delivery_unknown(exc) from exc
        except redis.RedisError as exc:
            raise endpoint.unavailable(exc, attempt + 1) from exc
        except BaseException:
            # Cancelled (asyncio.wait_for, a task group) or interrupted once
            # the command may have been written: its reply may still come, and
            # the next command on this connection would read it as its own.
            # The connection goes, whatever cancels us again.
            await asyncio.shield(conn.disconnect(nowait=True))
            raise
        finally:
            await pool.release(conn)


# redis.asyncio's pools took the command name as a required argument before 5.3
# and warn about it since: give it only to the versions that need it.
_GET_CONNECTION_ARGS: tuple[str, ...] = (
    ()
    if inspect.signature(redis.asyncio.ConnectionPool.get_connection)
    .parameters["command_name"]
    .default
    is not inspect.Parameter.empty
    else ("PUBLISH",)
)


async def _checked_out(pool: Any) -> Any:
    """A connection of a ``redis.asyncio`` pool, ready for a command to be written.

    redis-py checks a pooled connection for a close by Redis only as far as
    its event loop has seen it; the socket itself is asked too, so that a
    stale connection is replaced before anything is written on it.
    """
    conn = await pool.get_connection(*_GET_CONNECTION_ARGS)
    try:
        writer = getattr(conn, "_writer", None)
        sock = writer.get_extra_info("socket") if writer is not None else None
        if sock is not None and sock.fileno() >= 0 and closed(sock):
            await conn.disconnect()
            await conn.connect()
    except BaseException:
        await pool.release(conn)
        raise
    return conn
