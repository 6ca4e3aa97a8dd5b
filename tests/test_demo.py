"""``sigbroker demo`` end to end, the shop it runs, and the examples compose runs.

The demo from a wheel in a fresh venv is tested in ``test_wheel.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from sigbroker import configure
from sigbroker.cli import cli
from sigbroker.demo import runner, summarize_latency
from sigbroker.devserver import free_port
from tests.helpers import ROOT, WorkerProcess, wait_for

#: What the worker's receivers print for the example sends: the values came back typed.
TYPED_VALUES = [
    "[worker] user_registered: welcome email to ada@example.com",
    "[worker]     user = User(id=42, username='ada', email='ada@example.com')",
    "[worker]     request = {'ip': '203.0.113.7', 'path': '/accounts/register/'}",
    "[worker] order_placed by Order: reserving stock for order #1001",
    "[worker]     total = Decimal('59.80')",
    "[worker]     placed_at = datetime.datetime(",
    "tzinfo=datetime.timezone.utc)",
    "{'sku': 'MUG-01', 'qty': 2, 'price': Decimal('12.90')}",
    "[worker] order_shipped by warehouse: DHL tracking JD0146 mailed for order #1001",
    "[worker]     payment_id = UUID('6f1c2a52-3d4e-4b8a-9c1f-2b7d5e8a9f10')",
    # Sent by `sigbroker send` in a second process:
    "Sent sigbroker.demo.signals.order_shipped to 1 worker",
    "[worker] order_shipped by warehouse: UPS tracking 1Z999AA1 mailed for order #1002",
]
LATENCY = re.compile(r"p50 \d+\.\d\d ms +p90 \d+\.\d\d ms +p99 \d+\.\d\d ms +max \d+\.\d\d ms")


def run_demo(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the ``sigbroker`` console script (as ``make demo`` does), by default in the checkout."""
    script = shutil.which("sigbroker", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "sigbroker"]
    return subprocess.run(
        [*command, *args, "demo"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )


def assert_gone(out: str, port: int | None) -> None:
    """Nothing the demo started runs any more: not its worker, not its Redis."""
    match = re.search(r"^Worker pid (\d+) ", out, re.MULTILINE)
    assert match, out
    with pytest.raises(ProcessLookupError):
        os.kill(int(match.group(1)), 0)
    if port is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_demo_starts_its_own_redis_and_stops_everything(tmp_path: Path) -> None:
    # Outside the checkout: the demo needs nothing but the installed package.
    # (conftest removed SIGBROKER_URL and REDIS_URL from the environment.)
    result = run_demo(dict(os.environ), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    started = re.search(
        r"^Redis[\d. ]* at redis://127\.0\.0\.1:(\d+)/0 \((redis-server|fakeredis) started",
        out,
        re.MULTILINE,
    )
    assert started, out
    for text in TYPED_VALUES:
        assert text in out
    assert LATENCY.search(out), out
    assert out.rstrip().endswith("Stopped the worker (SIGTERM, exit code 0) and Redis")
    assert_gone(out, int(started.group(1)))


def test_demo_falls_back_to_fakeredis_without_redis_server(tmp_path: Path) -> None:
    pytest.importorskip("fakeredis")
    # An empty PATH hides redis-server; the subprocesses are started by absolute path.
    result = run_demo({**os.environ, "PATH": str(tmp_path)})

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^Redis at \S+ \(fakeredis started for the demo\)$", result.stdout, re.M)
    assert "[worker]     total = Decimal('59.80')" in result.stdout
    assert_gone(result.stdout, None)


@pytest.fixture
def pattern_listener(redis_url: str) -> Iterator[Callable[[], list[str]]]:
    """Hears every demo channel on the test's Redis; yields a function returning the channels."""
    conn = redis.Redis.from_url(redis_url)
    pubsub = conn.pubsub()
    pubsub.psubscribe("demo-*")
    confirmation = pubsub.get_message(timeout=5)
    assert confirmation is not None and confirmation["type"] == "psubscribe"
    heard: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                heard.append(message["channel"].decode())

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield lambda: list(heard)
    finally:
        stop.set()
        thread.join(timeout=5)
        pubsub.close()
        conn.close()


def test_demo_uses_the_configured_redis(
    redis_url: str, pattern_listener: Callable[[], list[str]]
) -> None:
    result = run_demo({**os.environ, "SIGBROKER_URL": redis_url})

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f" at {redis_url} (from $SIGBROKER_URL)" in out
    assert "started for the demo" not in out
    assert out.rstrip().endswith("Stopped the worker (SIGTERM, exit code 0)")
    assert "total = Decimal('59.80')" in out
    assert LATENCY.search(out), out
    assert_gone(out, None)
    # Every message of the demo went through the configured server: 4 sends from the
    # demo, 1 from `sigbroker send` and the latency probes, all in the demo's namespace.
    found = re.search(r"namespace (demo-\w+)", out)
    assert found, out
    namespace = found.group(1)

    def signal_channels() -> list[str]:
        heard = [c for c in pattern_listener() if ":__" not in c]  # not the worker's probes
        return heard if len(heard) >= 205 else []

    channels = wait_for(signal_channels, 10, "the demo's messages")
    assert len(channels) == 205
    assert {c.partition(":")[0] for c in channels} == {namespace}
    assert channels.count(f"{namespace}:sigbroker.demo.signals.order_shipped") == 2
    assert channels.count(f"{namespace}:sigbroker.demo.signals.latency_probe") == 200


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_stops_everything_it_started(signum: int) -> None:
    # Ctrl-C raises KeyboardInterrupt even where SIGINT came in ignored (as in
    # background jobs of a shell without job control).
    script = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from sigbroker.cli import main; main(['demo'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline(), proc.stdout.readline()]
        assert head[1].startswith("Worker pid "), head
        proc.send_signal(signum)  # the demo is sending now: a worker and Redis are running
        out = "".join(head) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, out
    assert out.rstrip().endswith("Interrupted: stopped the worker and Redis")
    port = re.search(r"127\.0\.0\.1:(\d+)/0", head[0])
    assert port, head
    assert_gone(out, int(port.group(1)))


def test_a_failing_worker_is_reported_with_its_last_words(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setattr(runner, "WORKER_MODULE", "sigbroker.demo.no_such_module")
    worker = runner._WorkerProcess({**os.environ, "SIGBROKER_URL": redis_url})
    try:
        worker.start()
        with pytest.raises(runner.DemoError, match="exited with code 1: cannot import 'sigbroker"):
            worker.read_until(lambda line: False, "output")
    finally:
        worker.stop()


def test_demo_with_unreachable_redis_is_a_one_line_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(cli, ["--url", url, "demo"])

    assert result.exit_code == 1
    assert result.output.startswith(f"Error: Redis at {url} is unavailable")
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_demo_without_any_redis_says_how_to_get_one_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "redis_server_path", lambda: None)
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # find_spec() then says it is absent
    result = CliRunner().invoke(cli, ["demo"])

    assert result.exit_code == 1
    assert result.output == f"Error: {runner.NO_REDIS}\n"
    for way in ("apt-get install redis-server", "pip install fakeredis", "--url"):
        assert way in runner.NO_REDIS


def test_latency_summary_uses_nearest_rank_percentiles() -> None:
    samples = [float(n) for n in range(100, 0, -1)]
    assert summarize_latency(samples) == (
        "p50 50.00 ms   p90 90.00 ms   p99 99.00 ms   max 100.00 ms"
    )
    assert summarize_latency([0.5]) == "p50 0.50 ms   p90 0.50 ms   p99 0.50 ms   max 0.50 ms"
    assert summarize_latency([]) == "no samples"


# -- the demo's shop, and the examples that compose runs -------------------------


def test_demo_receivers_run_in_eager_mode(capsys: pytest.CaptureFixture[str]) -> None:
    import sigbroker.demo.receivers as receivers
    from sigbroker.demo.emit import samples
    from sigbroker.demo.signals import order_placed

    configure(eager=True)
    called: dict[str, list[Any]] = {}
    for sig, sender, kwargs in samples():
        called[sig.name] = [r for r, _ in sig.send(sender=sender, **kwargs)]
    out = capsys.readouterr().out

    assert called["sigbroker.demo.signals.order_placed"] == [receivers.reserve_stock]
    assert called["sigbroker.demo.signals.payment_refunded"] == [receivers.notify_accounting]
    assert "order_placed by Order: reserving stock for order #1001" in out
    assert "    amount = Decimal('12.90')" in out
    # reserve_stock is connected with sender=Order: another sender does not reach it.
    order = samples()[1][2]
    assert order_placed.send(sender="elsewhere", **order) == []


def test_emitter_waits_for_a_worker_and_sends_every_example(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    worker = start_worker(modules=("examples.receivers",))
    env = {**os.environ, "SIGBROKER_URL": redis_url, "SIGBROKER_NAMESPACE": namespace}
    # Started right away: the emitter itself waits until the worker has subscribed.
    result = subprocess.run(
        [sys.executable, "-m", "examples.emit", "--wait", "30"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("user_registered", "order_placed", "order_shipped", "payment_refunded"):
        assert f"Sent sigbroker.demo.signals.{name} to 1 worker\n" in result.stdout
    wait_for(lambda: "payment_refunded: accounting notified" in worker.output(), 10, "output")
    assert "total = Decimal('59.80')" in worker.output()


def test_emitter_without_worker_says_so_and_fails(redis_url: str, namespace: str) -> None:
    env = {**os.environ, "SIGBROKER_URL": redis_url, "SIGBROKER_NAMESPACE": namespace}
    result = subprocess.run(
        [sys.executable, "-m", "examples.emit", "--wait", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "No worker listened within 0s" in result.stderr
    assert "Sent sigbroker.demo.signals.user_registered to 0 workers" in result.stdout
