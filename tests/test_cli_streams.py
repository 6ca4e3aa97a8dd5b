"""The operator's view of durable signals: ``streams``, ``dlq``, and what ``workers`` and
``listen`` show of them, against a real redis-server.

The streams, groups, pending entries and dead letters are laid out by hand with
redis-py, as the spec's Redis layout describes them (``sigbroker.durable``), so
these tests check the reading side on its own.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from sigbroker import Client
from sigbroker.broker import heartbeat_key
from sigbroker.cli import cli
from sigbroker.devserver import DevServer
from sigbroker.durable import dlq_key, lost_key, stream_key
from tests.helpers import WorkerProcess, wait_for

SIGNAL = "order_placed"
RECEIVER = "billing.receivers.open_invoice"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def r(real_redis: DevServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_redis.url)
    yield client
    client.close()


@pytest.fixture
def url(real_redis: DevServer) -> str:
    return real_redis.url


def invoke(runner: CliRunner, url: str, namespace: str, *args: str, **kw: Any) -> Any:
    return runner.invoke(cli, ["--url", url, "--namespace", namespace, *args], **kw)


def json_of(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def envelope(url: str, namespace: str, signal: str = SIGNAL, **kwargs: Any) -> bytes:
    with Client(url, namespace=namespace) as client:
        return client.encode(signal, "shop.Order", kwargs)


def server_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def add_dead_letter(
    r: redis.Redis,
    namespace: str,
    group: str,
    entry: bytes,
    *,
    error: str = "ValueError: boom",
    receiver: str = RECEIVER,
    entry_id: str = "*",
) -> str:
    """A dead letter with the spec's fields, for the message at ``entry`` of the stream."""
    stream = stream_key(namespace, SIGNAL)
    ((_, fields),) = r.xrange(stream, entry, entry)
    new_id = r.xadd(
        dlq_key(namespace, group),
        {
            "d": fields[b"d"],
            "signal": SIGNAL,
            "stream": stream,
            "entry": entry,
            "receiver": receiver,
            "error": error,
            "traceback": f'Traceback (most recent call last):\n  File "x.py", line 1\n{error}',
            "deliveries": "5",
            "worker": "web-1:4242:a1b2c3",
            "failed_at": "1700000000.5",
        },
        id=entry_id,
    )
    return new_id.decode()


@pytest.fixture
def orders(r: redis.Redis, url: str, namespace: str) -> list[bytes]:
    """Ten orders on the stream, sent 90 s ago by the server's clock; their entry ids."""
    stream = stream_key(namespace, SIGNAL)
    base = server_ms(r) - 90_000
    for i in range(10):
        r.xadd(stream, {"d": envelope(url, namespace, order_id=i)}, id=f"{base}-{i}")
    return [entry_id for entry_id, _ in r.xrange(stream)]


# -- streams ------------------------------------------------------------------


def test_streams_shows_length_lag_pending_oldest_pending_age_and_lost(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str, orders: list[bytes]
) -> None:
    stream = stream_key(namespace, SIGNAL)
    r.xgroup_create(stream, "billing", id="0")
    r.xreadgroup("billing", "web-1:4242:a1b2c3", {stream: ">"}, count=4)
    r.xack(stream, "billing", orders[0])  # pending: orders 1, 2, 3; unread: 6
    r.xgroup_create(stream, "mail", id="$")  # Redis 7.0: entries-read is nil
    r.hset(lost_key(namespace, "billing"), stream, 7)
    r.xadd(stream_key(namespace, "user_registered"), {"d": envelope(url, namespace)})
    r.set(stream_key(namespace, "not_a_stream"), "x")  # not a stream: left out

    reports = json_of(invoke(runner, url, namespace, "streams", "--json"))

    assert [s["signal"] for s in reports] == [SIGNAL, "user_registered"]
    orders_report, users_report = reports
    assert orders_report["stream"] == stream and orders_report["length"] == 10
    assert orders_report["first_id"] == orders[0].decode()
    assert orders_report["last_id"] == orders[-1].decode()
    billing, mail = orders_report["groups"]
    age = billing.pop("oldest_pending_age_s")
    assert 90 <= age < 120  # the id of order 1, sent 90 s ago by the server's clock
    assert billing == {
        "group": "billing",
        "consumers": 1,
        "pending": 3,
        "lag": 6,
        "lost": 7,
        "last_delivered_id": orders[3].decode(),
        "entries_read": 4,
    }
    assert mail["pending"] == 0 and mail["lag"] == 0 and mail["lost"] == 0
    assert mail["oldest_pending_age_s"] is None and mail["entries_read"] is None
    assert users_report["length"] == 1 and users_report["groups"] == []

    result = invoke(runner, url, namespace, "streams")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "SIGNAL", "LENGTH", "FIRST", "ID", "LAST", "ID", "GROUP",
        "CONSUMERS", "PENDING", "LAG", "OLDEST", "PENDING", "LOST",
    ]  # fmt: skip
    rows = {tuple(line.split()[:5:4]): line.split() for line in lines[1:]}
    assert rows[(SIGNAL, "billing")][5:8] == ["1", "3", "6"]
    assert rows[(SIGNAL, "billing")][8].startswith("1m") and rows[(SIGNAL, "billing")][9] == "7"
    assert rows[(SIGNAL, "mail")][5:] == ["0", "0", "0", "-", "0"]
    assert rows[("user_registered", "-")][5:] == ["-"] * 5


