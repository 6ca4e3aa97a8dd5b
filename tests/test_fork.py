"""A Client survives fork (DESIGN §4): gunicorn --preload, multiprocessing, Celery prefork.

Each test forks the test process itself with ``os.fork``, as those servers
do. A child runs its sends inside ``_in_child``, which always ends with
``os._exit`` (never returning into pytest) and reports through its exit
status; the parent waits for it with a bound and kills it past that bound.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

from sigbroker import Client
from sigbroker.errors import BrokerUnavailable
from sigbroker.testing import InMemoryBroker
from tests.app.signals import user_registered
from tests.helpers import WorkerProcess, wait_for

#: Bound on a child's whole run; a child that hangs fails the test past it.
CHILD_TIMEOUT_S = 60.0
#: Bound on a child that sends a few messages (it waits on nothing of the parent's).
FORK_RESET_TIMEOUT_S = 20.0


@pytest.fixture
def forked() -> Iterator[list[int]]:
    """The test's children: any still running at the end (a failed test) is killed and reaped."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass  # it exited and was reaped by _exit_code


def _fork() -> int:
    # Python 3.12+ warns (DeprecationWarning, an error under our pytest
    # settings) when a process with threads forks, because the child gets
    # none of them. That is the very situation under test: the client must
    # not depend on the parent's threads, locks or queues in the child.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _in_child(work: Callable[[], bool]) -> NoReturn:
    """Run ``work`` in a forked child; exit 0 if it returned True, else non-zero."""
    code = 2
    try:
        code = 0 if work() else 3
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _exit_code(pid: int, timeout: float = CHILD_TIMEOUT_S) -> int:
    """Wait for child ``pid`` to exit (killing it past ``timeout``); return its exit code."""

    def exited() -> tuple[int] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if done else None

    try:
        (status,) = wait_for(exited, timeout, f"child {pid} to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def _send(client: Client, user: str) -> bool:
    return client.send(user_registered, user=user, request=None) == 1


def test_preload_parent_sends_forks_four_senders_and_sends_again(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str, forked: list[int]
) -> None:
    children, per_child = 4, 200
    worker = start_worker()
    worker.wait_subscribed(f"{namespace}:{user_registered.name}")
    client = Client(redis_url, namespace=namespace)
    try:
        # The parent's publisher connection is open when it forks, as in a
        # gunicorn master that sent while importing the application.
        assert _send(client, "parent-before")

        def child_work(c: int) -> bool:
            sent = all(_send(client, f"child{c}-{i}") for i in range(per_child))

            async def one_async() -> int:
                try:
                    return await client.asend(user_registered, user=f"child{c}-async", request=None)
                finally:
                    await client.aclose()

            return sent and asyncio.run(one_async()) == 1

        for c in range(children):
            pid = _fork()
            if pid == 0:
                _in_child(lambda c=c: child_work(c))
            forked.append(pid)
        assert [_exit_code(pid) for pid in forked] == [0] * children
        # Every child has exited, so this message is published after all of
        # theirs: once it is recorded, nothing sent before it is on its way.
        assert _send(client, "parent-after")
    finally:
        client.close()
    total = 2 + children * (per_child + 1)
    rows = worker.wait_records(total, timeout=60, receiver="on_any_sender")
    counts = Counter(r["kwargs"]["user"] for r in rows)
    expected = {"parent-before", "parent-after"} | {
        f"child{c}-{i}" for c in range(children) for i in [*range(per_child), "async"]
    }
    assert set(counts) == expected
    assert [u for u, n in counts.items() if n != 1] == []
    assert len(rows) == total


def test_fork_while_eight_threads_send(redis_url: str, namespace: str, forked: list[int]) -> None:
    threads_n, forks = 8, 3
    client = Client(redis_url, namespace=namespace)
    stop = threading.Event()
    sent = [0] * threads_n
    errors: list[BaseException] = []

    def sender(t: int) -> None:
        try:
            while not stop.is_set():
                client.send("fork.threads", t=t)
                sent[t] += 1
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(threads_n)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: min(sent) >= 20, 30, "every thread to be sending")
        for _ in range(forks):  # each fork lands somewhere in the threads' group commit
            pid = _fork()
            if pid == 0:
                _in_child(lambda: all(client.send("fork.child", n=i) == 0 for i in range(50)))
            forked.append(pid)
        codes = [_exit_code(pid) for pid in forked]
        before = list(sent)
        wait_for(
            lambda: all(a > b for a, b in zip(sent, before, strict=True)), 30, "the parent to go on"
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        client.close()
    assert codes == [0] * forks
    assert errors == []


def test_fork_with_a_round_trip_in_flight_and_sends_queued(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, forked: list[int]
) -> None:
    # The worst moment, made certain: the child inherits a publisher whose
    # leader is mid round trip with three senders queued behind it.
    with Client(redis_url, namespace=namespace) as client:
        publisher = client.transport._publisher
        real = publisher._round_trip
        release = threading.Event()
        calls: list[int] = []

        def slow_first(payload: bytes, replies: int) -> Any:
            calls.append(replies)
            if len(calls) == 1:
                release.wait(30)
            return real(payload, replies)

        monkeypatch.setattr(publisher, "_round_trip", slow_first)
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda n=n: results.append(client.send("a.b", n=n)))
            for n in range(4)
        ]
        threads[0].start()
        wait_for(lambda: calls, 5, "the first round trip")
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(publisher._queue) == 3, 5, "three queued senders")
        try:
            pid = _fork()
            if pid == 0:
                _in_child(lambda: all(client.send("a.b", n=9) == 0 for _ in range(10)))
            forked.append(pid)
            code = _exit_code(pid)
        finally:
            release.set()
            for t in threads:
                t.join(30)
        assert code == 0
        assert results == [0, 0, 0, 0]  # the parent's sends were not disturbed
        assert client.send("a.b", n=10) == 0


