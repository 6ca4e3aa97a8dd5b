"""A TCP proxy for fault tests that can freeze its connections without closing them.

``freeze()`` makes every connection open at that moment half-open in effect:
both sockets stay open, but no byte passes in either direction, as when a NAT
or a load balancer silently forgets a flow. Connections opened afterwards
pass traffic normally, so a client that reconnects gets through.

Two more faults, on the connections open at the call as well, make a command
run in Redis while its client never learns the outcome: ``swallow_replies()``
forwards the client's bytes and drops Redis's answers (the client times out),
and ``close_after_reply()`` forwards the client's bytes, waits for Redis's
answer, drops it and closes the connection (the client reads end of file).
``delay_replies()`` makes a reply late instead: Redis's answers are held until
the client writes its next command, then passed on after it, as when a reply
arrives just after its client gave up waiting and moved on.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.frozen = False
        self.closed = False
        self.swallow = False  # drop what Redis sends back
        self.cut = False  # drop Redis's next answer, then close both ends
        self.delay = False  # hold Redis's answers until the client writes again
        self.held: list[bytes] = []

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class FreezingProxy:
    """Forwards 127.0.0.1:<port> to ``target_port``; ``freeze()`` stalls open connections."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._running = True
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @property
    def url(self) -> str:
        """The ``redis://`` URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self) -> int:
        """Stall every connection open now; return how many were frozen."""
        with self._lock:
            live = [p for p in self._pairs if not p.closed]
            for pair in live:
                pair.frozen = True
            return len(live)

    def swallow_replies(self) -> int:
        """On every connection open now, pass the client's bytes up and drop the replies."""
        with self._lock:
            live = [p for p in self._pairs if not p.closed]
            for pair in live:
                pair.swallow = True
            return len(live)

    def close_after_reply(self) -> int:
        """On every connection open now, let the next command run, drop its reply and close."""
        with self._lock:
            live = [p for p in self._pairs if not p.closed]
            for pair in live:
                pair.cut = True
            return len(live)

    def delay_replies(self) -> int:
        """On every connection open now, hold the replies until the client's next command."""
        with self._lock:
            live = [p for p in self._pairs if not p.closed]
            for pair in live:
                pair.delay = True
            return len(live)

    def connections(self) -> int:
        """Number of connections open and not frozen."""
        with self._lock:
            return sum(1 for p in self._pairs if not p.closed and not p.frozen)

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            if not self._running:
                pair.close()
                return
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        ends = {pair.client: pair.upstream, pair.upstream: pair.client}
        while self._running and not pair.closed:
            if pair.frozen:
                # Hold everything: read nothing, forward nothing, close nothing.
                threading.Event().wait(0.05)
                continue
            try:
                readable, _, _ = select.select(list(ends), [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        pair.close()
                        return
                    if pair.frozen:
                        return  # drop it: the flow is dead from here on
                    if pair.delay:
                        if sock is pair.upstream:
                            pair.held.append(data)
                            continue
                        if pair.held:  # the next command: the late replies follow it
                            pair.upstream.sendall(data)
                            pair.client.sendall(b"".join(pair.held))
                            pair.delay, pair.held = False, []
                            continue
                    if sock is pair.upstream and (pair.swallow or pair.cut):
                        if pair.cut:
                            pair.close()  # the command ran; its client gets end of file
                            return
                        continue
                    ends[sock].sendall(data)
            except OSError:
                pair.close()
                return

    def close(self) -> None:
        """Stop the proxy and close every connection."""
        self._running = False
        with contextlib.suppress(OSError):
            self._listener.close()
        self._accept_thread.join(timeout=5)
        with self._lock:
            for pair in self._pairs:
                pair.close()
