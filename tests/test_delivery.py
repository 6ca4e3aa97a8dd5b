"""Delivery, on every transport: what a worker's receivers get, and how it stops.

Each test runs twice: on Redis pub/sub, with a worker started through the CLI
in a subprocess, and on the in-memory transport, with the same Worker in a
thread of this process (as dramatiq runs its tests on each of its brokers).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sigbroker import Client, config, configure
from sigbroker.broker import list_workers
from sigbroker.transport.memory import MemoryTransport
from tests.app.recorder import read_records
from tests.app.signals import (
    Color,
    Money,
    User,
    async_signal,
    backlog,
    everything,
    flaky,
    many_a,
    many_b,
    slow,
    unheard,
    user_registered,
)
from tests.helpers import InProcessWorker, WorkerProcess, wait_for

AnyWorker = WorkerProcess | InProcessWorker

EVERY_TYPE: dict[str, Any] = {
    "none": None,
    "flag": True,
    "small": -7,
    "int64": 2**63 - 1,
    "big": -(2**100) + 3,
    "real": 2.5,
    "text": "héllo ✓",
    "blob": b"\x00\xffbytes",
    "items": [1, "two", [3.0]],
    "pair": (1, ("nested", 2)),
    "mapping": {"a": 1, 2: "b", ("t", 1): None},
    "members": {1, 2, 3},
    "frozen": frozenset({"x", "y"}),
    "naive": dt.datetime(2026, 11, 23, 21, 0, 0, 123456),
    "aware": dt.datetime(
        2026, 11, 23, 21, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
    ),
    "day": dt.date(2026, 1, 31),
    "clock": dt.time(23, 59, 58, 999),
    "span": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "money": Decimal("19.90"),
    "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "color": Color.GREEN,
    "custom": Money(995, "EUR"),
}


@pytest.fixture(params=["redis", "memory"])
def transport(request: pytest.FixtureRequest) -> str:
    """Which transport the test runs on."""
    return str(request.param)


@pytest.fixture
def client(transport: str, redis_url: str, namespace: str) -> Iterator[Client]:
    if transport == "redis":
        c = Client(redis_url, namespace=namespace)
    else:  # wait=False: a send returns at once, as on Redis
        c = Client(namespace=namespace, transport=MemoryTransport(wait=False))
    with c:
        yield c


@pytest.fixture
def start(
    transport: str,
    start_worker: Callable[..., WorkerProcess],
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[], AnyWorker]]:
    """Start a worker of ``tests.app.receivers`` on the test's transport."""
    in_process: list[InProcessWorker] = []

    def start() -> AnyWorker:
        if transport == "redis":
            return start_worker()
        worker = InProcessWorker(client, tmp_path / "in-process.bin", monkeypatch)
        in_process.append(worker)
        return worker

    yield start
    for worker in in_process:
        worker.stop()


@pytest.fixture
def worker(start: Callable[[], AnyWorker], namespace: str) -> AnyWorker:
    w = start()
    w.wait_subscribed(f"{namespace}:{user_registered.name}")
    return w


def test_every_supported_type_arrives_intact(worker: AnyWorker, client: Client) -> None:
    assert client.send(everything, sender=User, **EVERY_TYPE) == 1
    (got,) = worker.wait_records(1, receiver="on_everything")
    assert got["kwargs"] == EVERY_TYPE
    for key, value in EVERY_TYPE.items():
        assert type(got["kwargs"][key]) is type(value), key
    assert got["kwargs"]["aware"].utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert str(got["kwargs"]["money"]) == "19.90"


def test_signal_send_uses_the_configured_client(
    worker: AnyWorker, client: Client, transport: str, redis_url: str, namespace: str
) -> None:
    if transport == "redis":
        configure(url=redis_url, namespace=namespace)
    else:
        config.swap_default_client(client)
    assert user_registered.send(sender=User, user=42, request=None) == 1
    worker.wait_records(1, receiver="on_user_class")


def test_sender_filtering_by_class_string_and_none(worker: AnyWorker, client: Client) -> None:
    client.send(user_registered, sender=User, user=1, request=None)
    client.send(user_registered, sender="billing", user=2, request=None)
    client.send(user_registered, sender=None, user=3, request=None)
    worker.wait_records(3, receiver="on_any_sender")
    by_receiver: dict[str, list[int]] = {}
    for rec in worker.records():
        by_receiver.setdefault(rec["receiver"], []).append(rec["kwargs"]["user"])
    assert by_receiver["on_any_sender"] == [1, 2, 3]
    assert by_receiver["on_user_class"] == [1]
    assert by_receiver["on_billing_string"] == [2]
    (user_rec,) = [r for r in worker.records() if r["receiver"] == "on_user_class"]
    assert user_rec["sender_is_class"] is True
    assert user_rec["sender"] == f"{User.__module__}.{User.__qualname__}"
    (billing,) = [r for r in worker.records() if r["receiver"] == "on_billing_string"]
    assert billing["sender"] == "billing" and billing["sender_is_class"] is False


