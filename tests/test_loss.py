"""Every loss counted, replays refused, floods survived: real workers on a real redis-server.

A worker counts what an origin sent and it never received from the gaps in
that origin's sequence numbers. Here Redis itself cuts a paused worker off
at a low ``client-output-buffer-limit``: once the sender's next messages
arrive, ``processed + lost`` must equal everything the sender published on
that signal since the worker subscribed.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import redis

from sigbroker import Client
from sigbroker.codec import Codec, Envelope
from sigbroker.devserver import DevServer
from tests.app.signals import everything
from tests.helpers import WorkerProcess, subscribers, wait_for

SECRET = "loss-test-secret"


def final_stats(worker: WorkerProcess) -> dict[str, Any]:
    """Stop the worker warmly; return the counters of its last log line."""
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()[-3000:]
    found = re.findall(r"Worker \S+ stopped: (\{.*\})", worker.output())
    assert found, worker.output()[-3000:]
    stats: dict[str, Any] = ast.literal_eval(found[-1])
    return stats


def test_messages_redis_drops_for_a_slow_worker_are_counted_exactly(
    redis_factory: Callable[[], DevServer],
    start_worker: Callable[..., WorkerProcess],
    namespace: str,
) -> None:
    server = redis_factory()
    with redis.Redis.from_url(server.url) as r:
        r.config_set("client-output-buffer-limit", "pubsub 256kb 0 0")
    channel = f"{namespace}:{everything.name}"
    worker = start_worker(server.url)
    worker.wait_subscribed(channel)
    sent = 0
    with Client(server.url, namespace=namespace) as client:
        for i in range(5):
            sent += 1
            client.send(everything, sender=None, i=i)
        worker.wait_records(5, receiver="on_everything")

        # Paused, the worker reads nothing; Redis buffers for it up to 256 kB,
        # then closes its connection and forgets the subscription.
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            pad = "x" * 1000
            while subscribers(server.url, channel):
                for _ in range(100):
                    sent += 1
                    client.send(everything, sender=None, i=sent - 1, pad=pad)
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)

        wait_for(lambda: subscribers(server.url, channel) == 1, 30, "the worker to resubscribe")
        for _ in range(5):
            sent += 1
            client.send(everything, sender=None, i=sent - 1)
        worker.wait_records(1, 15, receiver="on_everything", kwargs={"i": sent - 1})

    stats = final_stats(worker)
    assert stats["resubscribes"] >= 1
    assert stats["lost"] > 0
    assert stats["processed"] + stats["lost"] == sent, (stats, sent)
    assert stats["rejected"] == 0
    log = worker.output()
    assert f"Lost {stats['lost']} messages of {everything.name}" in log or "Lost " in log
    assert "client-output-buffer-limit" in log


def test_replayed_and_old_signed_messages_are_rejected_as_replays(
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    namespace: str,
    tmp_path: Any,
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    channel = f"{namespace}:{everything.name}"
    worker = start_worker(
        global_extra=["--secret-file", str(secret_file)], extra=["--max-age", "60"]
    )
    worker.wait_subscribed(channel)
    with Client(redis_url, namespace=namespace, secret=SECRET) as client:
        captured = client.encode(everything, None, {"i": 1})
        for _ in range(6):  # sent once, then replayed 5 times by someone who captured it
            client.publish(channel, captured)
        year_ago = Envelope(
            everything.name,
            None,
            {"i": 2},
            "a" * 32,
            time.time() - 365 * 86400,
            "attacker:1:00000000",
            1,
        )
        client.publish(channel, Codec(SECRET).encode(year_ago))
        client.send(everything, sender=None, i=3)
        worker.wait_records(1, receiver="on_everything", kwargs={"i": 3})
    assert [r["kwargs"]["i"] for r in worker.records()] == [1, 3]
    stats = final_stats(worker)
    assert stats["rejected_by"] == {"replay": 6}
    assert stats["processed"] == 2 and stats["lost"] == 0


def test_a_flood_of_garbage_costs_a_few_log_lines_and_loses_nothing(
    start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    channel = f"{namespace}:{everything.name}"
    worker = start_worker()
    worker.wait_subscribed(channel)
    garbage = 20_000
    real = 100
    with Client(redis_url, namespace=namespace) as client, redis.Redis.from_url(redis_url) as r:
        for i in range(real):
            pipe = r.pipeline(transaction=False)
            for j in range(garbage // real):
                pipe.publish(channel, b"\x88garbage %d" % j)
            pipe.execute()
            client.send(everything, sender=None, i=i)
        worker.wait_records(real, 60, receiver="on_everything")
    stats = final_stats(worker)
    assert stats["processed"] == real and stats["lost"] == 0
    assert stats["rejected_by"] == {"invalid": garbage}
    rejected_lines = [line for line in worker.output().splitlines() if "Rejected" in line]
    assert 1 <= len(rejected_lines) <= 10, rejected_lines


def test_clients_of_one_namespace_on_two_servers_number_their_messages_apart(
    redis_factory: Callable[[], DevServer], namespace: str
) -> None:
    # One process sends to two Redis servers under the same namespace: each
    # server's subscribers must see 1, 2, 3... with no gap (a gap is a loss).
    servers = [redis_factory(), redis_factory()]
    per_server = 10
    channel = f"{namespace}:{everything.name}"
    connections = [redis.Redis.from_url(s.url) for s in servers]
    subs = [r.pubsub(ignore_subscribe_messages=True) for r in connections]  # type: ignore[no-untyped-call]
    clients = [Client(s.url, namespace=namespace) for s in servers]
    try:
        for sub in subs:
            sub.subscribe(channel)
        for r in connections:
            wait_for(lambda r=r: dict(r.pubsub_numsub(channel)).get(channel.encode()), 10, "sub")
        for n in range(per_server):
            for client in clients:
                assert client.send(everything, n=n) == 1
        codec = Codec()
        for sub in subs:
            seqs: list[int] = []

            def enough(sub: Any = sub, seqs: list[int] = seqs) -> bool:
                while (message := sub.get_message(timeout=0.1)) is not None:
                    seqs.append(codec.decode(message["data"]).seq)
                return len(seqs) >= per_server

            wait_for(enough, 10, f"{per_server} messages")
            assert seqs == list(range(1, per_server + 1))
    finally:
        for client in clients:
            client.close()
        for sub in subs:
            sub.close()
        for r in connections:
            r.close()
