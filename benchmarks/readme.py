"""``benchmarks/README.md``: the method of each figure, the header and the latest table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

INTRO = """\
# Benchmarks

`make bench` (or `.venv/bin/python benchmarks/run.py`) measures sigbroker side by side
with raw redis-py on the same Redis in the same run, and Celery and FastStream for
context. It starts its own `redis-server` on a free loopback port (never the shared
6379), runs every figure in alternating rounds (sigbroker, baseline, sigbroker, baseline, ...; one
warm-up round of each is thrown away), prints the table below and rewrites this file
and `benchmarks/results.json` (every round's raw number; not committed). It takes
under 3 minutes on a 2-core machine; `--quick` checks the harness in under a minute
with rough numbers, `--no-celery` skips figure 6. `make bench` installs the `bench`
extra (Celery, FastStream); without Celery figure 6 says so and the rest runs, as
figure 9 does without Django and figure 10's FastStream rows without FastStream. `make profile`
samples a worker draining a backlog with py-spy and prints where its time goes
(`benchmarks/profile.py`; `python -m benchmarks.profile --durable` does the same for
the `--group` worker of figure 10).

How to read the table: each cell is the **median (min..max)** over the rounds. The
ratio is always **sigbroker / baseline**, computed per round (the two sides of a round
ran back to back) and summarised the same way. For costs (us, MB) lower is better,
so 0.90x means sigbroker is 10% cheaper; for throughputs (msg/s) higher is better,
so 1.50x means sigbroker drains 50% more. PASS/MISS compares the median with the
targets of issue 4 (figure 10: of issue 11).
"""

METHOD = """\
## Method

**Payload.** Every message carries 5 keyword arguments: an int, a str, a float, an
aware datetime and a Decimal, sent by a class (`sender=Order`). The raw side sends the
same values as a msgpack dict, datetime and Decimal turned into strings
(`isoformat()`, `str()`), and builds and packs that dict in every call, as sigbroker
encodes in every call. gc is paused during timed loops on both sides.

**1. Send cost.** `Signal.send` through the default client set up by
`sigbroker.configure()` against `redis.Redis.publish(channel, msgpack.packb(...))`,
{send_calls:,} calls per round, {rounds} rounds, on channels nobody subscribes to
(PUBLISH costs the same on the server; the figure is the client's own work and the
round trip). Variants: signed (`configure(secret=...)`; the raw side stays unsigned),
a signal with `providing_args` (checked at every send), and the same without hiredis:
a separate process where `import hiredis` fails (`sys.modules["hiredis"] = None`
before redis-py loads), for both sides. Each runs in a fresh process. The *CPU time*
rows are the sending thread's own CPU time (user + system, `time.thread_time()`) per
call, without the time it sleeps waiting for Redis: on a virtual machine the wake-ups
of a round trip vary with what else runs (and even shrink when the client does more
work between round trips), the CPU cost much less, so those rows tell more about the
code.

**2. Batch send.** `with client.batch() as b:` with 100 `b.send(...)` against a
redis-py `pipeline(transaction=False)` of 100 `publish` calls of packed dicts;
{batches} batches per round; messages per second.

**3. Worker throughput.** One consumer process, fed faster than it drains: it is
frozen with SIGSTOP, {drain_messages:,} messages are queued in Redis (the server's
pub/sub output buffer limit is lifted), and the clock runs from SIGCONT until the
receiver reports the {drain_messages:,}th message (`time.perf_counter()` is
`CLOCK_MONOTONIC` on Linux, the same clock in every process). sigbroker: `python -m
sigbroker worker -A benchmarks.receivers --concurrency 1`, whose receiver only counts.
Raw: `benchmarks/raw_subscriber.py`, a redis-py `PubSub.get_message(timeout=...)` loop
that `msgpack.unpackb`s each message and calls a handler that only counts. The
messages are 1,000 distinct ones, replayed by a feeder that writes pipelined PUBLISH
commands on a plain socket; the sigbroker ones are real messages made by
`Client.batch()` and captured from Redis. The `--concurrency 4` worker (a thread pool)
is shown for context.

**4. End-to-end latency.** One message at a time: send, wait for the receiver's
acknowledgement, send the next; {latency_per_round:,} messages per round,
{worker_rounds} rounds per side. The latency is from just before the send call
(encoding included) until the receiver runs in the worker, which takes
`time.perf_counter()` first and publishes it back (the same report path on both sides;
the acknowledgement only paces the sends). Each round's percentile is one measurement;
`results.json` also has the percentiles over all the messages of a side.

**5. Worker memory.** `VmRSS` from `/proc/<pid>/status` of the consumer processes of
figure 3: idle (after startup and subscription), and after {memory_total:,} messages
in all (the rounds of figure 3 included, the rest fed as fast as the feeder goes),
five readings each. Growth is after minus the idle median.

**6. Celery**, for context: Celery with its Redis broker on database 1 of the same
server, `celery -A benchmarks.celery_app worker --pool solo`, JSON serializer (kombu's
encodes datetime and Decimal), results ignored. Call cost: `apply_async` of the same
payload to a queue nobody consumes, against `Signal.send` to a channel nobody
subscribes to. Latency: `apply_async` until the task body starts (it acknowledges the
same way as the sigbroker receiver), {celery_per_round:,} tasks per round, against
sigbroker's send-to-receiver latency in alternating rounds.

**7. Codec alone.** `Codec.pack` (the fast encoder that `send` uses) + `Codec.decode`
of the payload, against `msgpack.packb` + `unpackb` and `json.dumps` + `loads` of the
raw dict. sigbroker does strictly more: the envelope (id, send time, origin, names),
typed values (the raw sides leave datetime and Decimal as strings), limits and checks.

**8. Threads.** 8 threads released together, each sending {per_thread:,} messages
through one shared `Client` (`client.send`), against 8 threads publishing through one
shared `redis.Redis` (one `ConnectionPool`); total messages per second from release
until the last thread ends. The single-thread rows time the same two clients one call
at a time.

**9. Django: a model instance against a dict of its fields.** In a fresh process,
Django set up with standalone settings (`settings.configure()`: an in-memory SQLite
database, `sigbroker.contrib.django` and `benchmarks.django_shop`, tables made by the
schema editor) and one saved `Order`: a foreign key, a str, a Decimal, an aware
datetime, a bool and an int besides its pk. sigbroker sends `order=instance`; the
baseline sends `order=` a dict of the very values the instance carries on the wire
(its concrete fields by `attname`, the foreign key as `customer_id`), written out and
built in every call as a sender would by hand; both through sigbroker, so the ratio is
what the model payload costs over plain values. `Signal.send` by the model class
({send_calls:,} calls per round, {rounds} rounds, on a channel nobody subscribes to),
`Codec.pack` and `Codec.decode` ({codec_calls:,} calls per round; on arrival the
instance is built by `Model.from_db`, no query, against a dict decoded).

**10. Durable signals (Redis Streams consumer groups).** The same payload on
`Signal(..., durable=True)`, whose send appends the envelope to the stream
`<namespace>:stream:<signal name>` (field `d`, approximate `MAXLEN` 100,000), against
raw redis-py streams. *Send cost*: `Signal.send` against `Redis.xadd(stream, fields,
maxlen=100_000, approximate=True)` whose field `d` is `msgpack.packb(...)` of the raw
dict, on streams no group reads,
in the sending process of figure 1 ({send_calls:,} calls per round, {rounds} rounds).
*Drain*: one consumer process whose consumer group `bench` exists (made at the
stream's end when it started) is frozen with SIGSTOP, a backlog of
{durable_backlog:,} entries is appended to its stream (pipelined `XADD` on a plain
socket), and the clock runs from SIGCONT until its receiver reports the
{durable_backlog:,}th message, as in figure 3; {worker_rounds} rounds per side. sigbroker:
`python -m sigbroker worker -A benchmarks.durable_receivers --group bench
--concurrency 1`, whose receiver only counts, fed real durable messages made by
`Client.batch()` and read back from a stream. Raw: `benchmarks/raw_stream_consumer.py`,
a redis-py loop of `XREADGROUP GROUP bench ... COUNT 100 BLOCK 1000` that
`msgpack.unpackb`s each entry, turns the datetime and the Decimal back into `datetime`
and `Decimal`, calls a function that counts, and sends one `XACK` per batch. The
*CPU time per message* rows are the consumer process's CPU time over the round (all
threads, user + system, read from its CPU-time clock) divided by the backlog.
*Latency*: durable send -> receiver against `XADD` -> the raw loop, measured as in
figure 4 ({latency_per_round:,} messages per round, {worker_rounds} rounds per side).
*FastStream*, for context: its Redis Streams subscriber (`StreamSub(stream,
group="bench", consumer=...)`, its defaults otherwise: one `XACK` per message after
the handler returned), whose handler does the raw loop's work, on the same drain
({faststream_rounds} round(s) against the sigbroker worker, no warm-up: it drains a few
thousand messages a second); FastStream reads an entry's `__data__` field, so its
entries carry the raw message there.
"""


def write_readme(
    path: Path,
    header: dict[str, str],
    table: str,
    score: tuple[int, int],
    plan: Mapping[str, int],
) -> None:
    """Write the README: intro, latest results (header and table), then the method.

    ``plan`` holds the sizes of the run (calls, rounds, messages), which the method quotes.
    """
    lines = [INTRO, "## Latest results", ""]
    lines += [f"- **{key}**: {value}" for key, value in header.items()]
    lines += ["", table, "", f"Targets met: {score[0]} of {score[1]}.", "", METHOD.format(**plan)]
    path.write_text("\n".join(lines))
