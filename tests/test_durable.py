"""Durable delivery across real processes: Redis Streams consumer groups, as issue 11 §7 asks.

Workers are ``sigbroker worker -A tests.durable_receivers --group G`` subprocesses
on a real ``redis-server``; the test process sends and then reads, from each
worker's record file (tests/durable_receivers.py), which process ran which
receiver on which message and on which delivery. Nothing waits a fixed time:
every wait is for a condition, with a timeout. Crash recovery waits for the
dead worker's heartbeat to expire (15 s) and a pulse of a live worker (5 s),
so those tests take 20-30 s each.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from sigbroker import Client, Signal
from sigbroker.broker import list_workers
from sigbroker.devserver import DevServer, redis_server_path
from sigbroker.durable import dlq_key, lost_key, retry_field, retry_key, stream_key
from tests.durable_receivers import bulk, flaky, hold, poison
from tests.helpers import ROOT, WorkerProcess

T = TypeVar("T")

#: The durable signals of tests/durable_receivers.py: a worker of a group reads them all.
SIGNALS = (bulk, flaky, hold, poison)

#: The consumer group of most tests (a service's name).
GROUP = "billing"
#: Messages of the sharing, two-group and chaos tests (issue 11 §7: 10^4).
MESSAGES = 10_000
#: Workers killed with SIGKILL during the chaos test.
KILLS = 6
#: Seconds a chaos test's receiver works on each message, so kills land mid-stream.
CHAOS_WORK_S = 0.0005
#: Claiming a dead worker's messages: heartbeat TTL (15 s) + idle bound + a pulse, with margin.
CLAIM_WAIT_S = 40.0
#: Longest wait for a worker to start and join its group.
READY_S = 30.0
#: Longest wait for a bulk run to be processed.
BULK_WAIT_S = 90.0
#: How often a test polls the record files and Redis while it waits.
POLL_S = 0.1
#: The groups of the two-group test.
GROUPS2 = ("billing", "mail")


# -- reading what the receivers recorded ------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line a worker's receivers wrote to ``path``."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in blob.split(b"\n")[:-1] if line]


def count_lines(path: Path) -> int:
    """How many lines ``path`` holds (cheap: no parsing)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@dataclass
