"""The sending side: a pooled Redis connection that publishes signals.

A :class:`Client` turns ``send(signal, sender, **kwargs)`` into one PUBLISH on
``"{namespace}:{signal name}"`` and returns how many workers received it.
Errors that happen before any byte of a command was written (refused,
connect timeout, a pooled connection that Redis closed while it was idle) are
retried with a short backoff until ``timeout_s`` has passed, then raised as
:class:`~sigbroker.errors.BrokerUnavailable`: a send never hangs (the bound
of a whole send is in :class:`Client`'s docstring). A send whose
command was written and then got no reply is never retried (Redis may have run
it): it raises :class:`~sigbroker.errors.DeliveryUnknown`. Every redis-py
exception is translated here, at the boundary, and its text is scrubbed of the
URL's password and secrets. A client is fork-safe: a forked child starts with
fresh connections and a fresh group-commit state (see :func:`_after_fork_in_child`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import select
import socket
import threading
import time
import weakref
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Mapping
from time import monotonic as _monotonic
from typing import Any, TypeVar
from urllib.parse import unquote, unquote_plus

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from .codec import DEFAULT_LIMITS, Codec, Limits
from .config import SecretSetting, normalize_secrets, settings
from .errors import BatchRefused, BrokerUnavailable, ConfigurationError, DeliveryUnknown
from .naming import SignalLike, sender_reference

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - exercised when the extra is not installed
    hiredis = None

MaintNotificationsConfig: Any
try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - redis-py < 7 has no maintenance notifications
    MaintNotificationsConfig = None

__all__ = ["Batch", "Client", "mask_url"]

logger = logging.getLogger(__name__)

#: Time allowed to open a TCP (or TLS) connection to Redis.
CONNECT_TIMEOUT_S = 2.0
#: Time allowed for Redis to answer one command on an open connection.
SOCKET_TIMEOUT_S = 5.0
#: Total time a send may spend retrying connection errors before BrokerUnavailable.
SEND_TIMEOUT_S = 10.0
#: Retries of a send after connection errors (within SEND_TIMEOUT_S).
SEND_RETRIES = 3
#: Round trips a sender makes for others queued behind it before passing the lead on.
LEAD_ROUNDS = 8
#: Bytes read from the socket at once when reading replies.
READ_SIZE = 65536
#: Delay before the first retry of a failed connection; doubles each retry.
RETRY_BASE_DELAY_S = 0.05
#: Longest delay between two retries.
RETRY_MAX_DELAY_S = 1.0
#: Idle time after which the publisher's connection is checked (one poll, no
#: syscall otherwise) for a close by Redis before a command is written on it.
STALE_CHECK_IDLE_S = 0.001
#: Round trips a queued send may wait through (the one in flight, its own, and
#: one for scheduling slack); each is bounded by the client's timeouts.
FOLLOWER_WAIT_ROUNDS = 3
#: What a password or a secret in a URL is shown as.
MASK = "***"
#: Query (or fragment) parameters whose value is a secret, matched anywhere in
#: the name, case-insensitively: ``password``, ``ssl_password``, ``token``...
SECRET_PARAM = re.compile(r"pass|pwd|secret|token|auth|cred|key|private", re.IGNORECASE)

# Errors of the connection itself (as opposed to an error reply from Redis).
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
# A host, host:port or [v6]:port: what may follow the "@" that ends the userinfo.
_HOSTLIKE = re.compile(r"[\w.%\[\]:-]*")
_URL_DELIMITERS = re.compile(r"[/?#]")
_PARAMS_START = re.compile(r"[?#]")
# Query and fragment separators, kept in the output as they were.
_PARAM_SEPARATORS = re.compile(r"([&;?#])")
# A secret is also scrubbed piecewise, in case a parser split it at these.
_SECRET_PIECES = re.compile(r"[/?#@:&=]")

T = TypeVar("T")

SignalRef = SignalLike | str


def mask_url(url: str) -> str:
    """Return ``url`` with every credential replaced by ``***`` (safe to print or log).

    Masks the password of ``user:pass@`` and ``:pass@`` (also when it holds
    unescaped ``@``, ``/`` or ``?``), and the value of every query or fragment
    parameter whose name says it is a secret (``?password=``, the ACL user's
    ``?username=alice&password=...``, ``ssl_password``, ``token``...), in
    ``redis://``, ``rediss://`` and ``unix://`` URLs alike. Never raises.
    """
    try:
        return _parse_credentials(url)[0]
    except Exception:  # masking must never be the thing that fails
        return "<unparseable url>"


def _parse_credentials(url: str) -> tuple[str, list[str]]:
    """``url`` masked, and the secrets it held, as written in it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    secrets: list[str] = []
    head = ""
    at = _userinfo_end(rest)
    if at >= 0:
        user, colon, password = rest[:at].partition(":")
        if colon:
            secrets.append(password)
            head = f"{user}:{MASK}@"
        else:
            head = f"{user}@"  # a user name alone is not a secret
        rest = rest[at + 1 :]
    params = _PARAMS_START.search(rest)
    start = len(rest) if params is None else params.start()
    pieces = _PARAM_SEPARATORS.split(rest[start:])
    for i, piece in enumerate(pieces):
        name, eq, value = piece.partition("=")
        if eq and value and SECRET_PARAM.search(unquote_plus(name)):
            secrets.append(value)
            pieces[i] = f"{name}={MASK}"
    return scheme + head + rest[:start] + "".join(pieces), secrets


