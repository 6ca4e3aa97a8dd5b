"""A throwaway Redis for development, demos and tests.

:class:`DevServer` runs ``redis-server`` from ``PATH`` on a loopback port with
persistence off; where no ``redis-server`` is installed it falls back to
fakeredis's TCP server in a thread (if fakeredis is importable). The test
suite, ``sigbroker server`` and ``sigbroker demo`` all start their Redis here.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

from .errors import ConfigurationError

__all__ = ["DevServer", "free_port", "redis_server_path"]

#: How long to wait for a freshly started server to answer PING.
START_TIMEOUT_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_path() -> str | None:
    """Return the path of the ``redis-server`` binary, or None if none is installed."""
    return shutil.which("redis-server")


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class DevServer:
    """One Redis on a loopback port, started and stopped on demand.

    ``backend`` is ``"redis-server"`` or ``"fakeredis"``; pass ``backend=None``
    to choose: redis-server when installed, else fakeredis. The port is kept
    across :meth:`kill` and :meth:`start`, so a test can kill the server and
    bring it back where clients expect it.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        backend: str | None = None,
        append_only: bool = False,
    ) -> None:
        if backend is None:
            backend = "redis-server" if redis_server_path() else "fakeredis"
        if backend not in ("redis-server", "fakeredis"):
            raise ConfigurationError(f"unknown dev server backend {backend!r}")
        self.host = host
        self.port = port or free_port(host)
        self.backend = backend
        self._process: subprocess.Popen[bytes] | None = None
        self._fake: Any = None
        self._fake_thread: threading.Thread | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        #: redis-server writes every command to its append-only file before it
        #: replies, so a restart (a kill included) loses nothing it answered.
        self.append_only = append_only

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server (database 0)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the server process (or thread) is alive."""
        if self._process is not None:
            return self._process.poll() is None
        return self._fake is not None

    def start(self) -> DevServer:
        """Start the server and wait until it answers PING; return self."""
        if self.running:
            return self
        if self.backend == "redis-server":
            self._start_redis_server()
        else:
            self._start_fakeredis()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(self.host, self.port):
            if self._process is not None and self._process.poll() is not None:
                raise ConfigurationError(
                    f"redis-server exited with code {self._process.returncode} on port {self.port}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(f"Redis on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def _start_redis_server(self) -> None:
        binary = redis_server_path()
        if binary is None:
            raise ConfigurationError("redis-server is not installed")
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="sigbroker-redis-")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            *(("--appendonly", "yes", "--appendfsync", "always") if self.append_only else ()),
            "--dir",
            self._dir.name,
            "--logfile",
            "",
            "--loglevel",
            "warning",
        ]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _start_fakeredis(self) -> None:
        try:
            from fakeredis import TcpFakeServer
        except ImportError as exc:
            raise ConfigurationError(
                "no redis-server on PATH and fakeredis is not installed: "
                "install one of them (apt-get install redis-server, pip install fakeredis)"
            ) from exc
        TcpFakeServer.daemon_threads = True
        self._fake = TcpFakeServer((self.host, self.port), server_type="redis")
        self._fake_thread = threading.Thread(
            target=self._fake.serve_forever, name="fakeredis-tcp", daemon=True
        )
        self._fake_thread.start()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL for redis-server), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._stop_fake()

    def stop(self) -> None:
        """Stop the server politely, then by force; safe to call twice."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._stop_fake()

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None

    def _stop_fake(self) -> None:
        if self._fake is not None:
            self._fake.shutdown()
            self._fake.server_close()
            self._fake = None
        if self._fake_thread is not None:
            self._fake_thread.join(timeout=5)
            self._fake_thread = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
