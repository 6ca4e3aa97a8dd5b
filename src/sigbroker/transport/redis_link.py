"""Commands framed by hand, and a connection of its own for a durable consumer's side work.

:func:`command` frames any command in Redis's protocol. :func:`passing` tells a refusal that
passes (Redis loading, a failover) from one for a human. A :class:`Link` is
a RESP2 connection for the commands a durable consumer sends off its read
path (claims, retry bookkeeping, dead letters): the replies come back raw,
in one shape whatever redis-py's version and protocol.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from .redis_endpoint import CONNECTION_ERRORS, Endpoint, Replies

__all__ = ["Link", "command", "pairs", "passing"]


def command(*args: bytes | str | int | float) -> bytes:
    """One command in Redis's protocol."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def pairs(flat: list[Any]) -> dict[str, Any]:
    """A RESP2 map (as XINFO replies): alternate names and values, names decoded."""
    it = iter(flat)
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): v for k, v in zip(it, it, strict=False)
    }


class Link:
    """A RESP2 connection for one round trip at a time, from any thread.

    Connection errors are retried within the endpoint's budget, so every
    command sent here must be safe to run twice (claims, acks, hash writes)
    or harmless when it is (a dead letter written twice).
    """

    def __init__(self, endpoint: Endpoint, use_hiredis: bool) -> None:
        self._endpoint = endpoint
        self._use_hiredis = use_hiredis
        self._lock = threading.Lock()
        self._conn: Any = None
        self._replies: Replies | None = None

    def run(self, *commands: bytes) -> list[Any]:
        """Send ``commands`` (framed by :func:`command`) as one pipeline; return the replies.

        An error reply comes back as a ``redis.ResponseError`` in its place.
        """
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
        """Close the connection (the next round trip opens another)."""
        conn, self._conn, self._replies = self._conn, None, None
        if conn is not None:
            conn.disconnect()


#: Error replies that pass: the read is made again after a backoff.
PASSING = ("NOGROUP", "LOADING", "BUSY ", "MASTERDOWN", "READONLY", "OOM", "TRYAGAIN")
PASSING_TYPES: tuple[type[Exception], ...] = tuple(
    getattr(redis.exceptions, name)
    for name in ("BusyLoadingError", "ReadOnlyError", "OutOfMemoryError")
    if hasattr(redis.exceptions, name)  # as redis-py's own parser names them
)


def passing(exc: redis.ResponseError) -> bool:
    """Whether Redis refused a read for a while only (loading, failover, memory)."""
    return isinstance(exc, PASSING_TYPES) or str(exc).startswith(PASSING)
