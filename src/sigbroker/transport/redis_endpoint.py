"""One Redis server as the transport sees it: connections, replies, retries, errors.

:class:`Endpoint` holds the URL (masked in every text it produces), the
connection pool built from it, the retry budget of commands that may run
twice, and the translation of redis-py's exceptions into sigbroker's own
(:class:`~sigbroker.errors.BrokerUnavailable` and its subclasses), chained
with ``from``. :class:`Replies` is the one reader of RESP replies off a
connection that the publisher and the subscription share: hiredis on the raw
socket when it is installed (the fast path, which ``make bench`` shows pays),
else redis-py's own parser.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..backoff import compute_backoff
from ..errors import BatchRefused, BrokerUnavailable, ConfigurationError, DeliveryUnknown
from ..urls import mask_url, scrub, url_secrets

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - exercised when hiredis is not installed
    hiredis = None

MaintNotificationsConfig: Any
try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - redis-py < 7 has no maintenance notifications
    MaintNotificationsConfig = None

__all__ = ["CONNECTION_ERRORS", "Endpoint", "Replies", "closed", "hiredis"]

logger = logging.getLogger(__name__)

#: Time allowed to open a TCP (or TLS) connection to Redis.
CONNECT_TIMEOUT_S = 2.0
#: Time allowed for Redis to answer one command on an open connection.
SOCKET_TIMEOUT_S = 5.0
#: Total time a command may spend retrying connection errors before BrokerUnavailable.
SEND_TIMEOUT_S = 10.0
#: Retries of a command after connection errors (within SEND_TIMEOUT_S).
SEND_RETRIES = 3
#: Delay before the first retry of a failed connection; about doubles each retry.
RETRY_BASE_DELAY_S = 0.05
#: Longest delay between two retries.
RETRY_MAX_DELAY_S = 1.0
#: Bytes read from a socket at once.
READ_SIZE = 65536

#: Errors of the connection itself (as opposed to an error reply from Redis).
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)

T = TypeVar("T")


class Endpoint:
    """A Redis URL with its pool, retry budget and error translation.

    redis-py's own retries are off: the endpoint owns the retry budget, so
    that the bound on a command is the one the user configured.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = SEND_TIMEOUT_S,
        retries: int = SEND_RETRIES,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        max_connections: int | None = None,
    ) -> None:
        self.url = url
        self.display = mask_url(url)
        self.timeout_s = timeout_s
        self.retries = retries
        self.connect_timeout_s = connect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self._max_connections = max_connections
        self._secrets = url_secrets(url)
        try:
            self.pool = self._new_pool()
        except ValueError as exc:
            raise ConfigurationError(
                f"invalid Redis URL {self.display}: {self.scrub(str(exc))}"
            ) from None
        self.redis = redis.Redis(connection_pool=self.pool)
        kwargs = self.pool.connection_kwargs
        # Pub/sub ignores the database number and the user: the address alone
        # says which subscribers see a message.
        self.server = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"

    @property
    def options(self) -> dict[str, Any]:
        """The connection options of every client made from the URL (asyncio's too)."""
        return {
            "socket_connect_timeout": self.connect_timeout_s,
            "socket_timeout": self.socket_timeout_s,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }

    def _new_pool(self) -> redis.ConnectionPool:
        return redis.ConnectionPool.from_url(
            self.url, max_connections=self._max_connections, **self.options
        )

    @property
    def round_trip_s(self) -> float:
        """The longest one round trip may take: the retry budget, a connect, a write, a read."""
        return self.timeout_s + self.connect_timeout_s + 2 * self.socket_timeout_s

    def connect(self, *, timeout_s: float | None = None) -> Any:
        """Open a connection with the pool's options (AUTH, TLS, SELECT) that speaks RESP2.

        The publisher and the subscription read replies off the socket
        themselves, so the connection must send nothing unasked: RESP2, and
        no maintenance notifications. redis-py 8 defaults to RESP3 and puts
        the notification handlers in ``pool.connection_kwargs``; on a RESP2
        connection without hiredis they raise "only supported with hiredis
        and RESP3 parsers", so they are switched off explicitly. ``timeout_s``,
        if given, replaces the pool's connect and socket timeouts.
        """
        options = {**self.pool.connection_kwargs, "protocol": 2}
        if timeout_s is not None:
            options["socket_connect_timeout"] = options["socket_timeout"] = timeout_s
        if MaintNotificationsConfig is not None:
            options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        # redis-py leaves Connection's methods untyped; treat it as Any here.
        conn: Any = self.pool.connection_class(**options)
        conn.connect()
        return conn

    def after_fork(self) -> None:
        """In a forked child: a pool of its own.

        A new pool rather than ``pool.reset()``: a parent thread may have held
        the old pool's lock at the fork, and ``reset()`` takes it in redis-py
        8. The old pool's connections close only the child's copies of their
        sockets when collected, so the parent's connections live on.
        """
        self.pool = self._new_pool()
        self.redis = redis.Redis(connection_pool=self.pool)

    # -- the one retry loop ---------------------------------------------------

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(redis_client)`` within the retry budget; redis-py's errors translated.

        Connection errors are retried, and redis-py can not tell whether they
        came before or after the command was written: ``fn`` must be safe to
        run twice (reads, ``SET`` of a heartbeat, ``DEL``). Publishing never
        comes here: it is never retried once written.
        """
        # A connection error is raised before Redis could act on the command
        # (refused, reset, broken pipe on a stale pooled connection); a timeout
        # may come after it ran, so it is not retried.
        return self.retrying(lambda: fn(self.redis), (redis.ConnectionError, OSError))

    def retrying(self, attempt: Callable[[], T], retryable: tuple[type[BaseException], ...]) -> T:
        """The one retry loop: call ``attempt`` until it returns, within the retry budget.

        ``retryable`` errors are retried after :meth:`retry_delay`; any other
        redis-py error raises BrokerUnavailable; everything else propagates
        (``DeliveryUnknown``, say, once a command was written).
        """
        deadline = 0.0
        attempts = 0
        while True:
            try:
                return attempt()
            except BrokerUnavailable:
                raise  # already decided (DeliveryUnknown...), and an OSError: never retried
            except retryable as exc:
                attempts += 1
                if not deadline:
                    deadline = time.monotonic() + self.timeout_s
                time.sleep(self.retry_delay(attempts, deadline, exc))
            except redis.RedisError as exc:
                raise self.unavailable(exc, attempts + 1) from exc

    def retry_delay(self, attempt: int, deadline: float, exc: BaseException) -> float:
        """How long to wait before retry ``attempt``; raise BrokerUnavailable when out of budget."""
        delay = compute_backoff(attempt, base_s=RETRY_BASE_DELAY_S, max_s=RETRY_MAX_DELAY_S)
        if attempt > self.retries or deadline - time.monotonic() <= delay:
            raise self.unavailable(exc, attempt) from exc
        logger.debug(
            "Redis at %s: %s; retry %d in %.2fs", self.display, self.detail(exc), attempt, delay
        )
        return delay

    # -- error translation ----------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` (from redis-py, say) with the URL masked and its secrets hidden."""
        return scrub(text, self.url, self._secrets)

    def detail(self, exc: BaseException) -> str:
        """The scrubbed text of ``exc`` (its type's name if it has none)."""
        return self.scrub(str(exc)) or type(exc).__name__

    def unavailable(self, exc: BaseException, attempts: int) -> BrokerUnavailable:
        """Redis could not be reached (or refused the connection's handshake)."""
        noun = "attempt" if attempts == 1 else "attempts"
        return BrokerUnavailable(
            f"Redis at {self.display} is unavailable ({self.detail(exc)}) after {attempts} {noun}"
        )

    def refused(self, reply: BaseException) -> BrokerUnavailable:
        """The error of one message that Redis refused (an error reply): it was not delivered."""
        return BrokerUnavailable(
            f"Redis at {self.display} refused the message ({self.detail(reply)}): "
            "it was not delivered"
        )

    def counts(self, replies: list[Any]) -> list[int]:
        """The receiver counts of a batch's replies; BatchRefused if Redis refused any."""
        if all(type(r) is int for r in replies):
            return replies
        results: list[int | BrokerUnavailable] = [
            r if type(r) is int else self.refused(r) for r in replies
        ]
        refused = [r for r in results if not isinstance(r, int)]
        raise BatchRefused(
            f"Redis at {self.display} refused {len(refused)} of the batch's "
            f"{len(results)} messages ({refused[0]}); the others were delivered: "
            "see the error's results",
            results,
        )

    def delivery_unknown(self, exc: BaseException, messages: int = 1) -> DeliveryUnknown:
        """A command was written and no reply came: it may have run, and is not sent again."""
        what = (
            "the message was written"
            if messages == 1
            else f"a pipeline of {messages} messages (this send's among them) was written"
        )
        return DeliveryUnknown(
            f"Redis at {self.display} stopped answering after {what} "
            f"({self.detail(exc)}): the message may have been delivered, so it was not sent again"
        )