def test_dispatch_uid_registers_one_receiver(worker: AnyWorker, client: Client) -> None:
    client.send(user_registered, user=1, request=None)
    client.send(user_registered, user=2, request=None)
    worker.wait_records(2, receiver="on_any_sender")
    uid_users = [r["kwargs"]["user"] for r in worker.records() if r["receiver"] == "uid"]
    assert uid_users == [1, 2]


def test_receiver_decorator_on_a_list(worker: AnyWorker, client: Client) -> None:
    client.send(many_a, n=1)
    client.send(many_b, n=2)
    rows = worker.wait_records(2, receiver="on_many")
    assert {(r["signal"], r["kwargs"]["n"]) for r in rows} == {(many_a.name, 1), (many_b.name, 2)}


def test_async_receivers_run_in_the_worker(worker: AnyWorker, client: Client) -> None:
    client.send(async_signal, sender="x", n=5)
    (row,) = worker.wait_records(1, receiver="on_async")
    assert row["kwargs"] == {"n": 5} and row["sender"] == "x"


def test_a_failing_receiver_stops_neither_the_others_nor_the_worker(
    worker: AnyWorker, client: Client
) -> None:
    client.send(flaky, n=1)
    client.send(flaky, n=2)
    rows = worker.wait_records(2, receiver="flaky_second")
    assert [r["kwargs"]["n"] for r in rows] == [1, 2]
    assert "flaky receiver failed on purpose" in worker.output()
    assert "Traceback" in worker.output()
    client.send(user_registered, user=9, request=None)
    worker.wait_records(1, receiver="on_any_sender")


def test_two_workers_both_receive_and_send_counts_them(
    start: Callable[[], AnyWorker], client: Client, namespace: str
) -> None:
    channel = f"{namespace}:{user_registered.name}"
    first, second = start(), start()
    first.wait_subscribed(channel)
    second.wait_subscribed(channel)
    assert client.send(user_registered, user=7, request=None) == 2

    def rows() -> list[dict[str, Any]]:
        # In memory both workers record to one file; each CLI worker to its own.
        found = [r for out in {first.out, second.out} for r in read_records(out)]
        return [r for r in found if r["receiver"] == "on_any_sender"]

    wait_for(lambda: len(rows()) == 2, 10, "both workers' receivers")
    assert [r["kwargs"]["user"] for r in rows()] == [7, 7]


def test_send_without_workers_returns_zero(client: Client) -> None:
    assert client.send(unheard, anything=1) == 0


def test_worker_subscribes_only_to_signals_with_receivers(
    worker: AnyWorker, client: Client, namespace: str
) -> None:
    live = client.channels()
    assert f"{namespace}:{user_registered.name}" in live
    assert f"{namespace}:{unheard.name}" not in live


def test_counters_count_what_ran_failed_and_was_rejected(worker: AnyWorker, client: Client) -> None:
    client.send(flaky, n=1)  # one of its two receivers raises
    client.send(user_registered, user=1, request=None)
    assert client.publish(client.channel(user_registered), b"\x93not a message") == 1
    worker.wait_records(1, receiver="on_any_sender")

    def counted() -> list[dict[str, Any]]:
        beats = list_workers(client)
        return [b for b in beats if b["processed"] >= 2 and b["rejected"] >= 1]

    (beat,) = wait_for(counted, 20, "the heartbeat to show the counters")
    assert (beat["processed"], beat["failed"], beat["rejected"]) == (2, 1, 1)
    assert beat["rejected_by"] == {"invalid": 1} and beat["lost"] == 0


def test_a_warm_stop_runs_everything_received(worker: AnyWorker, client: Client) -> None:
    client.send(slow, seconds=0.5, token="first")
    for i in range(5):
        client.send(backlog, i=i, seconds=0.01)
    worker.wait_records(1, receiver="slow_started")
    assert worker.warm_stop()
    rows = worker.records()
    assert [r["token"] for r in rows if r["receiver"] == "slow_finished"] == ["first"]
    assert [r["i"] for r in rows if r["receiver"] == "backlog"] == [0, 1, 2, 3, 4]