def test_streams_lag_redis_can_not_tell_is_null_and_a_question_mark(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str, orders: list[bytes]
) -> None:
    stream = stream_key(namespace, SIGNAL)
    r.xgroup_create(stream, "billing", id="0")
    r.xreadgroup("billing", "w", {stream: ">"}, count=2)
    r.xdel(stream, orders[5])  # deleted among the unread: Redis 7.0 says lag nil

    (report,) = json_of(invoke(runner, url, namespace, "streams", "--json"))
    (group,) = report["groups"]
    assert group["lag"] is None and group["pending"] == 2

    line = invoke(runner, url, namespace, "streams").output.splitlines()[1].split()
    assert line[4:8] == ["billing", "1", "2", "?"]


def test_streams_when_there_are_none(runner: CliRunner, url: str, namespace: str) -> None:
    result = invoke(runner, url, namespace, "streams")
    assert result.exit_code == 0
    assert result.output == f"No durable streams in namespace {namespace!r}\n"
    assert json_of(invoke(runner, url, namespace, "streams", "--json")) == []


# -- dlq ----------------------------------------------------------------------


@pytest.fixture
def letters(r: redis.Redis, namespace: str, orders: list[bytes]) -> dict[str, str]:
    """Three dead letters: orders 3 and 7 in group billing, order 3 in group mail."""
    return {
        "billing-3": add_dead_letter(r, namespace, "billing", orders[3], error="KeyError: 'vat'"),
        "billing-7": add_dead_letter(r, namespace, "billing", orders[7]),
        # An id of its own: two groups' dead letters can share one (see the test below).
        "mail-3": add_dead_letter(
            r, namespace, "mail", orders[3], receiver="mail.welcome", entry_id="1-1"
        ),
    }


def test_dlq_list_every_group_or_one(
    runner: CliRunner, url: str, namespace: str, letters: dict[str, str]
) -> None:
    rows = json_of(invoke(runner, url, namespace, "dlq", "list", "--json"))
    assert [(row["group"], row["id"]) for row in rows] == [
        ("billing", letters["billing-3"]),
        ("billing", letters["billing-7"]),
        ("mail", letters["mail-3"]),
    ]
    assert rows[0] == {
        "id": letters["billing-3"],
        "group": "billing",
        "signal": SIGNAL,
        "receiver": RECEIVER,
        "error": "KeyError: 'vat'",
        "deliveries": 5,
        "failed_at": 1700000000.5,
    }
    mail = json_of(invoke(runner, url, namespace, "dlq", "list", "--group", "mail", "--json"))
    assert [row["receiver"] for row in mail] == ["mail.welcome"]

    lines = invoke(runner, url, namespace, "dlq", "list").output.splitlines()
    assert lines[0].split() == [
        "ID", "GROUP", "SIGNAL", "RECEIVER", "ERROR", "DELIVERIES", "FAILED",
    ]  # fmt: skip
    first = [letters["billing-3"], "billing", SIGNAL, RECEIVER, "KeyError:", "'vat'", "5"]
    assert lines[1].split()[:7] == first
    assert len(lines) == 4


def test_dlq_show_gives_the_traceback_and_the_decoded_message(
    runner: CliRunner, url: str, namespace: str, letters: dict[str, str], orders: list[bytes]
) -> None:
    (record,) = json_of(
        invoke(runner, url, namespace, "dlq", "show", letters["billing-7"], "--json")
    )
    assert record["id"] == letters["billing-7"] and record["group"] == "billing"
    assert record["entry"] == orders[7].decode()
    assert record["stream"] == stream_key(namespace, SIGNAL)
    assert record["worker"] == "web-1:4242:a1b2c3"
    assert record["traceback"].endswith("ValueError: boom")
    assert record["message"]["kwargs"] == {"order_id": 7}
    assert record["message"]["sender"] == "shop.Order"

    text = invoke(runner, url, namespace, "dlq", "show", letters["billing-7"]).output
    assert f"entry {orders[7].decode()}" in text
    assert "order_id=7" in text and '    File "x.py", line 1' in text

    # The same id in two groups: show gives both.
    both = json_of(invoke(runner, url, namespace, "dlq", "show", "--json"))
    assert len(both) == 3