class Replies:
    """The replies of one RESP2 connection, in order.

    With hiredis, bytes are read off the raw socket into one buffer and
    parsed by ``hiredis.Reader`` (error replies come out as
    ``redis.ResponseError`` values, in their place); without it, through
    redis-py's parser. ``gets()`` returns the next complete reply or
    ``False``; ``fill()`` waits for more bytes (up to ``tick_s`` if set, else
    the socket's timeout) and returns False if none came in time.
    """

    def __init__(self, conn: Any, *, use_hiredis: bool, tick_s: float | None = None) -> None:
        self.conn = conn
        self.tick_s = tick_s
        self.gets: Callable[[], Any]
        self.fill: Callable[[], bool]
        if use_hiredis:
            sock = conn._sock
            if sock is None:
                raise redis.ConnectionError("not connected")
            if tick_s is not None:
                sock.settimeout(tick_s)
            self._sock = sock
            self._reader = hiredis.Reader(replyError=redis.ResponseError)
            self._buf = bytearray(READ_SIZE)
            self.gets, self.fill = self._reader.gets, self._fill_hiredis
        else:
            self._reader = None
            self.gets, self.fill = self._gets_resp, self._fill_resp

    def _fill_hiredis(self) -> bool:
        try:
            n = self._sock.recv_into(self._buf)
        except TimeoutError:
            if self.tick_s is None:
                raise
            return False
        if not n:
            raise redis.ConnectionError("Redis closed the connection")
        self._reader.feed(self._buf, 0, n)
        return True

    def _gets_resp(self) -> Any:
        if not self.conn.can_read(timeout=0):
            return False
        return _resp_reply(self.conn)

    def _fill_resp(self) -> bool:
        if self.tick_s is None:
            return True  # read_response() waits, up to the socket's timeout
        return bool(self.conn.can_read(timeout=self.tick_s))

    def read(self, count: int) -> list[Any]:
        """The next ``count`` replies, each waited for up to the socket's timeout."""
        if self._reader is None:
            return [_resp_reply(self.conn) for _ in range(count)]
        out: list[Any] = []
        gets, fill = self.gets, self.fill
        while len(out) < count:
            reply = gets()
            if reply is False:
                fill()
            else:
                out.append(reply)
        return out

    def next(self) -> Any:
        """The next reply; raises TimeoutError if none came within a tick."""
        reply = self.gets()
        while reply is False:
            if not self.fill():
                raise TimeoutError
            reply = self.gets()
        return reply

    def count_buffered(self, is_message: Callable[[Any], bool], limit: int) -> int:
        """How many messages the parser and the socket hold now (at most ``limit``; no waiting)."""
        count = 0
        if self._reader is None:
            while count < limit and self.conn.can_read(timeout=0):
                count += is_message(_resp_reply(self.conn))
            return count
        self._sock.settimeout(0.0)
        while count < limit:
            reply = self.gets()
            if reply is not False:
                count += is_message(reply)
                continue
            try:
                n = self._sock.recv_into(self._buf)
            except OSError:  # BlockingIOError: nothing more in the socket
                break
            if not n:
                break
            self._reader.feed(self._buf, 0, n)
        return count


def _resp_reply(conn: Any) -> Any:
    """One reply read by redis-py's parser; an error reply is returned, not raised."""
    try:
        return conn.read_response(disconnect_on_error=True)
    except redis.ResponseError as exc:  # the whole reply was read: still in step
        return exc


def closed(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: Redis closed it (or broke it).

    Checked before writing on a connection that sat idle, so that a stale one
    is replaced while retrying is still safe.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)  # pragma: no cover - no poll()
    return bool(readable)
