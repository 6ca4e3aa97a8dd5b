"""Works as installed without hiredis: redis-py's pure-Python parser end to end.

hiredis is a dependency, but a platform without a wheel (or a broken build)
leaves users on the pure-Python path. redis-py 8 turned that path into a
worker that never subscribed, and no test noticed because every test process
had hiredis. Here the worker and the sender run in subprocesses where
``import hiredis`` fails, on whatever redis-py is installed (the newest in
the nox session ``newest``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from tests.app.signals import User, user_registered
from tests.helpers import ROOT, WorkerProcess

#: Directory whose ``hiredis.py`` raises ImportError; first on PYTHONPATH hides the real one.
NO_HIREDIS_DIR = ROOT / "tests" / "no_hiredis"
#: Longest a helper subprocess may run, in seconds.
SUBPROCESS_TIMEOUT_S = 60

# Sends a signal three ways (send, batch, asend) from a process without hiredis
# and prints each receiver count.
SENDER = """
import asyncio, sys
from sigbroker import Client
from tests.app.signals import User, user_registered

url, namespace = sys.argv[1:3]
with Client(url, namespace=namespace) as client:
    counts = [client.send(user_registered, sender=User, user=1, request=None)]
    with client.batch() as batch:
        batch.send(user_registered, sender=User, user=2, request=None)
    counts += batch.results

    async def main() -> int:
        try:
            return await client.asend(user_registered, sender=User, user=3, request=None)
        finally:
            await client.aclose()

    counts.append(asyncio.run(main()))
print(*counts)
"""


def _env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(NO_HIREDIS_DIR), str(ROOT)])}


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **_env()},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_shadow_module_hides_hiredis_from_redis_py_and_sigbroker() -> None:
    out = _run(
        "-c",
        "import redis.utils, sigbroker.client, sigbroker.transport.redis_endpoint as e;"
        "print(redis.utils.HIREDIS_AVAILABLE, e.hiredis, sigbroker.Client('redis://h').transport.use_hiredis)",
    )
    assert out.split() == ["False", "None", "False"]


def test_worker_without_hiredis_subscribes_and_receives(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    worker = start_worker(env=_env())
    worker.wait_subscribed(f"{namespace}:{user_registered.name}")

    assert _run("-c", SENDER, redis_url, namespace).split() == ["1", "1", "1"]

    rows = worker.wait_records(3, receiver="on_user_class")
    assert sorted(r["kwargs"]["user"] for r in rows) == [1, 2, 3]
    assert {r["sender"] for r in rows} == {f"{User.__module__}.User"}
    assert "lost" not in worker.output()