def _userinfo_end(rest: str) -> int:
    """Index of the "@" that ends the userinfo in ``rest`` (after ``scheme://``), or -1.

    It is the last "@" that a host (or nothing, in ``unix://:pw@/path``)
    follows, preferring one with no "?" or "#" before it (an "@" in a query
    value ends no userinfo), so that an unescaped "@", "/" or "?" in a
    password is masked with the rest of it.
    """
    for strict in (True, False):
        at = len(rest)
        while (at := rest.rfind("@", 0, at)) >= 0:
            userinfo = rest[:at]
            if not _HOSTLIKE.fullmatch(_URL_DELIMITERS.split(rest[at + 1 :], maxsplit=1)[0]):
                continue
            if strict and _PARAMS_START.search(userinfo):
                continue
            if ":" in userinfo or not _URL_DELIMITERS.search(userinfo):
                return at
    return -1


def _url_secrets(url: str) -> list[str]:
    """Every string that must not appear in a text about ``url``, longest first."""
    try:
        found = _parse_credentials(url)[1]
    except Exception:  # see mask_url
        return [url]
    out: set[str] = set()
    for secret in found:
        for form in (secret, unquote(secret), unquote_plus(secret)):
            out.add(form)
            out.update(p for p in _SECRET_PIECES.split(form) if len(p) >= 3)
    out.discard("")
    return sorted(out, key=len, reverse=True)


def _scrub(text: str, url: str, secrets: list[str]) -> str:
    """``text`` with ``url`` masked and every secret of it replaced by ``***``."""
    text = text.replace(url, mask_url(url))
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _pool_options(connect_timeout_s: float, socket_timeout_s: float) -> dict[str, Any]:
    # redis-py's own retries are turned off: the client owns the retry budget,
    # so that the bound on a send is the one the user configured.
    return {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }


def resp2_connection(pool: redis.ConnectionPool, *, timeout_s: float | None = None) -> Any:
    """Open a connection with ``pool``'s options (AUTH, TLS, SELECT) that speaks RESP2.

    The publisher and the subscription read their replies off the socket
    themselves, so the connection must send nothing unasked: RESP2, and no
    maintenance notifications. redis-py 8 defaults to RESP3 and puts the
    notification handlers in ``pool.connection_kwargs``; on a RESP2 connection
    without hiredis they raise "only supported with hiredis and RESP3 parsers".
    They are switched off explicitly, rather than filtered by name, so that a
    pool handler among the options is ignored too. ``timeout_s``, if given,
    replaces the pool's connect and socket timeouts.
    """
    options = {**pool.connection_kwargs, "protocol": 2}
    if timeout_s is not None:
        options["socket_connect_timeout"] = options["socket_timeout"] = timeout_s
    if MaintNotificationsConfig is not None:
        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    # redis-py leaves Connection's methods untyped; treat it as Any here.
    conn: Any = pool.connection_class(**options)
    conn.connect()
    return conn


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