def test_dlq_replay_sends_the_message_again_for_its_group_and_receiver(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str, letters: dict[str, str]
) -> None:
    stream = stream_key(namespace, SIGNAL)
    ((_, dead),) = r.xrange(
        dlq_key(namespace, "billing"), letters["billing-7"], letters["billing-7"]
    )

    (record,) = json_of(
        invoke(runner, url, namespace, "dlq", "replay", letters["billing-7"], "--json")
    )

    ((new_id, fields),) = r.xrevrange(stream, count=1)
    assert record["replayed_as"] == new_id.decode()
    assert fields == {b"d": dead[b"d"], b"g": b"billing", b"r": RECEIVER.encode()}
    remaining = [i.decode() for i, _ in r.xrange(dlq_key(namespace, "billing"))]
    assert remaining == [letters["billing-3"]]
    assert r.xlen(dlq_key(namespace, "mail")) == 1

    # Replayed already: the id is unknown now, and nothing is sent twice.
    again = invoke(runner, url, namespace, "dlq", "replay", letters["billing-7"])
    assert again.exit_code == 1
    assert r.xlen(stream) == 11


def test_dlq_replay_without_ids_replays_the_whole_group(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str, letters: dict[str, str]
) -> None:
    stream = stream_key(namespace, SIGNAL)
    result = invoke(runner, url, namespace, "dlq", "replay", "--group", "mail")
    assert result.exit_code == 0, result.output
    assert f"{letters['mail-3']} (mail, mail.welcome): replayed as " in result.output
    ((_, fields),) = r.xrevrange(stream, count=1)
    assert fields[b"g"] == b"mail" and fields[b"r"] == b"mail.welcome"
    assert r.xlen(stream) == 11
    assert r.xlen(dlq_key(namespace, "mail")) == 0
    assert r.xlen(dlq_key(namespace, "billing")) == 2


def test_dlq_purge_asks_first_and_a_refusal_deletes_nothing(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str, letters: dict[str, str]
) -> None:
    refused = invoke(runner, url, namespace, "dlq", "purge", "--group", "billing", input="n\n")
    assert refused.exit_code == 1
    assert "Delete every dead letter of group billing (2 dead letters)? [y/N]" in refused.output
    assert r.xlen(dlq_key(namespace, "billing")) == 2

    no_answer = invoke(runner, url, namespace, "dlq", "purge")  # no terminal, no input
    assert no_answer.exit_code == 1
    assert r.xlen(dlq_key(namespace, "billing")) == 2 and r.xlen(dlq_key(namespace, "mail")) == 1

    accepted = invoke(runner, url, namespace, "dlq", "purge", "--group", "billing", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.output.splitlines()[-1] == "Purged 2 dead letters"
    assert not r.exists(dlq_key(namespace, "billing"))
    assert r.xlen(dlq_key(namespace, "mail")) == 1


def test_dlq_purge_ids_with_yes(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str, letters: dict[str, str]
) -> None:
    result = invoke(runner, url, namespace, "dlq", "purge", "--yes", letters["billing-7"], "--json")
    assert json_of(result) == {"purged": 1}
    remaining = [i.decode() for i, _ in r.xrange(dlq_key(namespace, "billing"))]
    assert remaining == [letters["billing-3"]]
    assert r.xlen(dlq_key(namespace, "mail")) == 1

    everything = invoke(runner, url, namespace, "dlq", "purge", "--yes")
    assert everything.output == "Purged 2 dead letters\n"
    assert json_of(invoke(runner, url, namespace, "dlq", "list", "--json")) == []


@pytest.mark.parametrize("command", ["show", "replay", "purge"])
def test_dlq_unknown_id_is_a_one_line_error(
    runner: CliRunner,
    r: redis.Redis,
    url: str,
    namespace: str,
    letters: dict[str, str],
    command: str,
) -> None:
    before = r.xlen(stream_key(namespace, SIGNAL)), r.xlen(dlq_key(namespace, "billing"))
    yes = ["--yes"] if command == "purge" else []
    args = ["dlq", command, "--group", "billing", letters["billing-3"], "2-2", *yes]
    result = invoke(runner, url, namespace, *args)
    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: no dead letter 2-2 of group 'billing' in namespace {namespace!r}\n"
    )
    # Nothing was done for the id that exists either.
    after = r.xlen(stream_key(namespace, SIGNAL)), r.xlen(dlq_key(namespace, "billing"))
    assert after == before


