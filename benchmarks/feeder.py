"""Publishing many prepared messages fast, straight over a socket.

The worker figures must queue messages faster than any subscriber drains
them, and the publisher must cost the same for every side. The feeder writes
pipelined ``PUBLISH`` commands (or ``XADD`` to a stream, for figure 10) in
RESP on a plain socket and checks every reply, about ten times faster than
redis-py's pipeline. It is test equipment, not a side of any comparison.

A worker rejects a sigbroker message that it has seen before (its origin's
sequence number did not move on), so replayed captures are renumbered:
with ``first_seq``, the sequence numbers of the published copies count up
from it, as those of one real sender do.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

#: Commands written before the replies are read back.
CHUNK_COMMANDS = 10_000
#: Longest wait for Redis to answer one chunk.
REPLY_TIMEOUT_S = 30.0
#: What precedes the sequence number of an (unsigned) sigbroker message: key "n", uint64.
SEQ_FIELD = b"\xa1n\xcf"


def _command(channel: bytes, data: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel),
        channel,
        len(data),
        data,
    )


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _xadd(stream: bytes, field: bytes, data: bytes, maxlen: int) -> bytes:
    return _resp(b"XADD", stream, b"MAXLEN", b"~", b"%d" % maxlen, b"*", field, data)


class Feeder:
    """A raw connection that publishes prepared messages in pipelined chunks."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self._sock.settimeout(REPLY_TIMEOUT_S)

    def publish(
        self,
        channel: str,
        messages: Sequence[bytes],
        total: int,
        receivers: int = 1,
        *,
        first_seq: int | None = None,
    ) -> None:
        """Publish ``total`` messages on ``channel``, cycling through ``messages``.

        With ``first_seq``, ``messages`` are unsigned sigbroker messages and the
        copies published carry the sequence numbers ``first_seq``, ``first_seq
        + 1``... Every reply must say that ``receivers`` subscribers got the
        message; anything else (nobody subscribed, an error) raises
        RuntimeError, since a message that reached nobody would make the
        benchmark wait forever.
        """
        commands = [_command(channel.encode(), m) for m in messages]
        expected = b":%d\r\n" % receivers
        for n in self._send(commands, total, first_seq):
            replies = self._read_lines(n)
            if replies != expected * n:
                bad = next(r for r in replies.split(b"\r\n") if r + b"\r\n" != expected)
                raise RuntimeError(f"PUBLISH on {channel} answered {bad!r}, expected {expected!r}")

    def append(
        self,
        stream: str,
        messages: Sequence[bytes],
        total: int,
        *,
        field: str = "d",
        maxlen: int = 100_000,
        first_seq: int | None = None,
    ) -> None:
        """Append ``total`` entries ``{field: message}`` to ``stream``, cycling ``messages``.

        ``XADD stream MAXLEN ~ maxlen * field message``, as a durable send does.
        ``first_seq`` renumbers sigbroker messages as :meth:`publish` does. Every
        reply must be an entry id; an error raises RuntimeError.
        """
        commands = [_xadd(stream.encode(), field.encode(), m, maxlen) for m in messages]
        for n in self._send(commands, total, first_seq):
            # An entry id reply is "$<len>\r\n<id>\r\n": two line ends each.
            replies = self._read_lines(2 * n)
            if replies.count(b"\r\n$") != n - 1 or not replies.startswith(b"$"):
                raise RuntimeError(f"XADD to {stream} failed: {replies[:200]!r}")

    def _send(self, commands: Sequence[bytes], total: int, first_seq: int | None) -> Iterator[int]:
        """Send ``total`` of ``commands`` (cycling; renumbered from ``first_seq`` if given)
        in chunks; yield each chunk's size once it is written, for its replies to be read."""
        halves = [_split_at_sequence(c) for c in commands] if first_seq is not None else []
        sent = 0
        while sent < total:
            n = min(CHUNK_COMMANDS, total - sent)
            if first_seq is None:
                chunk = b"".join(commands[(sent + i) % len(commands)] for i in range(n))
            else:
                chunk = _numbered(halves, sent, n, first_seq + sent)
            self._sock.sendall(chunk)
            yield n
            sent += n

    def _read_lines(self, lines: int) -> bytes:
        buf = bytearray()
        while buf.count(b"\r\n") < lines:
            data = self._sock.recv(1 << 20)
            if not data:
                raise RuntimeError("Redis closed the feeder's connection")
            buf += data
            if buf[:1] == b"-":
                raise RuntimeError(f"Redis refused a command: {bytes(buf[:200])!r}")
        return bytes(buf)

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()


def _split_at_sequence(command: bytes) -> tuple[bytes, bytes]:
    at = command.index(SEQ_FIELD) + len(SEQ_FIELD)
    return command[:at], command[at + 8 :]


def _numbered(halves: Sequence[tuple[bytes, bytes]], start: int, n: int, seq: int) -> bytes:
    """``n`` commands from ``halves`` (cycling from ``start``) numbered from ``seq``."""
    count = len(halves)
    parts = []
    for i in range(n):
        head, tail = halves[(start + i) % count]
        parts += (head, (seq + i).to_bytes(8, "big"), tail)
    return b"".join(parts)