#: Every live client, so that a forked child can reset each of them.
_LIVE_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()
# asyncio clients inherited by a forked child: never used there, and kept
# alive so that their finalizers do not act on the parent's transports.
_INHERITED: list[object] = []


def _after_fork_in_child() -> None:
    """Give every client of a forked child its own connections and locks.

    Registered with :func:`os.register_at_fork`, so it runs in the child
    before ``fork()`` returns there, once per fork rather than once per send:
    the send path pays nothing for fork safety.
    """
    for client in list(_LIVE_CLIENTS):
        try:
            client._after_fork()
        except Exception:  # one client's failure must not leave the others' parent state
            logger.exception("Could not reset %r after fork", client)


if hasattr(os, "register_at_fork"):  # every platform that can fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """A connection to the broker that publishes signals.

    ``url`` defaults to the configured one (``SIGBROKER_URL``, ``REDIS_URL``,
    ``redis://localhost:6379/0``); ``rediss://`` URLs, passwords and ACL users
    work as in redis-py. ``secret`` signs every message (a list rotates keys:
    the first signs). A connection error is retried up to ``retries`` times
    with a short backoff within ``timeout_s``; a send raises
    :class:`BrokerUnavailable` at the latest after ``timeout_s +
    connect_timeout_s + 2 * socket_timeout_s`` (one round trip: 22 s with the
    defaults), or :data:`FOLLOWER_WAIT_ROUNDS` times that when it is queued
    behind other threads' sends (66 s). A send whose command was written but
    not answered raises :class:`DeliveryUnknown` and is not retried.
    Thread-safe: share one client per process. Fork-safe: a child forked
    after the client was used (gunicorn ``--preload``, multiprocessing) opens
    its own connections.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str | None = None,
        secret: SecretSetting = None,
        timeout_s: float = SEND_TIMEOUT_S,
        retries: int = SEND_RETRIES,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        max_connections: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        env = settings()
        self.url = url if url is not None else env.url
        self.namespace = namespace if namespace is not None else env.namespace
        secrets = normalize_secrets(secret) if secret is not None else env.secrets
        self.codec = Codec(secrets, limits)
        self.timeout_s = timeout_s
        self.retries = retries
        self._options = _pool_options(connect_timeout_s, socket_timeout_s)
        self._max_connections = max_connections
        self._secrets = _url_secrets(self.url)
        try:
            self.pool = self._new_pool()
        except ValueError as exc:
            detail = self._scrub(str(exc))
            raise ConfigurationError(f"invalid Redis URL {mask_url(self.url)}: {detail}") from None
        self.redis = redis.Redis(connection_pool=self.pool)
        self._prefix = f"{self.namespace}:"
        self._channels: dict[str, str] = {}
        # Sequence numbers count per Redis server and channel: the workers of
        # each server see only what was published there. Pub/sub ignores the
        # database number and the user, so only the address makes the server.
        kwargs = self.pool.connection_kwargs
        self._server = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self._sequence_keys: dict[str, str] = {}
        self._commands: dict[str, bytes] = {}
        self._publisher = _Publisher(self)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )
        _LIVE_CLIENTS.add(self)

    def _new_pool(self) -> redis.ConnectionPool:
        return redis.ConnectionPool.from_url(
            self.url, max_connections=self._max_connections, **self._options
        )

    def _after_fork(self) -> None:
        """In a forked child: drop the connections, locks and queues of the parent."""
        self._publisher._after_fork()
        # A new pool rather than pool.reset(): a parent thread may have held
        # the old pool's lock at the fork, and reset() takes it in redis-py 8.
        # The old pool's connections close only the child's copies of their
        # sockets when collected (redis-py shuts a socket down only in the
        # process that opened it), so the parent's connections live on.
        self.pool = self._new_pool()
        self.redis = redis.Redis(connection_pool=self.pool)
        _INHERITED.extend(self._async.values())
        self._async = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<Client {mask_url(self.url)} namespace={self.namespace!r}>"

    # -- naming ---------------------------------------------------------------

    def channel(self, signal: SignalRef) -> str:
        """Return the channel that carries ``signal`` (a Signal or a signal name)."""
        name = signal if isinstance(signal, str) else signal.name
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = self._prefix + name
        return channel

    def encode(self, signal: SignalRef, sender: object, kwargs: Mapping[str, Any]) -> bytes:
        """Check and encode one message; raises PayloadError and publishes nothing.

        Its sequence number counts on the signal's channel of this client's
        Redis server, as the workers that subscribe to that channel there see
        them: two clients of one namespace on two servers count apart.
        """
        if type(signal) is str:
            return self.codec.pack(
                signal, sender_reference(sender), kwargs, self._sequence_key(signal)
            )
        assert not isinstance(signal, str)
        if signal.providing_args is not None:
            signal.validate(kwargs)
        name = signal.name
        return self.codec.pack(name, sender_reference(sender), kwargs, self._sequence_key(name))

    def _sequence_key(self, name: str) -> str:
        # What the process's sequence counter of signal ``name`` is kept under.
        key = self._sequence_keys.get(name)
        if key is None:
            key = self._sequence_keys[name] = f"{self._server} {self.channel(name)}"
        return key

    def _command(self, signal: SignalRef) -> bytes:
        # The PUBLISH command up to the message, framed once per signal.
        name = signal if isinstance(signal, str) else signal.name
        prefix = self._commands.get(name)
        if prefix is None:
            prefix = self._commands[name] = _publish_command(self.channel(name))
        return prefix

    # -- sending --------------------------------------------------------------

    def send(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> int:
        """Publish one signal; return how many workers received it.

        Raises :class:`PayloadError` (nothing published) for a payload that
        does not encode or breaks ``providing_args``, and
        :class:`BrokerUnavailable` when Redis can not be reached in time.
        When other threads are sending through this client at the same moment,
        their messages and this one travel together in one pipeline.
        """
        data = self.encode(signal, sender, kwargs)
        count: int = self._publisher.publish(_frame(self._command(signal), data))
        return count

    def publish(self, channel: str, data: bytes) -> int:
        """Publish raw bytes on a channel (for tools and tests); return the receiver count."""
        count: int = self._publisher.publish(_frame(_publish_command(channel), data))
        return count

    def batch(self) -> Batch:
        """Collect many sends and publish them in one round trip on exit.

        ::

            with client.batch() as batch:
                for order in orders:
                    batch.send(order_placed, sender=Order, order_id=order.id)
            batch.results  # one receiver count per send, in order
        """
        return Batch(self)

    async def asend(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> int:
        """Like :meth:`send`, on ``redis.asyncio``: for use inside an event loop.

        Getting a healthy connection (connect, or replace a pooled one that
        Redis closed) is retried; once the command is being written, an error
        raises :class:`DeliveryUnknown` and nothing is retried. Cancelling it
        (``asyncio.wait_for``, say) once the command is being written closes
        its connection, so no later send reads this one's reply.
        """
        frames = _frame(self._command(signal), self.encode(signal, sender, kwargs))
        pool: Any = self._async_redis().connection_pool  # redis-py leaves it untyped
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                conn = await _checked_out(pool)
            except _CONNECTION_ERRORS as exc:
                attempt += 1  # nothing was written: safe to try again
                await asyncio.sleep(self._retry_delay(attempt, deadline, exc))
                continue
            except redis.RedisError as exc:
                raise self._unavailable(exc, attempt + 1) from exc
            try:
                await conn.send_packed_command(frames, check_health=False)
                return int(await conn.read_response())
            except _CONNECTION_ERRORS as exc:
                await conn.disconnect()
                raise self._delivery_unknown(exc) from exc
            except redis.RedisError as exc:
                raise self._unavailable(exc, attempt + 1) from exc
            except BaseException:
                # Cancelled (asyncio.wait_for, a task group) or interrupted
                # once the command may have been written: its reply may still
                # come, and the next command on this connection would read it
                # as its own. The connection goes, whatever cancels us again.
                await asyncio.shield(conn.disconnect(nowait=True))
                raise
            finally:
                await pool.release(conn)

    def _async_redis(self) -> redis.asyncio.Redis:
        # An asyncio connection belongs to the loop that opened it.
        loop = asyncio.get_running_loop()
        conn = self._async.get(loop)
        if conn is None:
            conn = redis.asyncio.Redis.from_url(self.url, **self._options)
            self._async[loop] = conn
        return conn

    async def aclose(self) -> None:
        """Close the asyncio connections of the running loop; call before the loop ends."""
        conn = self._async.pop(asyncio.get_running_loop(), None)
        if conn is not None:
            await conn.aclose()

    # -- inspection -----------------------------------------------------------

    def ping(self) -> float:
        """Round-trip one PING; return the time it took in seconds."""
        start = time.perf_counter()
        self._call(self.redis.ping)
        return time.perf_counter() - start

    def server_info(self) -> dict[str, Any]:
        """Return Redis's INFO server section (version, mode, uptime...)."""
        info: dict[str, Any] = self._call(lambda: self.redis.info("server"))
        return info

    def channels(self) -> dict[str, int]:
        """Return the live channels of this namespace and their subscriber counts."""

        def query() -> dict[str, int]:
            names = sorted(_text(c) for c in self.redis.pubsub_channels(self._prefix + "*"))
            if not names:
                return {}
            return {_text(c): int(n) for c, n in self.redis.pubsub_numsub(*names)}

        return self._call(query)

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(redis_client)`` under this client's retry bound and error translation.

        Connection errors are retried, and redis-py can not tell whether they
        came before or after the command was written: ``fn`` must be safe to
        run twice (reads, ``SET`` of a heartbeat, ``DEL``). Publishing goes
        through :meth:`send`, which never retries a written command.
        """
        return self._call(lambda: fn(self.redis))

    # -- retries and errors ---------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                return fn()
            except (redis.ConnectionError, OSError) as exc:
                # Raised before Redis could act on the command (refused, reset,
                # broken pipe on a stale pooled connection): retrying is safe.
                attempt += 1
                time.sleep(self._retry_delay(attempt, deadline, exc))
            except redis.RedisError as exc:
                # Timeouts land here: the command may have run, so no retry.
                raise self._unavailable(exc, attempt + 1) from exc

    def _retry_delay(self, attempt: int, deadline: float, exc: BaseException) -> float:
        delay = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2.0 ** (attempt - 1))
        remaining = deadline - time.monotonic()
        if attempt > self.retries or remaining <= delay:
            raise self._unavailable(exc, attempt) from exc
        logger.debug(
            "Redis at %s: %s; retry %d in %.2fs",
            mask_url(self.url),
            self._detail(exc),
            attempt,
            delay,
        )
        return delay

    def _scrub(self, text: str) -> str:
        """``text`` (from redis-py, say) with this client's URL masked and its secrets hidden."""
        return _scrub(text, self.url, self._secrets)

    def _detail(self, exc: BaseException) -> str:
        return self._scrub(str(exc)) or type(exc).__name__

    def _unavailable(self, exc: BaseException, attempts: int) -> BrokerUnavailable:
        noun = "attempt" if attempts == 1 else "attempts"
        return BrokerUnavailable(
            f"Redis at {mask_url(self.url)} is unavailable ({self._detail(exc)}) "
            f"after {attempts} {noun}"
        )

    def _refused(self, reply: BaseException) -> BrokerUnavailable:
        """The error of one message that Redis refused (an error reply): it was not delivered."""
        return BrokerUnavailable(
            f"Redis at {mask_url(self.url)} refused the message ({self._detail(reply)}): "
            "it was not delivered"
        )

    def _counts(self, replies: list[Any]) -> list[int]:
        """The receiver counts of a batch's replies; BatchRefused if Redis refused any."""
        if all(type(r) is int for r in replies):
            return replies
        results: list[int | BrokerUnavailable] = [
            r if type(r) is int else self._refused(r) for r in replies
        ]
        refused = [r for r in results if not isinstance(r, int)]
        raise BatchRefused(
            f"Redis at {mask_url(self.url)} refused {len(refused)} of the batch's "
            f"{len(results)} messages ({refused[0]}); the others were delivered: "
            "see the error's results",
            results,
        )

    def _delivery_unknown(self, exc: BaseException, messages: int = 1) -> DeliveryUnknown:
        what = (
            "the message was written"
            if messages == 1
            else f"a pipeline of {messages} messages (this send's among them) was written"
        )
        return DeliveryUnknown(
            f"Redis at {mask_url(self.url)} stopped answering after {what} "
            f"({self._detail(exc)}): the message may have been delivered, so it was not sent again"
        )

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection; safe to call twice."""
        self._publisher.close()
        self.pool.disconnect()
        # asyncio connections can only be closed on the loop that opened them
        # (see aclose); dropping them lets that loop's transports close them.
        self._async.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _publish_command(channel: str) -> bytes:
    """A PUBLISH command in Redis's protocol, up to (not including) the message."""
    raw = channel.encode()
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(raw), raw)


def _frame(command: bytes, data: bytes) -> bytes:
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


class _Publisher:
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

    def __init__(self, client: Client) -> None:
        self._client = client
        self._conn: Any = None
        self._reader: Any = None
        self._used = 0.0  # time.monotonic() of the last write
        self._mutex = threading.Lock()
        self._busy = False
        self._queue: list[_Waiter] = []
        options = client._options
        # The longest a round trip can take: the retry budget, then one last
        # connect and a write and a read that each may use the socket timeout.
        round_trip_s = (
            client.timeout_s + options["socket_connect_timeout"] + 2 * options["socket_timeout"]
        )
        self._wait_s = FOLLOWER_WAIT_ROUNDS * round_trip_s

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
                return self._client._counts(replies)
            reply = replies[0]
            if type(reply) is int:
                return reply
            raise self._client._refused(reply)
        if not waiter.wake.acquire(timeout=self._wait_s):
            self._give_up(waiter)
        if waiter.lead:
            self._keep_leading()  # the first batch it sends holds its own message
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _give_up(self, waiter: _Waiter) -> None:
        """Raise for a queued send that got no turn in time (unless woken just now)."""
        client = self._client
        with self._mutex:  # the lead is handed over under the mutex
            if waiter.wake.acquire(blocking=False):
                return  # woken between the timeout and here: carry on
            queued = waiter in self._queue
            if queued:
                self._queue.remove(waiter)
        if queued:
            raise BrokerUnavailable(
                f"Redis at {mask_url(client.url)} is unavailable: a send queued behind "
                f"others got no turn within {self._wait_s:.0f}s; it was not sent"
            )
        # A leader took it into a pipeline that has not come back.
        raise client._delivery_unknown(
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
        client = self._client
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
                        w.result = client._counts(replies[at : at + w.count])
                    except BatchRefused as exc:
                        w.error = exc
                elif type(reply := replies[at]) is int:
                    w.result = reply
                else:
                    w.error = client._refused(reply)
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
        client = self._client
        deadline = 0.0
        attempt = 0
        while True:
            written = False
            try:
                conn = self._conn
                now = _monotonic()
                if conn is None or (now - self._used > STALE_CHECK_IDLE_S and _closed(conn._sock)):
                    conn = self._connect()
                self._used = now
                sock = conn._sock
                sent = sock.send(payload)  # raises before any byte leaves, or sends some
                written = True
                if sent < len(payload):
                    sock.sendall(memoryview(payload)[sent:])
                if self._reader is not None:
                    return self._read(sock, replies)
                return [_resp_reply(conn) for _ in range(replies)]
            except _CONNECTION_ERRORS as exc:
                self._drop()
                if written:
                    raise client._delivery_unknown(exc, replies) from exc
                # Refused, a connect timeout, a stale connection: nothing of
                # this command reached Redis, so a fresh connection may try.
                attempt += 1
                if not deadline:
                    deadline = time.monotonic() + client.timeout_s
                time.sleep(client._retry_delay(attempt, deadline, exc))
            except redis.RedisError as exc:
                # Not an error reply (those are returned): the connection's
                # handshake (AUTH, SELECT) was refused.
                self._drop()
                raise client._unavailable(exc, attempt + 1) from exc
            except BaseException:
                self._drop()
                raise

    def _connect(self) -> Any:
        self._drop()  # a stale one, if any
        conn = resp2_connection(self._client.pool)  # AUTH, TLS, SELECT: redis-py's handshake
        self._conn = conn
        if hiredis is not None:
            # From here on the replies are read off the socket by our own
            # reader: redis-py's parser has nothing buffered after the handshake.
            self._reader = hiredis.Reader(replyError=redis.ResponseError)
        return conn

    def _read(self, sock: Any, replies: int) -> list[Any]:
        # Error replies come out of the reader as ResponseError values, kept
        # in their place: reading never stops before the last reply.
        reader = self._reader
        out: list[Any] = []
        while len(out) < replies:
            reply = reader.gets()
            if reply is False:
                data = sock.recv(READ_SIZE)
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                reader.feed(data)
            else:
                out.append(reply)
        return out

    def _drop(self) -> None:
        conn, self._conn, self._reader = self._conn, None, None
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
        conn, self._conn, self._reader = self._conn, None, None
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            sock.close()
        self._mutex = threading.Lock()
        self._busy = False
        self._queue = []


def _resp_reply(conn: Any) -> Any:
    """One reply read by redis-py's parser; an error reply is returned, not raised."""
    try:
        return conn.read_response()
    except redis.ResponseError as exc:  # the whole reply was read: still in step
        return exc


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
        if sock is not None and sock.fileno() >= 0 and _closed(sock):
            await conn.disconnect()
            await conn.connect()
    except BaseException:
        await pool.release(conn)
        raise
    return conn


def _closed(sock: socket.socket) -> bool:
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Batch:
    """Sends collected by :meth:`Client.batch`, published as one pipeline on exit.

    Each ``send`` is checked and encoded at once, so a bad payload raises
    :class:`PayloadError` at the call and is never queued. ``results`` holds the
    receiver count of each send once the block exits. If the block raises,
    nothing is published.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._queued: list[tuple[bytes, bytes]] = []
        self.results: list[int] = []

    def send(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> None:
        """Queue one signal for publishing when the batch ends."""
        data = self.client.encode(signal, sender, kwargs)
        self._queued.append((self.client._command(signal), data))

    def __len__(self) -> int:
        return len(self._queued)

    def flush(self) -> list[int]:
        """Publish everything queued in one round trip; return the receiver counts.

        If Redis refuses some of the messages (an ACL that forbids one
        channel, say) and runs the others, raises :class:`BatchRefused`,
        whose ``results`` hold each message's count or the error of its
        refusal, in order: resend only the refused ones. ``results`` of the
        batch then gets nothing. The messages are never all retried.
        """
        queued, self._queued = self._queued, []
        if not queued:
            return []

        frames = b"".join(_frame(command, data) for command, data in queued)
        counts: list[int] = self.client._publisher.publish(frames, len(queued), many=True)
        self.results.extend(counts)
        return counts

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._queued.clear()