def test_dlq_an_id_in_two_groups_needs_the_group(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str, orders: list[bytes]
) -> None:
    same = f"{server_ms(r)}-0"
    add_dead_letter(r, namespace, "billing", orders[1], entry_id=same)
    add_dead_letter(r, namespace, "mail", orders[1], entry_id=same)
    result = invoke(runner, url, namespace, "dlq", "replay", same)
    assert result.exit_code == 1
    assert (
        result.output == f"Error: dead letter {same} is in the groups billing, mail: pass --group\n"
    )
    replayed = invoke(runner, url, namespace, "dlq", "replay", "--group", "mail", same)
    assert replayed.exit_code == 0, replayed.output
    assert r.xlen(dlq_key(namespace, "billing")) == 1


@pytest.mark.parametrize("args", [["show", "abc"], ["replay", "12"], ["purge", "1-x"], ["bogus"]])
def test_dlq_usage_errors_exit_2(
    runner: CliRunner, url: str, namespace: str, args: list[str]
) -> None:
    result = invoke(runner, url, namespace, "dlq", *args)
    assert result.exit_code == 2, result.output


def test_dlq_when_there_are_none(runner: CliRunner, url: str, namespace: str) -> None:
    for command in ("list", "show", "replay", "purge"):
        result = invoke(runner, url, namespace, "dlq", command)
        assert result.exit_code == 0, result.output
        assert result.output == f"No dead letters in namespace {namespace!r}\n"


# -- workers ------------------------------------------------------------------


def test_workers_shows_each_workers_group(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str
) -> None:
    now = time.time()
    for worker_id, group in (("h:1:aaaaaa", "billing"), ("h:2:bbbbbb", None)):
        beat: dict[str, Any] = {
            "id": worker_id,
            "host": "h",
            "pid": int(worker_id.split(":")[1]),
            "started_at": now,
            "last_seen": now,
            "signals": [SIGNAL],
            "processed": 0,
        }
        if group is not None:  # the older worker's heartbeat has no group
            beat["group"] = group
        r.set(heartbeat_key(namespace, worker_id), json.dumps(beat), ex=60)

    rows = json_of(invoke(runner, url, namespace, "workers", "--json"))
    assert {row["id"]: row["group"] for row in rows} == {
        "h:1:aaaaaa": "billing",
        "h:2:bbbbbb": None,
    }

    lines = invoke(runner, url, namespace, "workers").output.splitlines()
    assert lines[0].split()[:4] == ["ID", "HOST", "PID", "GROUP"]
    assert {line.split()[0]: line.split()[3] for line in lines[1:]} == {
        "h:1:aaaaaa": "billing",
        "h:2:bbbbbb": "-",
    }


# -- listen -------------------------------------------------------------------


def reading_streams(r: redis.Redis) -> bool:
    """Whether a client (the listener) is blocked in, or has issued, an XREAD."""
    return any(c.get("cmd") == "xread" for c in r.client_list())


def test_listen_prints_new_durable_messages_of_the_namespace(
    listener: Callable[..., subprocess.Popen[str]],
    r: redis.Redis,
    url: str,
    namespace: str,
    orders: list[bytes],
) -> None:
    proc = listener("--json", "--count", "1")
    wait_for(lambda: reading_streams(r), 15, "the listener's XREAD")
    new_id = r.xadd(stream_key(namespace, SIGNAL), {"d": envelope(url, namespace, order_id=42)})
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    (line,) = out.splitlines()  # the ten orders sent before it started are not shown
    message = json.loads(line)
    assert message["signal"] == SIGNAL and message["kwargs"] == {"order_id": 42}
    assert message["entry"] == new_id.decode()
    assert {"id", "origin", "sent_at", "age_ms", "sender"} <= set(message)
    # It joined no group: the stream has none.
    assert r.xinfo_groups(stream_key(namespace, SIGNAL)) == []


