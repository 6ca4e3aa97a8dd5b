"""Durable signals in one process: the signal, the client's destinations, the dispatcher.

The cross-process behaviour (groups, retries, claims, dead letters, kills)
is in ``test_durable.py``; here are the parts that need no worker process:
what a send appends and returns on a real Redis, and how the dispatcher runs
a durable delivery.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import sigbroker
from sigbroker import Client, Signal, Worker, current_message
from sigbroker._aio import EventLoopThread
from sigbroker.codec import Codec
from sigbroker.devserver import DevServer
from sigbroker.dispatch import Dispatcher
from sigbroker.durable import DEFAULT_MAXLEN, ConsumerOptions, stream_key
from sigbroker.durable_calls import receiver_names
from sigbroker.errors import ConfigurationError
from sigbroker.message import Message
from sigbroker.stats import Stats
from sigbroker.testing import in_memory
from sigbroker.transport.base import Delivery, Outcome, Stream


def test_a_durable_signal_keeps_a_bounded_stream() -> None:
    sig = Signal(name="t.durable", durable=True)
    assert sig.durable and sig.maxlen == DEFAULT_MAXLEN
    assert Signal(name="t.small", durable=True, maxlen=10).maxlen == 10
    assert not Signal(name="t.plain").durable


@pytest.mark.parametrize("maxlen", [0, -1, 1.5, "10"])
def test_bad_input_maxlen_is_refused(maxlen: Any) -> None:
    with pytest.raises(ConfigurationError, match="maxlen"):
        Signal(name="t.bad", durable=True, maxlen=maxlen)


def test_bad_input_maxlen_without_durable_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="durable=True"):
        Signal(name="t.bad", maxlen=10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group": ""}, "group name"),
        ({"group": "a b"}, "group name"),
        ({"group": "g", "max_deliveries": 0}, "max_deliveries"),
        ({"group": "g", "claim_idle_s": 1}, "claim_idle_s"),
    ],
)
def test_bad_input_consumer_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ConsumerOptions(**options)


def test_the_client_sends_a_durable_signal_to_its_stream() -> None:
    client = Client("redis://127.0.0.1:1/0", namespace="ns")
    sig = Signal(name="shop.paid", durable=True, maxlen=500)
    assert client.destination(sig) == Stream("ns:stream:shop.paid", 500)
    assert client.channel(sig) == stream_key("ns", "shop.paid")
    assert client.destination(Signal(name="shop.seen")) == "ns:shop.seen"
    client.close()


def test_a_durable_signal_without_a_group_is_a_startup_error() -> None:
    sig = Signal(name="t.needs_group", durable=True)
    sig.connect(_noop, weak=False)
    with in_memory() as broker, pytest.raises(ConfigurationError, match="--group NAME"):
        Worker(broker, signals=[sig]).run()


def _noop(**kwargs: Any) -> None:
    pass


# -- on a real Redis: what a send appends and returns ------------------------


@pytest.fixture
def client(real_redis: DevServer, namespace: str) -> Iterator[Client]:
    with Client(real_redis.url, namespace=namespace) as c:
        yield c


def test_send_appends_the_envelope_and_returns_the_number_of_groups(
    client: Client, real_redis: DevServer
) -> None:
    sig = Signal(providing_args=["n"], name="t.counted", durable=True)
    key = client.channel(sig)
    r = redis.Redis.from_url(real_redis.url)
    assert sig.name and client.send(sig, sender="web", n=1) == 0  # nobody consumes it yet
    r.xgroup_create(key, "billing", "$")
    assert client.send(sig, sender="web", n=2) == 1
    r.xgroup_create(key, "mail", "$")
    assert client.send(sig, sender="web", n=3) == 2
    entries = r.xrange(key)
    assert len(entries) == 3  # the first is kept although no group existed
    decoded = [client.codec.decode(fields[b"d"]) for _, fields in entries]
    assert [e.kwargs["n"] for e in decoded] == [1, 2, 3]
    assert {e.signal for e in decoded} == {"t.counted"}


def test_the_stream_keeps_about_maxlen_entries(client: Client, real_redis: DevServer) -> None:
    sig = Signal(name="t.trimmed", durable=True, maxlen=100)
    with client.batch() as batch:
        for n in range(2000):
            batch.send(sig, n=n)
    length = redis.Redis.from_url(real_redis.url).xlen(client.channel(sig))
    assert 100 <= length < 400  # approximate trimming: whole nodes of the radix tree


def test_a_batch_mixes_durable_and_pubsub_signals(client: Client, real_redis: DevServer) -> None:
    durable = Signal(name="t.mixed_durable", durable=True)
    plain = Signal(name="t.mixed_plain")
    r = redis.Redis.from_url(real_redis.url)
    r.xgroup_create(client.channel(durable), "svc", "$", mkstream=True)
    pubsub = r.pubsub()
    pubsub.subscribe(client.channel(plain))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    with client.batch() as batch:
        batch.send(durable, n=1)
        batch.send(plain, n=2)
        batch.send(durable, n=3)
    assert batch.results == [1, 1, 1]
    assert [client.codec.decode(f[b"d"]).kwargs for _, f in r.xrange(client.channel(durable))] == [
        {"n": 1},
        {"n": 3},
    ]
    message = pubsub.get_message(timeout=5)
    assert message is not None and client.codec.decode(message["data"]).kwargs == {"n": 2}
    pubsub.close()


def test_asend_and_send_robust_append_too(client: Client, real_redis: DevServer) -> None:
    sig = Signal(name="t.async_durable", durable=True)
    sigbroker.configure(url=real_redis.url, namespace=client.namespace)
    redis.Redis.from_url(real_redis.url).xgroup_create(client.channel(sig), "g", "$", mkstream=True)

    async def main() -> int:
        count = await sig.asend(sender=None, n=1)
        await sigbroker.config.default_client(Client).aclose()
        return int(count)

    assert asyncio.run(main()) == 1
    assert sig.send_robust(sender=None, n=2) == 1
    assert redis.Redis.from_url(real_redis.url).xlen(client.channel(sig)) == 2


def test_a_stream_key_of_another_type_is_refused_not_lost(
    client: Client, real_redis: DevServer
) -> None:
    sig = Signal(name="t.wrongtype", durable=True)
    redis.Redis.from_url(real_redis.url).set(client.channel(sig), "not a stream")
    with pytest.raises(sigbroker.errors.BrokerUnavailable, match="refused the message"):
        client.send(sig, n=1)


# -- the dispatcher's durable path --------------------------------------------


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Message | None]] = []
        self.fail: set[str] = set()

    def first(self, **kwargs: Any) -> None:
        self.record("first")

    def second(self, **kwargs: Any) -> None:
        self.record("second")

    async def third(self, **kwargs: Any) -> None:
        self.record("third")

    def record(self, name: str) -> None:
        self.calls.append((name, current_message()))
        if name in self.fail:
            raise ValueError(f"{name} fails")


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.close()


def _setup(loop: EventLoopThread) -> tuple[Signal, Calls, Codec, Any, Stats]:
    sig = Signal(name="t.dispatch_durable", durable=True)
    calls = Calls()
    for receiver in (calls.first, calls.second, calls.third):
        sig.connect(receiver, weak=False)
    codec = Codec()
    stats = Stats()
    handle = Dispatcher(codec, stats, loop).durable_handler(sig, "billing")
    return sig, calls, codec, handle, stats


def _names(calls: Calls) -> list[str]:
    return receiver_names([calls.first, calls.second, calls.third])


def _ignore(delivery: Delivery, outcome: Outcome) -> None:
    raise AssertionError("a handler without a pool finishes in the calling thread")


def test_a_durable_delivery_runs_every_receiver_with_its_message(loop: EventLoopThread) -> None:
    sig, calls, codec, handle, stats = _setup(loop)
    data = codec.pack(sig.name, "web", {"n": 1}, "key")
    delivery = Delivery("ns:stream:t.dispatch_durable", "5-0", data, deliveries=2)
    assert handle(delivery, _ignore) is Outcome.PROCESSED
    assert [name for name, _ in calls.calls] == ["first", "second", "third"]
    message = calls.calls[0][1]
    assert message is not None and calls.calls[2][1] == message  # the async one's too
    assert (message.signal, message.deliveries, message.entry, message.group) == (
        sig.name,
        2,
        "5-0",
        "billing",
    )
    assert message.id == codec.decode(data).id and message.origin == codec.decode(data).origin
    assert current_message() is None  # set only while receivers run
    assert not delivery.failures and stats.processed == 1


def test_a_receiver_that_raises_is_noted_by_name_and_the_others_run(
    loop: EventLoopThread,
) -> None:
    sig, calls, codec, handle, stats = _setup(loop)
    calls.fail = {"second", "third"}
    delivery = Delivery("s", "1-0", codec.pack(sig.name, None, {}, "key"))
    assert handle(delivery, _ignore) is Outcome.FAILED
    first, second, third = _names(calls)
    assert set(delivery.failures) == {second, third}
    assert delivery.failures[second][0] == "ValueError: second fails"
    assert (
        "Traceback" in delivery.failures[second][1]
        and "second fails" in delivery.failures[second][1]
    )
    assert delivery.succeeded == [first]
    assert stats.failed == 2 and stats.processed == 1


def test_a_retry_skips_the_receivers_that_succeeded(loop: EventLoopThread) -> None:
    sig, calls, codec, handle, _ = _setup(loop)
    first, second, third = _names(calls)
    delivery = Delivery("s", "1-0", codec.pack(sig.name, None, {}, "key"), 3, frozenset({first}))
    calls.fail = {"second"}
    assert handle(delivery, _ignore) is Outcome.FAILED
    assert [name for name, _ in calls.calls] == ["second", "third"]
    assert list(delivery.failures) == [second] and delivery.succeeded == [third]


def test_a_replay_runs_only_its_receiver(loop: EventLoopThread) -> None:
    sig, calls, codec, handle, _ = _setup(loop)
    _, _, third = _names(calls)
    delivery = Delivery("s", "1-0", codec.pack(sig.name, None, {}, "key"), only=third)
    assert handle(delivery, _ignore) is Outcome.PROCESSED
    assert [name for name, _ in calls.calls] == ["third"]


def test_receiver_names_are_qualified_and_repeats_numbered() -> None:
    calls = Calls()
    names = receiver_names([calls.first, calls.first, _noop])
    assert names == [
        "tests.test_durable_units.Calls.first",
        "tests.test_durable_units.Calls.first#2",
        "tests.test_durable_units._noop",
    ]


@pytest.mark.parametrize(
    "data",
    [b"\x00garbage", b"\x81\xa1v\x02"],
)
def test_bad_input_a_hostile_durable_message_is_rejected_and_counted(
    loop: EventLoopThread, data: bytes
) -> None:
    _, calls, _, handle, stats = _setup(loop)
    assert handle(Delivery("s", "1-0", data), _ignore) is Outcome.REJECTED
    assert not calls.calls and stats.rejected == 1


def test_a_message_of_another_signal_on_the_stream_is_rejected(loop: EventLoopThread) -> None:
    _, calls, codec, handle, stats = _setup(loop)
    data = codec.pack("t.other", None, {}, "key")
    assert handle(Delivery("s", "1-0", data), _ignore) is Outcome.REJECTED
    assert not calls.calls and stats.rejected_by == {"invalid": 1}


def test_a_durable_delivery_handed_to_a_pool_reports_through_done(loop: EventLoopThread) -> None:
    sig, calls, codec, _, _ = _setup(loop)
    jobs: list[Any] = []
    handle = Dispatcher(codec, Stats(), loop, threads=2).durable_handler(sig, "g", jobs.append)
    finished: list[tuple[Delivery, Outcome]] = []
    delivery = Delivery("s", "1-0", codec.pack(sig.name, None, {}, "key"))
    assert handle(delivery, lambda d, o: finished.append((d, o))) is None
    assert not calls.calls
    thread = threading.Thread(target=jobs[0])
    thread.start()
    thread.join()
    assert finished == [(delivery, Outcome.PROCESSED)] and len(calls.calls) == 3


def test_current_message_in_a_pubsub_worker(loop: EventLoopThread) -> None:
    sig = Signal(name="t.plain_message")
    seen: list[Message | None] = []
    sig.connect(lambda **kwargs: seen.append(current_message()), weak=False)
    with in_memory() as broker:
        sig.send(sender=None, n=1)
        (envelope,) = broker.sent
    (message,) = seen
    assert message is not None
    assert (message.id, message.signal, message.origin) == (envelope.id, sig.name, envelope.origin)
    assert (message.deliveries, message.entry, message.group) == (1, None, None)


def test_in_memory_runs_durable_receivers_once() -> None:
    sig = Signal(providing_args=["n"], name="t.memory_durable", durable=True)
    seen: list[tuple[int, Message | None]] = []
    sig.connect(lambda n, **kwargs: seen.append((n, current_message())), weak=False)
    with in_memory():
        assert sig.send(sender=None, n=1) == 1
        assert sig.send(sender=None, n=2) == 1
    assert [n for n, _ in seen] == [1, 2]
    message = seen[0][1]
    assert message is not None and message.deliveries == 1 and message.group == "in-memory"


class Sink:
    """A BatchSink that records what a lean batch hands back."""

    def __init__(self) -> None:
        self.stopping = False
        self.failures: list[tuple[bytes, Delivery]] = []
        self.unusual_entries: list[bytes] = []

    def failed(self, stream: bytes, entry: bytes, delivery: Delivery) -> None:
        self.failures.append((entry, delivery))

    def unusual(self, stream: bytes, entry: bytes, fields: list[bytes]) -> None:
        self.unusual_entries.append(entry)


def test_the_lean_batch_path_acks_runs_and_hands_failures_back(loop: EventLoopThread) -> None:
    sig = Signal(name="t.lean", durable=True)
    calls = Calls()
    calls.fail = {"second"}
    sig.connect(calls.first, weak=False)
    sig.connect(calls.second, weak=False)
    codec, stats = Codec(), Stats()
    route = Dispatcher(codec, stats, loop).durable_route(sig, "billing")
    assert route.batch is not None
    entries = [
        (b"1-0", [b"d", codec.pack(sig.name, "web", {"n": 1}, "key")]),
        (b"2-0", [b"d", b"\x00garbage"]),
        (b"3-0", [b"d", codec.pack(sig.name, None, {"n": 3}, "key"), b"g", b"billing"]),
        (b"4-0", [b"d", codec.pack("t.other", None, {}, "key")]),
    ]
    acks: collections.deque[bytes] = collections.deque()
    sink = Sink()
    assert route.batch(b"ns:stream:t.lean", entries, acks, sink) == 4
    assert list(acks) == [b"2-0", b"4-0"]  # the rejected ones; the first had a failure
    ((entry, delivery),) = sink.failures
    first, second = receiver_names([calls.first, calls.second])
    assert entry == b"1-0" and list(delivery.failures) == [second]
    assert delivery.succeeded == [first] and delivery.deliveries == 1
    assert sink.unusual_entries == [b"3-0"]  # a replay: the source reads its fields
    message = calls.calls[0][1]
    assert message is not None and (message.entry, message.group) == ("1-0", "billing")
    assert stats.processed == 1 and stats.failed == 1 and stats.rejected == 2


def test_the_lean_batch_path_stops_between_messages(loop: EventLoopThread) -> None:
    sig = Signal(name="t.lean_stop", durable=True)
    sink = Sink()
    seen: list[int] = []

    def stop_after_first(n: int, **kwargs: Any) -> None:
        seen.append(n)
        sink.stopping = True

    sig.connect(stop_after_first, weak=False)
    codec = Codec()
    route = Dispatcher(codec, Stats(), loop).durable_route(sig, "g")
    assert route.batch is not None
    entries = [(b"%d-0" % n, [b"d", codec.pack(sig.name, None, {"n": n}, "k")]) for n in (1, 2, 3)]
    acks: collections.deque[bytes] = collections.deque()
    assert route.batch(b"s", entries, acks, sink) == 1
    assert seen == [1] and list(acks) == [b"1-0"]


def test_a_worker_with_a_pool_or_hooks_takes_no_lean_path(loop: EventLoopThread) -> None:
    sig = Signal(name="t.not_lean", durable=True)
    codec = Codec()
    assert Dispatcher(codec, Stats(), loop).durable_route(sig, "g", lambda f: None).batch is None
    hooked = Dispatcher(codec, Stats(), loop, before_message=lambda: None)
    assert hooked.durable_route(sig, "g").batch is None


def test_a_message_whose_holders_keep_dying_is_dead_lettered_as_worker_lost(
    real_redis: DevServer, namespace: str
) -> None:
    # A message that kills its worker (OOM, a segfault) every time must not go
    # round forever (dramatiq#213): each claim from a dead holder counts one
    # delivery, and past max_deliveries the claim dead-letters it unrun.
    from sigbroker.durable import dlq_key, retry_field, retry_key
    from sigbroker.throttle import Throttle
    from sigbroker.transport.redis_endpoint import Endpoint
    from sigbroker.transport.redis_link import Link
    from sigbroker.transport.redis_retries import Retries

    r = redis.Redis.from_url(real_redis.url)
    stream = stream_key(namespace, "t.crashes")
    entry = r.xadd(stream, {"d": b"envelope"})
    r.xgroup_create(stream, "billing", "0")
    r.xreadgroup("billing", "dead-worker", {stream: ">"})
    field = retry_field(stream, entry.decode())
    r.hset(retry_key(namespace, "billing"), field, '{"n": 2, "done": ["a.first"]}')
    stats = Stats()
    link = Link(Endpoint(real_redis.url), use_hiredis=False)
    retries = Retries(
        link,
        options=ConsumerOptions("billing", max_deliveries=3),
        consumer="me",
        namespace=namespace,
        stats=stats,
        throttle=Throttle(logging.getLogger("test")),
    )
    claimed = r.xclaim(stream, "billing", "me", 0, [entry])
    retries.take_over(stream.encode(), [(entry, [b"d", b"envelope"])], dead_holder=True)
    link.close()
    assert len(claimed) == 1 and len(retries) == 0  # not run again: dead-lettered
    ((_, letter),) = r.xrange(dlq_key(namespace, "billing"))
    assert letter[b"error"].startswith(b"WorkerLost") and letter[b"deliveries"] == b"3"
    assert letter[b"receiver"] == b"" and letter[b"done"] == b'["a.first"]'
    assert r.xpending(stream, "billing")["pending"] == 0
    assert not r.hexists(retry_key(namespace, "billing"), field)
    assert stats.dead_lettered == 1 and stats.claimed == 1


def test_a_message_handed_back_by_a_warm_stop_counts_no_delivery(
    real_redis: DevServer, namespace: str
) -> None:
    from sigbroker.durable import retry_field, retry_key
    from sigbroker.throttle import Throttle
    from sigbroker.transport.redis_endpoint import Endpoint
    from sigbroker.transport.redis_link import Link
    from sigbroker.transport.redis_retries import Retries

    r = redis.Redis.from_url(real_redis.url)
    stream = stream_key(namespace, "t.handed_back")
    entry = r.xadd(stream, {"d": b"envelope"})
    link = Link(Endpoint(real_redis.url), use_hiredis=False)
    options = ConsumerOptions("billing", max_deliveries=3)
    throttle = Throttle(logging.getLogger("test"))
    stopping = Retries(
        link, options=options, consumer="a", namespace=namespace, stats=Stats(), throttle=throttle
    )
    stopping.hand_back([(stream.encode(), entry)])
    field = retry_field(stream, entry.decode())
    assert r.hget(retry_key(namespace, "billing"), field) == b'{"n": 0, "returned": true}'
    taking = Retries(
        link, options=options, consumer="b", namespace=namespace, stats=Stats(), throttle=throttle
    )
    taking.take_over(stream.encode(), [(entry, [b"d", b"envelope"])], dead_holder=True)
    link.close()
    due = taking.pop_due(float("inf"))
    assert due is not None and due.deliveries == 1  # the first delivery: nothing ran before


def _retries(url: str, namespace: str, consumer: str, stats: Stats | None = None) -> Any:
    from sigbroker.throttle import Throttle
    from sigbroker.transport.redis_endpoint import Endpoint
    from sigbroker.transport.redis_link import Link
    from sigbroker.transport.redis_retries import Retries

    return Retries(
        Link(Endpoint(url), use_hiredis=False),
        options=ConsumerOptions("billing", max_deliveries=3),
        consumer=consumer,
        namespace=namespace,
        stats=stats or Stats(),
        throttle=Throttle(logging.getLogger("test")),
    )


def test_an_entry_deleted_while_pending_is_counted_lost_once_by_two_claimers(
    real_redis: DevServer, namespace: str
) -> None:
    from sigbroker.durable import lost_key
    from sigbroker.transport.redis_claims import Claims

    r = redis.Redis.from_url(real_redis.url)
    stream = stream_key(namespace, "t.deleted")
    r.xgroup_create(stream, "billing", "$", mkstream=True)
    kept, deleted = r.xadd(stream, {"d": b"kept"}), r.xadd(stream, {"d": b"gone"})
    r.xreadgroup("billing", "dead", {stream: ">"})
    r.xclaim(stream, "billing", "dead", 0, [kept], idle=60_000)  # held a minute ago
    r.xdel(stream, deleted)
    stats = [Stats(), Stats()]
    claimers = []
    for name, s in zip(("a", "b"), stats, strict=True):
        retries = _retries(real_redis.url, namespace, name, s)
        claims = Claims(
            retries._link,
            retries,
            options=ConsumerOptions("billing"),
            consumer=name,
            alive_key=lambda worker: f"{namespace}:alive:{worker}",
            stats=s,
        )
        claimers.append((claims, retries))
    for claims, _ in claimers:  # both find the dead consumer's entries
        claims._claim_from(stream.encode(), b"dead")
    waiting = [len(retries) for _, retries in claimers]
    assert sorted(waiting) == [0, 1]  # the live entry went to one of them
    assert sum(s.lost for s in stats) == 1  # the deleted one counted once
    assert r.hget(lost_key(namespace, "billing"), stream) == b"1"
    assert r.xpending(stream, "billing")["pending"] == 1 and kept


def test_a_claimed_replay_of_another_group_is_acked_not_run(
    real_redis: DevServer, namespace: str
) -> None:
    r = redis.Redis.from_url(real_redis.url)
    stream = stream_key(namespace, "t.replayed")
    r.xgroup_create(stream, "billing", "$", mkstream=True)
    theirs = r.xadd(stream, {"d": b"x", "g": b"mail", "r": b"m.send"})
    ours = r.xadd(stream, {"d": b"y", "g": b"billing", "s": b'["a.first"]'})
    r.xreadgroup("billing", "dead", {stream: ">"})
    retries = _retries(real_redis.url, namespace, "me")
    claimed = r.xclaim(stream, "billing", "me", 0, [theirs, ours])
    retries.take_over(stream.encode(), [(e, _flat(f)) for e, f in claimed], dead_holder=True)
    due = retries.pop_due(float("inf"))
    assert due is not None and due.entry == ours and due.skip == frozenset({"a.first"})
    assert retries.pop_due(float("inf")) is None
    assert [p["message_id"] for p in r.xpending_range(stream, "billing", "-", "+", 10)] == [ours]


def _flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [part for pair in fields.items() for part in pair]


def test_replaying_a_worker_lost_letter_skips_the_receivers_that_had_succeeded(
    real_redis: DevServer, namespace: str
) -> None:
    from sigbroker.durable import dlq_key
    from sigbroker.transport import redis_streams_admin

    r = redis.Redis.from_url(real_redis.url)
    stream = stream_key(namespace, "t.lost_worker")
    letter = r.xadd(
        dlq_key(namespace, "billing"),
        {"d": b"envelope", "signal": "t.lost_worker", "stream": stream, "entry": "1-0",
         "receiver": "", "error": "WorkerLost: ...", "traceback": "", "deliveries": "3",
         "worker": "w", "failed_at": "1.0", "done": '["a.first"]'},
    )  # fmt: skip
    from sigbroker.transport.redis_retries import read_entry

    script = r.register_script(redis_streams_admin._REPLAY_LUA)
    assert script(keys=[dlq_key(namespace, "billing"), stream], args=[letter, "billing"])
    ((_, fields),) = r.xrange(stream)
    assert read_entry(_flat(fields)) == (b"envelope", "billing", None, frozenset({"a.first"}))


def test_a_stop_in_the_middle_of_a_read_hands_back_every_stream_s_rest(
    loop: EventLoopThread, namespace: str
) -> None:
    from sigbroker.transport.redis_endpoint import Endpoint
    from sigbroker.transport.redis_streams import StreamConsumer

    first, second = Signal(name="t.first", durable=True), Signal(name="t.second", durable=True)
    codec = Codec()
    dispatcher = Dispatcher(codec, Stats(), loop)
    routes = {
        "s:first": dispatcher.durable_route(first, "g"),
        "s:second": dispatcher.durable_route(second, "g"),
    }
    consumer = StreamConsumer(
        Endpoint("redis://127.0.0.1:1/0"),  # never reached: nothing here talks to Redis
        routes,
        options=ConsumerOptions("g"),
        consumer="me",
        namespace=namespace,
        alive_key=str,
        stats=Stats(),
        use_hiredis=False,
    )
    ran: list[int] = []

    def stop_after_this(n: int, **kwargs: Any) -> None:
        ran.append(n)
        consumer.drain()

    first.connect(stop_after_this, weak=False)
    second.connect(stop_after_this, weak=False)
    handed_back: list[tuple[bytes, bytes]] = []
    consumer._retries.hand_back = handed_back.extend  # type: ignore[method-assign]

    def entry(signal: Signal, n: int) -> tuple[bytes, list[bytes]]:
        return b"%d-0" % n, [b"d", codec.pack(signal.name, None, {"n": n}, "k")]

    consumer._dispatch(
        [(b"s:first", [entry(first, 1), entry(first, 2)]), (b"s:second", [entry(second, 3)])]
    )
    assert ran == [1]
    assert handed_back == [(b"s:first", b"2-0"), (b"s:second", b"3-0")]
    assert list(consumer._acks[b"s:first"]) == [b"1-0"] and not consumer._acks[b"s:second"]


@pytest.mark.parametrize("skip", [b"not json", b'{"a": 1}', b"[1, 2]", b"\xff"])
def test_bad_input_a_hostile_replay_field_skips_nothing(skip: bytes) -> None:
    from sigbroker.transport.redis_retries import read_entry

    assert read_entry([b"d", b"x", b"g", b"\xffg", b"s", skip]) == (
        b"x",
        "\ufffdg",
        None,
        frozenset(),
    )
