"""The ``sigbroker`` command: arguments in-process; workers and listeners as subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from sigbroker import Client
from sigbroker.cli import cli
from sigbroker.cli.inspection import output_buffer_warning
from sigbroker.cli.send import parse_arguments
from sigbroker.devserver import DevServer
from sigbroker.errors import BrokerUnavailable
from tests.app.signals import User, user_registered
from tests.helpers import ROOT, WorkerProcess, wait_for


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess], namespace: str) -> WorkerProcess:
    w = start_worker()
    w.wait_subscribed(f"{namespace}:{user_registered.name}")
    return w


def invoke(runner: CliRunner, url: str, namespace: str, *args: str) -> Any:
    return runner.invoke(cli, ["--url", url, "--namespace", namespace, *args])


def test_send_reaches_the_worker_with_parsed_arguments(
    runner: CliRunner, worker: WorkerProcess, redis_url: str, namespace: str
) -> None:
    result = invoke(
        runner,
        redis_url,
        namespace,
        "send",
        user_registered.name,
        "--sender",
        f"{User.__module__}.User",
        "-a",
        "user=42",
        "-a",
        "request=null",
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Sent {user_registered.name} to 1 worker"
    (row,) = worker.wait_records(1, receiver="on_user_class")
    assert row["kwargs"] == {"user": 42, "request": None}
    assert row["sender_is_class"] is True


def test_send_with_json_arguments(
    runner: CliRunner, worker: WorkerProcess, redis_url: str, namespace: str
) -> None:
    result = invoke(
        runner,
        redis_url,
        namespace,
        "send",
        user_registered.name,
        "--json",
        '{"user": {"id": 7, "tags": ["a"]}, "request": "r"}',
    )
    assert result.exit_code == 0, result.output
    (row,) = worker.wait_records(1, receiver="on_any_sender")
    assert row["kwargs"] == {"user": {"id": 7, "tags": ["a"]}, "request": "r"}


def test_argument_values_parse_as_json_else_string() -> None:
    got = parse_arguments(["n=3", "s=hello", 'q="3"', "l=[1,2]", "e="], '{"j": true}')
    assert got == {"n": 3, "s": "hello", "q": "3", "l": [1, 2], "e": "", "j": True}


@pytest.mark.parametrize(
    "args",
    [
        ["send", "x.y", "-a", "no-equals-sign"],
        ["send", "x.y", "--json", "[1, 2]"],
        ["send", "x.y", "--json", "{not json"],
        ["worker"],
        ["nosuchcommand"],
        ["workers", "--bogus"],
    ],
)
def test_usage_errors_exit_2(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output


def test_runtime_errors_are_one_line_with_exit_1(runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["--url", "redis://:pw-secret@127.0.0.1:1/0", "ping"], catch_exceptions=False
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "Traceback" not in result.output and "pw-secret" not in result.output
    assert "redis://:***@127.0.0.1:1/0" in lines[0]


def test_debug_shows_the_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sigbroker", "--debug", "--url", "redis://127.0.0.1:1/0", "ping"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "BrokerUnavailable" in proc.stderr


def test_worker_with_a_missing_module_fails_in_one_line(runner: CliRunner, redis_url: str) -> None:
    result = runner.invoke(cli, ["--url", redis_url, "worker", "-A", "no_such_module_xyz"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: cannot import 'no_such_module_xyz': No module named 'no_such_module_xyz'"
    )


def test_ping(runner: CliRunner, redis_url: str, namespace: str) -> None:
    result = invoke(runner, redis_url, namespace, "ping")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"PONG from {redis_url} (Redis ")
    assert first.endswith(" ms")


def test_ping_warns_when_redis_would_cut_a_busy_worker_off(
    runner: CliRunner, redis_factory: Callable[[], DevServer], namespace: str
) -> None:
    server = redis_factory()  # its own: this test changes the server's settings
    result = invoke(runner, server.url, namespace, "ping")
    assert result.exit_code == 0, result.output
    (warning,) = result.output.splitlines()[1:]
    assert warning.startswith("Warning: Redis cuts off a worker whose unread messages pass 32 MiB")
    assert "client-output-buffer-limit pubsub 33554432 8388608 60" in warning
    assert 'CONFIG SET client-output-buffer-limit "pubsub 256mb 64mb 60"' in warning
    with redis.Redis.from_url(server.url) as r:
        r.config_set("client-output-buffer-limit", "pubsub 256mb 64mb 60")
    again = invoke(runner, server.url, namespace, "ping")
    assert again.exit_code == 0 and len(again.output.splitlines()) == 1, again.output


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60", "32 MiB at once"),
        ("pubsub 0 8388608 60", "8 MiB for 60s"),
        ("pubsub 0 0 0", None),
        ("pubsub 536870912 134217728 60", None),
        ("", None),
        ("pubsub x y z", None),
    ],
)
def test_output_buffer_warning(setting: str, expected: str | None) -> None:
    warning = output_buffer_warning(setting)
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and expected in warning


def test_secret_file_and_the_warning_for_secret_on_the_command_line(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    path.write_text("first-secret\n\n  old-secret  \n")
    seen: list[Any] = []
    monkeypatch.setattr(
        "sigbroker.cli.context.Options.client", lambda self: seen.append(self.secrets)
    )
    quiet = runner.invoke(cli, ["--secret-file", str(path), "inspect", "-A", "tests.app.signals"])
    assert quiet.exit_code == 0 and "Warning" not in quiet.output
    visible = runner.invoke(cli, ["--secret", "a,b", "inspect", "-A", "tests.app.signals"])
    assert visible.exit_code == 0
    assert "Warning: --secret is visible to other users" in visible.output
    both = runner.invoke(cli, ["--secret", "a", "--secret-file", str(path), "ping"])
    assert both.exit_code == 2 and "not both" in both.output
    missing = runner.invoke(cli, ["--secret-file", str(tmp_path / "nope"), "ping"])
    assert missing.exit_code == 1
    assert missing.output.strip().startswith("Error: cannot read the secret file")
    assert len(missing.output.strip().splitlines()) == 1
    from sigbroker.cli import _secrets

    assert _secrets(None, str(path)) == (b"first-secret", b"old-secret")


def test_the_worker_reads_its_secret_from_sigbroker_secret_file(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    w = start_worker(env={"SIGBROKER_SECRET_FILE": str(path)})
    w.wait_subscribed(f"{namespace}:{user_registered.name}")
    with Client(redis_url, namespace=namespace, secret="s3cret") as client:
        client.send(user_registered, sender=User, user=1, request=None)
    with Client(redis_url, namespace=namespace, secret="wrong") as client:
        client.send(user_registered, sender=User, user=2, request=None)
    (row,) = w.wait_records(1, receiver="on_user_class")
    assert row["kwargs"]["user"] == 1
    assert "s3cret" not in w.output()


def test_channels_lists_live_signal_channels(
    runner: CliRunner, worker: WorkerProcess, redis_url: str, namespace: str
) -> None:
    result = invoke(runner, redis_url, namespace, "channels", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["signal"]: r for r in json.loads(result.output)}
    assert rows[user_registered.name] == {
        "channel": f"{namespace}:{user_registered.name}",
        "signal": user_registered.name,
        "subscribers": 1,
    }
    assert not [name for name in rows if name.startswith("__")]
    table = invoke(runner, redis_url, namespace, "channels").output.splitlines()
    assert table[0].split() == ["CHANNEL", "SIGNAL", "SUBSCRIBERS"]
    assert any(line.split()[1:] == [user_registered.name, "1"] for line in table[1:])


def test_workers_lists_the_live_worker(
    runner: CliRunner, worker: WorkerProcess, redis_url: str, namespace: str
) -> None:
    def listed() -> list[dict[str, Any]]:
        out = invoke(runner, redis_url, namespace, "workers", "--json").output
        return list(json.loads(out))

    (row,) = wait_for(listed, 10, "the worker's heartbeat")
    assert row["pid"] == worker.proc.pid
    assert user_registered.name in row["signals"]
    assert {"id", "host", "started_at", "last_seen", "processed", "failed"} <= set(row)
    assert {"rejected", "rejected_by", "lost", "resubscribes"} <= set(row)
    table = invoke(runner, redis_url, namespace, "workers").output.splitlines()
    assert table[0].split() == [
        "ID",
        "HOST",
        "PID",
        "GROUP",
        "UPTIME",
        "SIGNALS",
        "PROCESSED",
        "FAILED",
        "REJECTED",
        "LOST",
        "RESUBSCRIBES",
        "LAST",
        "SEEN",
    ]
    assert str(worker.proc.pid) in table[1]
    assert row["group"] is None and table[1].split()[3] == "-"  # a pub/sub worker


def test_workers_and_channels_when_nothing_is_live(
    runner: CliRunner, redis_url: str, namespace: str
) -> None:
    assert invoke(runner, redis_url, namespace, "workers").output.startswith("No live workers")
    assert invoke(runner, redis_url, namespace, "channels").output.startswith("No live channels")
    assert json.loads(invoke(runner, redis_url, namespace, "workers", "--json").output) == []


def test_inspect_lists_signals_and_receivers_without_redis(runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["--url", "redis://127.0.0.1:1/0", "inspect", "-A", "tests.app.receivers", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["signal"]: r for r in json.loads(result.output)}
    row = rows[user_registered.name]
    assert row["providing_args"] == ["request", "user"]
    names = {r["receiver"] for r in row["receivers"]}
    assert {"tests.app.receivers.on_any_sender", "tests.app.receivers.on_user_class"} <= names
    senders = {r["receiver"]: r["sender"] for r in row["receivers"]}
    assert senders["tests.app.receivers.on_user_class"] == "tests.app.signals.User"
    assert senders["tests.app.receivers.on_billing_string"] == "billing"


def test_listen_prints_json_lines_and_stops_after_count(
    listener: Callable[..., subprocess.Popen[str]], redis_url: str, namespace: str
) -> None:
    proc = listener("--json", "--count", "2")
    with Client(redis_url, namespace=namespace) as client:
        channel = f"{namespace}:{user_registered.name}"
        wait_for(
            lambda: client.send(user_registered, sender="web", user=1, request=None) >= 1,
            15,
            "the listener's subscription",
        )
        client.publish(channel, b"garbage")
        client.send(user_registered, sender="web", user=2, request="r")
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    messages = [m for m in lines if "signal" in m]
    assert [m["kwargs"]["user"] for m in messages][:2] == [1, 2]
    assert messages[0]["signal"] == user_registered.name and messages[0]["sender"] == "web"
    assert {"id", "origin", "sent_at", "age_ms"} <= set(messages[0])
    assert any("rejected" in m for m in lines)


def test_listen_human_output_for_named_signals(
    listener: Callable[..., subprocess.Popen[str]], redis_url: str, namespace: str
) -> None:
    proc = listener(user_registered.name, "--count", "1")
    with Client(redis_url, namespace=namespace) as client:
        wait_for(
            lambda: client.send(user_registered, user=5, request=None) >= 1,
            15,
            "the listener's subscription",
        )
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    line = out.splitlines()[0]
    assert line.startswith(f"{user_registered.name} sender=None user=5 request=None (age ")


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sigbroker", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for command in (
        "worker",
        "send",
        "channels",
        "listen",
        "workers",
        "inspect",
        "ping",
        "server",
        "demo",
    ):
        assert command in proc.stdout


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_server_serves_redis_until_interrupted(tmp_path: Path, stop: int) -> None:
    log = tmp_path / "server.log"
    with (
        open(log, "wb") as errors,
        subprocess.Popen(
            [sys.executable, "-m", "sigbroker", "server", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("redis://127.0.0.1:")
            with Client(url) as client:
                assert client.ping() > 0
            proc.send_signal(stop)
            # Stopping waits up to 5 s for redis-server, then kills it: 30 s is
            # a bound for a loaded machine, not an expected time.
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"server still running 30 s after {stop!r}; its log:\n{log.read_text()}"
                )
            assert code == 0, log.read_text()
            assert "Stopping" in log.read_text()
            with Client(url, timeout_s=0.5, retries=0) as client, pytest.raises(BrokerUnavailable):
                client.ping()
        finally:
            proc.kill()