class Cluster:
    """The workers of one test on one Redis, and what their receivers recorded."""

    start_worker: Callable[..., WorkerProcess]
    url: str
    namespace: str
    tmp_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    killed: list[WorkerProcess] = field(default_factory=list)
    #: Worker ids (consumer names) by pid, once seen in a heartbeat.
    ids: dict[int, str] = field(default_factory=dict)

    def start(
        self,
        group: str = GROUP,
        *extra: str,
        env: dict[str, str] | None = None,
        loglevel: str = "DEBUG",
        wait: bool = True,
    ) -> WorkerProcess:
        """Start ``sigbroker worker --group group``; by default wait until it reads its group."""
        args = ["--group", group, "--loglevel", loglevel, *extra]
        worker = self.start_worker(
            self.url, modules=("tests.durable_receivers",), extra=args, env=env
        )
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker, group)
        return worker

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stream(self, sig: Signal) -> str:
        return stream_key(self.namespace, sig.name)

    def consumers(self, sig: Signal, group: str = GROUP) -> dict[str, dict[str, Any]]:
        """The consumers of ``group`` on ``sig``'s stream, by name ({} if there is no group)."""
        with self.redis() as r:
            try:
                rows = r.xinfo_consumers(self.stream(sig), group)
            except redis.ResponseError:
                return {}
        return {_text(row["name"]): row for row in rows}

    def groups(self, sig: Signal) -> set[str]:
        """The consumer groups of ``sig``'s stream."""
        with self.redis() as r:
            try:
                return {_text(g["name"]) for g in r.xinfo_groups(self.stream(sig))}
            except redis.ResponseError:
                return set()

    def consumer_of(self, worker: WorkerProcess) -> str:
        """The consumer name of ``worker`` (its worker id, from its heartbeat); "" until known."""
        pid = worker.proc.pid
        if pid not in self.ids:
            beat = self.heartbeat_of(worker)
            if beat is None:
                return ""
            self.ids[pid] = beat["id"]
        return self.ids[pid]

    def wait_ready(self, worker: WorkerProcess, group: str = GROUP) -> str:
        """Wait until ``worker`` beats and its group exists on every stream; return its id.

        A consumer shows in ``XINFO CONSUMERS`` only once it got an entry, but
        what is sent once the group exists is kept for the group.
        """

        def joined() -> str:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker exited with {worker.proc.returncode}")
            if not all(group in self.groups(sig) for sig in SIGNALS):
                return ""
            return self.consumer_of(worker)

        return self.wait(joined, READY_S, f"the worker to join group {group!r}")

    def kill(self, worker: WorkerProcess) -> None:
        """``kill -9`` the worker and wait for it to be gone."""
        worker.signal(signal.SIGKILL)
        worker.wait(30)
        self.killed.append(worker)

    def records(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every line recorded by every worker of the test (by receiver ``name`` if given)."""
        rows = [row for w in self.workers for row in read_lines(w.out)]
        return [row for row in rows if name is None or row["r"] == name]

    def count(self) -> int:
        """How many receiver calls were recorded so far (cheap)."""
        return sum(count_lines(w.out) for w in self.workers)

    def logs(self) -> str:
        """The tail of every worker's log, for assertion messages."""
        return "\n".join(
            f"--- worker pid {w.proc.pid} (exit {w.proc.poll()}) ---\n{w.output()[-3000:]}"
            for w in self.workers
        )

    def wait(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        """Poll ``condition`` every 0.1 s until truthy; fail with every worker's log."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n{self.logs()}"
                )
            time.sleep(POLL_S)

    def wait_distinct(self, n: int, timeout: float = BULK_WAIT_S, name: str = "on_bulk") -> None:
        """Wait until ``n`` distinct messages were recorded by receiver ``name``."""

        def enough() -> bool:
            # Counting lines is cheap; parse only once there may be enough.
            return self.count() >= n and len({r["i"] for r in self.records(name)}) >= n

        self.wait(enough, timeout, f"{n} distinct messages recorded by {name}")

    def pending(self, sig: Signal, group: str = GROUP, consumer: str | None = None) -> list[str]:
        """The entry ids pending in ``group`` on ``sig``'s stream (held by ``consumer``)."""
        with self.redis() as r:
            try:
                rows = r.xpending_range(
                    self.stream(sig), group, "-", "+", 100_000, consumername=consumer
                )
            except redis.ResponseError:
                return []
        return [_text(row["message_id"]) for row in rows]

    def wait_all_acked(self, sig: Signal, group: str = GROUP, timeout: float = 30.0) -> None:
        self.wait(lambda: not self.pending(sig, group), timeout, f"group {group} to ack everything")

    def heartbeats(self) -> list[dict[str, Any]]:
        """The live workers' heartbeats (what ``sigbroker workers --json`` lists)."""
        with Client(self.url, namespace=self.namespace) as client:
            return list_workers(client)

    def heartbeat_of(self, worker: WorkerProcess) -> dict[str, Any] | None:
        found = [b for b in self.heartbeats() if b.get("pid") == worker.proc.pid]
        return found[0] if found else None

    def lost(self, sig: Signal, group: str = GROUP) -> int:
        """What the group's lost hash counts for ``sig``'s stream."""
        with self.redis() as r:
            value = r.hget(lost_key(self.namespace, group), self.stream(sig))
        return int(value) if value is not None else 0


def log_messages(log: str) -> list[str]:
    """The messages of a worker's log lines (``time level logger: message``)."""
    return [line.split(": ", 1)[1] for line in log.splitlines() if ": " in line]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def run_cli(url: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sigbroker --url URL --namespace NS ARGS...`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sigbroker", "--url", url, "--namespace", namespace, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def cluster(
    real_redis: DevServer,
    start_worker: Callable[..., WorkerProcess],
    namespace: str,
    tmp_path: Path,
) -> Cluster:
    return Cluster(start_worker, real_redis.url, namespace, tmp_path)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.url, namespace=cluster.namespace) as c:
        yield c


def send_bulk(
    client: Client, n: int, *, start: int = 0, work: float = 0.0, groups: int = 1
) -> None:
    """Send ``bulk`` messages ``start..start+n-1``; each send must count ``groups`` groups."""
    for i in range(start, start + n):
        assert client.send(bulk, i=i, work=work) == groups


def by_message(rows: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        found[row["i"]].append(row)
    return found


# -- 1, 2: sharing within a group, every group gets everything ----------------------------


def test_two_workers_of_a_group_share_the_messages_each_processed_once(
    cluster: Cluster, client: Client
) -> None:
    first = cluster.start(loglevel="INFO")
    second = cluster.start(loglevel="INFO")
    send_bulk(client, MESSAGES)
    cluster.wait_distinct(MESSAGES)
    cluster.wait_all_acked(bulk)
    assert first.warm_stop() and second.warm_stop(), cluster.logs()
    rows = cluster.records("on_bulk")
    counts = Counter(r["i"] for r in rows)
    assert sorted(counts) == list(range(MESSAGES))
    assert [i for i, n in counts.items() if n > 1] == []
    per_worker = Counter(r["pid"] for r in rows)
    assert set(per_worker) == {first.proc.pid, second.proc.pid}, per_worker
    assert {r["deliveries"] for r in rows} == {1}
    assert {r["group"] for r in rows} == {GROUP}
    assert {r["signal"] for r in rows} == {bulk.name}
    assert len({r["id"] for r in rows}) == MESSAGES and len({r["entry"] for r in rows}) == MESSAGES
    print(f"\nshared: {dict(per_worker)} of {MESSAGES} messages, no duplicate")


def test_every_group_gets_every_message(cluster: Cluster, client: Client) -> None:
    n = MESSAGES // 2
    assert client.send(bulk, i=-1, work=0) == 0  # no group yet: kept, counted as none
    billing = cluster.start("billing", loglevel="INFO")
    mail = cluster.start("mail", loglevel="INFO")
    send_bulk(client, n, groups=2)

    def both() -> bool:
        if cluster.count() < 2 * n:
            return False
        rows = cluster.records("on_bulk")
        return all(len({r["i"] for r in rows if r["group"] == g}) >= n for g in GROUPS2)

    cluster.wait(both, BULK_WAIT_S, "both groups to process everything")
    for group in GROUPS2:
        cluster.wait_all_acked(bulk, group)
    assert billing.warm_stop() and mail.warm_stop(), cluster.logs()
    rows = cluster.records("on_bulk")
    for group, worker in (("billing", billing), ("mail", mail)):
        mine = [r for r in rows if r["group"] == group]
        # Created at the stream's end: the message sent before the group is not theirs.
        assert sorted(r["i"] for r in mine) == list(range(n)), group
        assert {r["pid"] for r in mine} == {worker.proc.pid}
    # Each group processed the same messages, under the same message ids.
    ids = {g: {r["i"]: r["id"] for r in rows if r["group"] == g} for g in GROUPS2}
    assert ids["billing"] == ids["mail"]


# -- 3: kill -9 during 10^4 messages ------------------------------------------------------


@dataclass
class Kill:
    """One ``kill -9``: whom, and what its consumer held (pending) right after."""

    pid: int
    consumer: str
    pending: set[str]
    at_records: int


def _kill_one(cluster: Cluster, rng: random.Random) -> Kill:
    # Only a worker that has joined: its consumer name is known before the kill.
    def joined() -> list[tuple[WorkerProcess, str]]:
        live = [w for w in cluster.workers if w.proc.poll() is None]
        return [(w, c) for w in live if (c := cluster.consumer_of(w))]

    victim, consumer = rng.choice(cluster.wait(joined, READY_S, "a worker to kill"))
    at = cluster.count()
    cluster.kill(victim)
    # Dead, its pending entries are frozen until a live worker claims them,
    # which waits for its heartbeat to expire (>= 10 s from now).
    held = set(cluster.pending(bulk, consumer=consumer))
    return Kill(victim.proc.pid, consumer, held, at)


def _check_duplicates(rows: list[dict[str, Any]], kills: list[Kill]) -> tuple[int, dict[int, int]]:
    """Check every duplicate is a message a killed worker held; return (duplicates, per pid).

    In flight at a kill means pending on the killed worker's consumer right
    after the kill: read (or claimed) and not acknowledged. Each earlier run
    of a duplicated message must be by a killed worker and among what it held
    then; only the last run may be by a worker that lived. A worker acks with
    its next read, so what it held is about its batch in hand, the read on its
    way (100 each) and what it claimed.
    """
    held = {k.pid: k.pending for k in kills}
    duplicates, blamed = 0, Counter[int]()
    for i, runs in by_message(rows).items():
        if len(runs) == 1:
            continue
        duplicates += len(runs) - 1
        runs.sort(key=lambda r: r["deliveries"])
        deliveries = [r["deliveries"] for r in runs]
        assert deliveries == sorted(set(deliveries)), (i, runs)  # each run counted once more
        assert len({r["pid"] for r in runs}) == len(runs), (i, runs)
        for earlier in runs[:-1]:
            # Processed, not acknowledged, and then its worker was killed.
            assert earlier["pid"] in held, (i, runs)
            assert earlier["entry"] in held[earlier["pid"]], (i, runs)
            blamed[earlier["pid"]] += 1
    return duplicates, dict(blamed)


def _check_delivery_counts(rows: list[dict[str, Any]], kills: list[Kill]) -> None:
    """The last delivery of each message counts one per killed worker that held it, no more."""
    holders = Counter(entry for k in kills for entry in k.pending)
    for i, runs in by_message(rows).items():
        last = max(runs, key=lambda r: r["deliveries"])
        assert last["deliveries"] == 1 + holders[last["entry"]], (i, runs, holders[last["entry"]])


@pytest.mark.chaos
def test_kill_9_during_ten_thousand_messages_loses_none(cluster: Cluster) -> None:
    seed = int(os.environ.get("DURABLE_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    for _ in range(2):
        cluster.start(loglevel="INFO")
    sent: list[int] = []
    failure: list[BaseException] = []

    def sender() -> None:
        try:
            with Client(cluster.url, namespace=cluster.namespace) as c:
                for i in range(MESSAGES):
                    assert c.send(bulk, i=i, work=CHAOS_WORK_S) == 1
                    sent.append(i)
        except BaseException as exc:  # reported by the test's thread
            failure.append(exc)

    thread = threading.Thread(target=sender, name="chaos-sender")
    thread.start()
    kills: list[Kill] = []
    try:
        marks = sorted(rng.sample(range(MESSAGES // 20, MESSAGES * 4 // 5), KILLS))
        for mark in marks:
            cluster.wait(lambda m=mark: cluster.count() >= m, BULK_WAIT_S, f"{mark} records")
            kills.append(_kill_one(cluster, rng))
            cluster.start(loglevel="INFO", wait=False)
    finally:
        thread.join(120)
    assert not failure, failure
    assert len(sent) == MESSAGES
    live = [w for w in cluster.workers if w.proc.poll() is None]
    for worker in live:
        cluster.wait_ready(worker)
    cluster.wait_distinct(MESSAGES, BULK_WAIT_S + CLAIM_WAIT_S)
    cluster.wait_all_acked(bulk, timeout=CLAIM_WAIT_S)
    # A dead consumer leaves the group once nothing is pending on it.
    names = {cluster.consumer_of(w) for w in live}
    cluster.wait(
        lambda: set(cluster.consumers(bulk)) <= names, CLAIM_WAIT_S, "dead consumers removed"
    )
    for worker in live:
        assert worker.warm_stop(), worker.output()[-4000:]
    rows = cluster.records("on_bulk")
    processed = {r["i"] for r in rows}
    lost = MESSAGES - len(processed & set(range(MESSAGES)))
    duplicates, blamed = _check_duplicates(rows, kills)
    _check_delivery_counts(rows, kills)
    held = sum(len(k.pending) for k in kills)
    print(
        f"\nchaos (seed {seed}): messages {MESSAGES}, kills {len(kills)}, lost {lost}, "
        f"duplicates {duplicates} (held by the killed workers at their kill: {held}; "
        f"duplicates per killed pid: {blamed})"
    )
    assert lost == 0
    assert duplicates <= held
    assert cluster.lost(bulk) == 0


# -- 4, 5: retries of the failing receiver alone, dead letters and their replay -------------


def test_a_receiver_failing_twice_is_retried_alone_until_it_succeeds(
    cluster: Cluster, client: Client
) -> None:
    worker = cluster.start()
    assert client.send(flaky, token="t1") == 1
    rows = cluster.wait(
        lambda: [r for r in cluster.records() if r["r"] == "flaky_fails_twice"][2:],
        30,
        "the third delivery",
    )
    cluster.wait_all_acked(flaky)
    failing = cluster.records("flaky_fails_twice")
    assert [r["deliveries"] for r in failing] == [1, 2, 3], failing
    assert len({r["id"] for r in failing}) == 1 and len({r["entry"] for r in failing}) == 1
    (other,) = cluster.records("flaky_other")
    assert other["deliveries"] == 1 and other["id"] == rows[0]["id"]
    assert {r["pid"] for r in failing} == {worker.proc.pid}
    # Done: nothing left in the retry state, nothing dead-lettered.
    with cluster.redis() as r:
        field_name = retry_field(cluster.stream(flaky), failing[0]["entry"])
        cluster.wait(
            lambda: not r.hexists(retry_key(cluster.namespace, GROUP), field_name),
            15,
            "the retry state to be cleared",
        )
        assert r.xlen(dlq_key(cluster.namespace, GROUP)) == 0
    assert worker.warm_stop()
    assert cluster.records("flaky_other") == [other]
    assert "flaky receiver fails on delivery 1" in worker.output()


def _replay(cluster: Cluster, group: str) -> str:
    """``sigbroker dlq replay --group G``; by XADD of the entries per the spec if it is missing."""
    out = run_cli(cluster.url, cluster.namespace, "dlq", "replay", "--group", group)
    if "No such command" not in out.stderr:
        assert out.returncode == 0, out.stdout + out.stderr
        return "sigbroker dlq replay"
    with cluster.redis() as r:
        key = dlq_key(cluster.namespace, group)
        for entry_id, fields in r.xrange(key):
            r.xadd(
                fields[b"stream"],
                {b"d": fields[b"d"], b"g": group.encode(), b"r": fields[b"receiver"]},
            )
            r.xdel(key, entry_id)
    return "XADD (no dlq command yet)"


def test_a_poison_message_is_dead_lettered_then_replayed_to_its_receiver_and_group_only(
    cluster: Cluster, client: Client
) -> None:
    # "mail" has the fixed receiver from the start: it processes the message once.
    mail = cluster.start("mail", env={"DURABLE_POISON_FIXED": "1"})
    billing = cluster.start(GROUP, "--max-deliveries", "3")
    assert client.send(poison, token="p1") == 2
    with cluster.redis() as r:
        dlq = dlq_key(cluster.namespace, GROUP)
        cluster.wait(lambda: r.xlen(dlq) >= 1, 30, "the dead letter")
        cluster.wait_all_acked(poison)
        ((_, original),) = r.xrange(cluster.stream(poison))
        ((_, dead),) = r.xrange(dlq)
        assert r.xlen(dlq_key(cluster.namespace, "mail")) == 0
    runs = [r for r in cluster.records("poison_always_raises") if r["group"] == GROUP]
    assert [r["deliveries"] for r in runs] == [1, 2, 3]
    entry = runs[0]["entry"]
    fields = {k.decode(): v for k, v in dead.items()}
    assert fields["d"] == original[b"d"]
    assert fields["signal"].decode() == poison.name
    assert fields["stream"].decode() == cluster.stream(poison)
    assert fields["entry"].decode() == entry
    assert fields["receiver"].decode().endswith("poison_always_raises")
    assert fields["error"].decode() == "ValueError: poisoned message p1"
    traceback = fields["traceback"].decode()
    assert "Traceback" in traceback and "poisoned message p1" in traceback
    assert fields["deliveries"].decode() == "3"
    assert fields["worker"].decode() == cluster.consumer_of(billing)
    assert float(fields["failed_at"]) > 0
    others = [r for r in cluster.records("poison_other") if r["group"] == GROUP]
    assert [r["deliveries"] for r in others] == [1]  # ran once, never retried

    # The fix is deployed: billing's worker restarts with it, and the dead letter is replayed.
    assert billing.warm_stop()
    billing = cluster.start(GROUP, "--max-deliveries", "3", env={"DURABLE_POISON_FIXED": "1"})

    def mail_rows() -> list[dict[str, Any]]:
        return [r for r in cluster.records() if r["group"] == "mail"]

    cluster.wait(lambda: len(mail_rows()) >= 2, 20, "mail to run both receivers")
    mail_before = mail_rows()
    assert sorted(r["r"] for r in mail_before) == ["poison_always_raises", "poison_other"]
    how = _replay(cluster, GROUP)
    cluster.wait(
        lambda: (
            len([r for r in cluster.records("poison_always_raises") if r["group"] == GROUP]) >= 4
        ),
        30,
        "the replay to run",
    )
    cluster.wait_all_acked(poison)
    with cluster.redis() as r:
        assert r.xlen(dlq_key(cluster.namespace, GROUP)) == 0
        last = _text(r.xrevrange(cluster.stream(poison), count=1)[0][0])

        def mail_read_it() -> bool:
            groups = {_text(g["name"]): g for g in r.xinfo_groups(cluster.stream(poison))}
            return _text(groups["mail"]["last-delivered-id"]) == last

        # mail reads the replayed entry too, and acks it without running anything.
        cluster.wait(mail_read_it, 20, "mail to read the replayed entry")
    cluster.wait_all_acked(poison, "mail")
    replayed = [r for r in cluster.records("poison_always_raises") if r["group"] == GROUP][3:]
    assert len(replayed) == 1 and replayed[0]["id"] == runs[0]["id"]
    assert replayed[0]["pid"] == billing.proc.pid and replayed[0]["entry"] == last
    assert [r for r in cluster.records("poison_other") if r["group"] == GROUP] == others
    assert mail_rows() == mail_before
    assert billing.warm_stop() and mail.warm_stop()
    print(f"\ndead letter replayed by {how}")


# -- 6: Redis killed and restarted, with AOF -----------------------------------------------


@pytest.fixture
def aof_server() -> Iterator[DevServer]:
    if not redis_server_path():
        pytest.skip("needs a real redis-server to kill and restart")
    server = DevServer(backend="redis-server", append_only=True)
    try:
        yield server.start()
    finally:
        server.close()


def test_a_redis_restart_mid_stream_with_aof_loses_nothing(
    aof_server: DevServer,
    start_worker: Callable[..., WorkerProcess],
    namespace: str,
    tmp_path: Path,
) -> None:
    cluster = Cluster(start_worker, aof_server.url, namespace, tmp_path)
    before, after = 3000, 1000
    worker = cluster.start(loglevel=os.environ.get("DURABLE_LOGLEVEL", "INFO"))
    with Client(aof_server.url, namespace=namespace, timeout_s=10) as client:
        send_bulk(client, before, work=0.001)
        cluster.wait(lambda: cluster.count() >= before // 5, 60, "the worker to be mid-stream")
        aof_server.kill()
        aof_server.start()
        with cluster.redis() as r:
            assert r.xlen(cluster.stream(bulk)) == before  # every acknowledged XADD came back
        send_bulk(client, after, start=before)
    cluster.wait_distinct(before + after, 120)
    cluster.wait_all_acked(bulk)
    assert worker.proc.poll() is None, worker.output()[-4000:]
    rows = cluster.records("on_bulk")
    counts = Counter(r["i"] for r in rows)
    assert sorted(counts) == list(range(before + after))
    duplicates = sum(n - 1 for n in counts.values())
    assert worker.warm_stop(), worker.output()[-4000:]
    print(
        f"\nRedis restart (AOF, fsync always): messages {before + after}, lost 0, "
        f"duplicates {duplicates}"
    )
    # Nothing runs twice either: the worker knows what it ran. Acks on their way when the
    # connection broke are sent again, and after the reconnect it takes back from its
    # history only what it neither holds nor finished (a read whose reply was lost).
    assert "lost Redis" in worker.output()
    assert duplicates == 0, sorted(i for i, n in counts.items() if n > 1)


# -- 7, 8: trimmed and deleted entries are counted lost, never run -------------------------


@pytest.mark.chaos
def test_trimming_a_lagging_group_counts_what_it_never_read(
    cluster: Cluster, client: Client
) -> None:
    worker = cluster.start()
    send_bulk(client, 10)
    cluster.wait_distinct(10, 30)
    cluster.wait_all_acked(bulk)
    assert worker.warm_stop()
    send_bulk(client, 40, start=10)  # the group lags: nobody reads these
    with cluster.redis() as r:
        assert r.xtrim(cluster.stream(bulk), maxlen=20, approximate=False) == 30
    worker = cluster.start()
    cluster.wait_distinct(30, 30)
    cluster.wait_all_acked(bulk)
    # 10..29 were trimmed before the group read them: 20 lost, 30..49 processed.
    assert sorted(r["i"] for r in cluster.records("on_bulk")) == [*range(10), *range(30, 50)]
    cluster.wait(lambda: cluster.lost(bulk) == 20, 20, "the lost hash to count 20")
    beat = cluster.wait(
        lambda: (b := cluster.heartbeat_of(worker)) and b["lost"] == 20 and b,
        20,
        "the heartbeat to count 20 lost",
    )
    assert beat["group"] == GROUP
    # One more pulse counts nothing more, and the loss was logged once.
    cluster.wait(
        lambda: (b := cluster.heartbeat_of(worker)) and b["last_seen"] > beat["last_seen"],
        20,
        "the next pulse",
    )
    assert cluster.heartbeat_of(worker)["lost"] == 20  # type: ignore[index]
    assert cluster.lost(bulk) == 20
    logged = [
        text
        for text in log_messages(worker.output())
        if re.search(r"\b20\b", text) and re.search(r"lost|trimmed", text, re.IGNORECASE)
    ]
    assert len(logged) == 1, worker.output()[-4000:]
    out = run_cli(cluster.url, cluster.namespace, "workers", "--json")
    assert out.returncode == 0, out.stderr
    (listed,) = [b for b in json.loads(out.stdout) if b["pid"] == worker.proc.pid]
    assert listed["lost"] == 20 and listed["group"] == GROUP
    assert worker.warm_stop()


@pytest.mark.chaos
def test_a_pending_entry_deleted_before_its_claim_is_acked_and_counted_lost(
    cluster: Cluster, client: Client
) -> None:
    gate = cluster.tmp_path / "never"
    assert client.send(hold, i=0, gate=str(gate)) == 0  # kept for the group to come
    holder = cluster.start(GROUP, "--from-start")
    (started,) = cluster.wait(lambda: cluster.records("on_hold"), 20, "the held receiver")
    consumer = cluster.consumer_of(holder)
    assert cluster.pending(hold, consumer=consumer) == [started["entry"]]
    claimer = cluster.start(GROUP)
    cluster.kill(holder)
    with cluster.redis() as r:
        assert r.xdel(cluster.stream(hold), started["entry"]) == 1
    cluster.wait(lambda: cluster.lost(hold) == 1, CLAIM_WAIT_S, "the deleted entry counted lost")
    cluster.wait_all_acked(hold)
    beat = cluster.wait(
        lambda: (b := cluster.heartbeat_of(claimer)) and b["lost"] >= 1 and b,
        20,
        "the claimer's heartbeat to count it",
    )
    assert beat["lost"] == 1
    cluster.wait(lambda: consumer not in cluster.consumers(hold), 20, "the dead consumer removed")
    # Never passed to a receiver again, and the claimer still works.
    assert [r["pid"] for r in cluster.records("on_hold")] == [holder.proc.pid]
    assert client.send(bulk, i=7, work=0) == 1
    cluster.wait_distinct(1, 20)
    assert [(r["i"], r["pid"]) for r in cluster.records("on_bulk")] == [(7, claimer.proc.pid)]
    assert claimer.proc.poll() is None
    assert claimer.warm_stop(), claimer.output()[-4000:]
    assert "Traceback" not in claimer.output()


# -- 9, 10: stops and crashes while holding messages ---------------------------------------


def _hold_backlog(cluster: Cluster, client: Client, n: int) -> tuple[WorkerProcess, str, Path]:
    """Queue ``n`` held messages, start a worker that reads them all at once, wait for the first.

    The messages are sent before the group exists and the worker starts
    ``--from-start``: its first read takes all of them, and the first one's
    receiver waits on the gate file, so the others are read and not started.
    """
    gate = cluster.tmp_path / "gate"
    for i in range(n):
        assert client.send(hold, i=i, gate=str(gate)) == 0
    worker = cluster.start(GROUP, "--from-start")
    cluster.wait(lambda: cluster.records("on_hold"), 20, "the first held receiver")
    consumer = cluster.consumer_of(worker)
    assert len(cluster.pending(hold, consumer=consumer)) == n
    assert [r["i"] for r in cluster.records("on_hold")] == [0]
    return worker, consumer, gate


def test_a_warm_stop_returns_unstarted_messages_without_counting_a_delivery(
    cluster: Cluster, client: Client
) -> None:
    n = 6
    first, consumer, gate = _hold_backlog(cluster, client, n)
    first.signal(signal.SIGTERM)
    cluster.wait(lambda: "stopping" in first.output(), 20, "the warm stop to begin")
    gate.touch()  # the receiver running finishes; the others stay unstarted
    assert first.wait(30) == 0, first.output()[-4000:]
    returned = cluster.pending(hold, consumer=consumer)
    assert len(returned) == n - 1  # read, not started, left pending for the group
    with cluster.redis() as r:
        for entry in returned:
            raw = r.hget(
                retry_key(cluster.namespace, GROUP), retry_field(cluster.stream(hold), entry)
            )
            assert raw is not None and json.loads(raw)["returned"] is True, raw
    second = cluster.start(GROUP)
    cluster.wait(
        lambda: len(cluster.records("on_hold_done")) >= n, CLAIM_WAIT_S, "the returned messages"
    )
    cluster.wait_all_acked(hold)
    rows = cluster.records("on_hold")
    assert sorted(r["i"] for r in rows) == list(range(n))  # each exactly once
    assert [r["pid"] for r in rows if r["i"] == 0] == [first.proc.pid]
    later = [r for r in rows if r["i"] != 0]
    assert {r["pid"] for r in later} == {second.proc.pid}
    assert [r["deliveries"] for r in later] == [1] * (n - 1), later
    assert sorted(r["entry"] for r in later) == sorted(returned)
    assert second.warm_stop()


@pytest.mark.chaos
def test_a_killed_workers_messages_are_claimed_by_another_and_processed(
    cluster: Cluster, client: Client
) -> None:
    n = 6
    holder, consumer, gate = _hold_backlog(cluster, client, n)
    held = set(cluster.pending(hold, consumer=consumer))
    claimer = cluster.start(GROUP)
    cluster.kill(holder)
    killed_at = time.monotonic()
    gate.touch()  # would let a first delivery through; every delivery from here is a claim
    cluster.wait(
        lambda: len(cluster.records("on_hold_done")) >= n, CLAIM_WAIT_S, "the claimed messages"
    )
    print(f"\nclaimed and processed {time.monotonic() - killed_at:.1f}s after the kill -9")
    cluster.wait_all_acked(hold)
    cluster.wait(lambda: consumer not in cluster.consumers(hold), 20, "the dead consumer removed")
    claimed = [r for r in cluster.records("on_hold") if r["pid"] == claimer.proc.pid]
    assert sorted(r["i"] for r in claimed) == list(range(n))
    assert {r["entry"] for r in claimed} == held
    # The dead holder may have been running each of them: one attempt counted for it.
    assert [r["deliveries"] for r in claimed] == [2] * n, claimed
    beat = cluster.wait(
        lambda: (b := cluster.heartbeat_of(claimer)) and b["claimed"] >= n and b,
        20,
        "the claimer's heartbeat to count the claims",
    )
    assert beat["claimed"] == n and beat["lost"] == 0
    assert claimer.warm_stop()


# -- configuration -------------------------------------------------------------------------


def test_a_durable_signal_with_receivers_and_no_group_is_a_startup_error(
    real_redis: DevServer, namespace: str
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sigbroker",
            "--url",
            real_redis.url,
            "--namespace",
            namespace,
            "worker",
            "-A",
            "tests.durable_receivers",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SIGBROKER_TEST_OUT": os.devnull},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--group" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    with redis.Redis.from_url(real_redis.url) as r:
        assert r.keys(f"{namespace}:*") == []  # nothing created, no heartbeat left
