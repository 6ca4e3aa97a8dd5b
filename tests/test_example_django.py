"""examples/django end to end, as its README runs it: no Docker, a real redis-server.

``manage.py migrate``, then ``manage.py sigbroker worker`` and ``manage.py
place_order`` as subprocesses of the example project (its settings, from the
environment: ``SIGBROKER_URL``, ``SIGBROKER_NAMESPACE``, ``DATABASE``); the
worker's log shows what its receiver got.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, wait_for

pytest.importorskip("django")

EXAMPLE = ROOT / "examples" / "django"
MANAGE = EXAMPLE / "manage.py"


@pytest.fixture
def example_env(
    real_redis: object, redis_url: str, namespace: str, tmp_path: Path
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SIGBROKER_", "DJANGO_"))  # this process's Django is another
    }
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
        "SIGBROKER_URL": redis_url,
        "SIGBROKER_NAMESPACE": namespace,
        "DATABASE": str(tmp_path / "example.sqlite3"),
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=EXAMPLE,
        env=env,
    )


@pytest.fixture
def example_worker(example_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    """``manage.py sigbroker worker`` of the example; yields its log file."""
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(MANAGE), "sigbroker", "worker"],
            cwd=EXAMPLE,
            env=example_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_the_example_sends_an_order_on_commit_and_its_worker_receives_it(
    example_env: dict[str, str], example_worker: Path
) -> None:
    migrate = manage("migrate", "--noinput", env=example_env)
    assert migrate.returncode == 0, migrate.stderr
    # place_order waits until the worker listens, then creates the order.
    placed = manage("place_order", "--reference", "EX-1", "--total", "42.50", env=example_env)
    assert placed.returncode == 0, placed.stderr
    assert "Created order EX-1 (#1); order_created sent" in placed.stdout
    assert "No worker listened" not in placed.stderr

    def logged() -> str:
        text = example_worker.read_text(errors="replace")
        return text if "Order EX-1" in text else ""

    log = wait_for(logged, 15, "the worker to log the order")
    assert "Django: imported" in log and "notifications.receivers" in log
    line = next(line for line in log.splitlines() if "Order EX-1" in line)
    assert "Order EX-1 (#1) created: total 42.50" in line and line.endswith("(a Order)")
