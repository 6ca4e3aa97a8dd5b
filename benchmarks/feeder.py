"""Publishing many prepared messages fast, straight over a socket.

The worker figures must queue messages faster than any subscriber drains
them, and the publisher must cost the same for every side. The feeder writes
pipelined ``PUBLISH`` commands in RESP on a plain socket and checks every
reply, about ten times faster than redis-py's pipeline. It is test equipment,
not a side of any comparison.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

#: Commands written before the replies are read back.
CHUNK_COMMANDS = 10_000
#: Longest wait for Redis to answer one chunk.
REPLY_TIMEOUT_S = 30.0


def _command(channel: bytes, data: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel),
        channel,
        len(data),
        data,
    )


class Feeder:
    """A raw connection that publishes prepared messages in pipelined chunks."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self._sock.settimeout(REPLY_TIMEOUT_S)

    def publish(
        self, channel: str, messages: Sequence[bytes], total: int, receivers: int = 1
    ) -> None:
        """Publish ``total`` messages on ``channel``, cycling through ``messages``.

        Every reply must say that ``receivers`` subscribers got the message;
        anything else (nobody subscribed, an error) raises RuntimeError, since a
        message that reached nobody would make the benchmark wait forever.
        """
        commands = [_command(channel.encode(), m) for m in messages]
        expected = b":%d\r\n" % receivers
        sent = 0
        while sent < total:
            n = min(CHUNK_COMMANDS, total - sent)
            chunk = b"".join(commands[(sent + i) % len(commands)] for i in range(n))
            self._sock.sendall(chunk)
            replies = self._read_replies(n, len(expected))
            if replies != expected * n:
                bad = next(r for r in replies.split(b"\r\n") if r + b"\r\n" != expected)
                raise RuntimeError(f"PUBLISH on {channel} answered {bad!r}, expected {expected!r}")
            sent += n

    def _read_replies(self, n: int, size: int) -> bytes:
        buf = bytearray()
        while buf.count(b"\r\n") < n:
            data = self._sock.recv(1 << 20)
            if not data:
                raise RuntimeError("Redis closed the feeder's connection")
            buf += data
            if buf[:1] == b"-":
                raise RuntimeError(f"Redis refused a PUBLISH: {bytes(buf[:200])!r}")
        return bytes(buf)

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()