def test_a_queued_send_waits_a_bounded_time_and_the_lead_survives(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(redis_url, namespace=namespace) as client:
        publisher = client.transport._publisher
        real = publisher._round_trip
        release = threading.Event()
        calls: list[int] = []

        def stuck_first(payload: bytes, replies: int) -> Any:
            calls.append(replies)
            if len(calls) == 1:
                release.wait(30)
            return real(payload, replies)

        monkeypatch.setattr(publisher, "_round_trip", stuck_first)
        monkeypatch.setattr(publisher, "_wait_s", 0.2)
        leader: list[int] = []
        first = threading.Thread(target=lambda: leader.append(client.send("a.b", n=0)))
        first.start()
        try:
            wait_for(lambda: calls, 5, "the first round trip")
            with pytest.raises(BrokerUnavailable, match="no turn") as info:
                client.send("a.b", n=1)
            assert "may have been delivered" not in str(info.value)  # it was never written
            assert publisher._queue == []
        finally:
            release.set()
            first.join(30)
        assert leader == [0]
        assert client.send("a.b", n=2) == 0  # the publisher is free again


class _InOrder(list[Any]):
    """Live clients kept in creation order, so that the fork hook meets them in that order."""

    def add(self, client: Any) -> None:
        self.append(client)


def test_an_in_memory_broker_does_not_stop_the_fork_reset_of_other_clients(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, forked: list[int]
) -> None:
    # The in-memory broker comes first, so a failure of its reset would leave
    # the real client with the parent's locks: held at the fork, they would
    # never be released in the child.
    monkeypatch.setattr("sigbroker.transport.base._RESET_IN_CHILD", _InOrder())
    memory = InMemoryBroker(deliver=False)
    client = Client(redis_url, namespace=namespace)
    try:
        with memory.memory._lock, client.transport._publisher._mutex:  # type: ignore[attr-defined]
            pid = _fork()
            if pid == 0:
                _in_child(
                    lambda: (
                        client.send("a.b", n=1) == 0
                        and memory.send("a.b", n=2) == 0
                        and len(memory.sent) == 1
                    )
                )
            forked.append(pid)
        assert _exit_code(pid, timeout=FORK_RESET_TIMEOUT_S) == 0
        assert client.send("a.b", n=3) == 0  # the parent's own locks were let go
    finally:
        client.close()
        memory.close()
