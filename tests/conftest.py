"""Shared fixtures: real redis-server processes on free loopback ports.

One server runs for the whole session; fault tests take their own from
``redis_factory`` and may kill and restart them. Without a ``redis-server``
binary the suite falls back to fakeredis's TCP server, unless
``SIGBROKER_REQUIRE_REDIS=1`` (CI) makes that an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sigbroker import config
from sigbroker.devserver import DevServer, redis_server_path
from tests.helpers import ROOT, WorkerProcess

REQUIRE_REDIS = os.environ.get("SIGBROKER_REQUIRE_REDIS") == "1"


def _backend() -> str:
    if redis_server_path():
        return "redis-server"
    if REQUIRE_REDIS:
        pytest.exit(
            "SIGBROKER_REQUIRE_REDIS=1 but no redis-server is on PATH: "
            "install it (apt-get install redis-server) instead of falling back to fakeredis",
            returncode=3,
        )
    return "fakeredis"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[DevServer]:
    """The session's Redis: real redis-server, or fakeredis on a laptop without one."""
    server = DevServer(backend=_backend())
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: DevServer) -> str:
    """URL of the session's Redis; the test owns a fresh namespace there (see ``namespace``)."""
    return redis_server.url


@pytest.fixture
def real_redis(redis_server: DevServer) -> DevServer:
    """The session server, for tests that need real redis-server behaviour."""
    if redis_server.backend != "redis-server":
        pytest.skip("needs a real redis-server")
    return redis_server


@pytest.fixture
def redis_factory() -> Iterator[Callable[[], DevServer]]:
    """Start extra redis-servers that the test may kill and restart; all are stopped after."""
    servers: list[DevServer] = []

    def make() -> DevServer:
        if _backend() != "redis-server":
            pytest.skip("fault tests need a real redis-server to kill and restart")
        server = DevServer(backend="redis-server")
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so channels and heartbeats never collide."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from the environment's defaults, with no default client left over."""
    for name in (
        "SIGBROKER_URL",
        "REDIS_URL",
        "SIGBROKER_NAMESPACE",
        "SIGBROKER_SECRET",
        "SIGBROKER_SECRET_FILE",
        "SIGBROKER_EAGER",
    ):
        monkeypatch.delenv(name, raising=False)
    config.reset()
    yield
    config.reset()


@pytest.fixture
def start_worker(
    redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``sigbroker worker`` subprocesses on the test's namespace; all are stopped after."""
    started: list[WorkerProcess] = []

    def start(url: str | None = None, **options: Any) -> WorkerProcess:
        out = tmp_path / f"worker{len(started)}.bin"
        worker = WorkerProcess(url or redis_url, namespace, out, **options)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def listener(redis_url: str, namespace: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``sigbroker listen`` subprocesses on the test's namespace; all are killed after."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sigbroker",
                "--url",
                redis_url,
                "--namespace",
                namespace,
                "listen",
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()