def test_listen_a_named_durable_signal_whose_stream_does_not_exist_yet(
    listener: Callable[..., subprocess.Popen[str]], r: redis.Redis, url: str, namespace: str
) -> None:
    from tests.app.ops_receivers import invoice_due

    proc = listener(invoice_due.name, "--count", "1")
    wait_for(lambda: reading_streams(r), 15, "the listener's XREAD")
    with Client(url, namespace=namespace) as client:
        assert client.send(invoice_due, sender="shop", invoice=7) == 0  # no group: kept anyway
    ((new_id, _),) = r.xrange(stream_key(namespace, invoice_due.name))
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.splitlines()[0].startswith(
        f"{invoice_due.name} sender=shop invoice=7 (entry {new_id.decode()}, age "
    )


# -- with a real worker -------------------------------------------------------


def test_a_real_worker_dead_letters_and_replay_runs_only_the_failed_receiver(
    runner: CliRunner,
    r: redis.Redis,
    url: str,
    namespace: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from tests.app.ops_receivers import invoice_due

    stream = stream_key(namespace, invoice_due.name)
    worker = start_worker(
        url,
        modules=["tests.app.ops_receivers"],
        extra=["--group", "billing", "--max-deliveries", "2"],
    )

    def listed() -> list[dict[str, Any]]:
        return list(json_of(invoke(runner, url, namespace, "workers", "--json")))

    (beat,) = wait_for(listed, 15, "the worker's heartbeat")
    assert beat["group"] == "billing" and beat["pid"] == worker.proc.pid
    assert invoke(runner, url, namespace, "workers").output.splitlines()[1].split()[3] == "billing"
    wait_for(lambda: r.exists(stream) and r.xinfo_groups(stream), 15, "the group")

    with Client(url, namespace=namespace) as client:
        assert client.send(invoice_due, sender="shop", invoice=7) == 1

    def dead() -> list[dict[str, Any]]:
        return list(json_of(invoke(runner, url, namespace, "dlq", "list", "--json")))

    (letter,) = wait_for(dead, 30, "the dead letter")
    assert letter["group"] == "billing" and letter["signal"] == invoice_due.name
    assert letter["receiver"] == "tests.app.ops_receivers.open_invoice"
    assert letter["error"] == "RuntimeError: ledger down" and letter["deliveries"] == 2
    worker.wait_records(1, receiver="notify")

    (report,) = json_of(invoke(runner, url, namespace, "streams", "--json"))
    (group,) = report["groups"]
    assert group["group"] == "billing" and group["consumers"] == 1
    assert group["pending"] == 0 and group["lag"] == 0 and group["lost"] == 0

    Path(str(worker.out) + ".fixed").touch()
    assert invoke(runner, url, namespace, "dlq", "replay", letter["id"]).exit_code == 0
    (done,) = worker.wait_records(1, receiver="open_invoice")
    assert done["kwargs"] == {"invoice": 7}
    assert json_of(invoke(runner, url, namespace, "dlq", "list", "--json")) == []
    # The receiver that had succeeded did not run again.
    assert [rec["receiver"] for rec in worker.records()].count("notify") == 1


# -- send -----------------------------------------------------------------------


def test_send_appends_to_the_stream_of_a_durable_signal(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str
) -> None:
    stream = stream_key(namespace, SIGNAL)
    r.xgroup_create(stream, "billing", "$", mkstream=True)
    r.xgroup_create(stream, "mail", "$")
    result = invoke(
        runner, url, namespace, "send", SIGNAL, "--sender", "shop.Order", "-a", "order_id=7"
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Sent {SIGNAL} to 2 groups"
    ((_, fields),) = r.xrange(stream)
    decoded = Client(url, namespace=namespace).codec.decode(fields[b"d"])
    assert (decoded.sender, decoded.kwargs) == ("shop.Order", {"order_id": 7})


def test_send_with_durable_creates_the_stream_and_a_plain_send_publishes(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str
) -> None:
    result = invoke(runner, url, namespace, "send", "shop.new_signal", "--durable", "-a", "n=1")
    assert result.exit_code == 0 and "to 0 groups" in result.output
    assert r.xlen(stream_key(namespace, "shop.new_signal")) == 1
    result = invoke(runner, url, namespace, "send", "shop.plain_signal", "-a", "n=1")
    assert result.exit_code == 0 and "to 0 workers" in result.output
    assert not r.exists(stream_key(namespace, "shop.plain_signal"))


def test_send_never_trims_a_stream_below_what_it_holds(
    runner: CliRunner, r: redis.Redis, url: str, namespace: str
) -> None:
    stream = stream_key(namespace, SIGNAL)
    with r.pipeline(transaction=False) as pipe:
        for _ in range(100_500):
            pipe.xadd(stream, {"d": b"x"})
        pipe.execute()
    assert invoke(runner, url, namespace, "send", SIGNAL).exit_code == 0
    assert r.xlen(stream) == 100_501
