"""The raw redis-py consumer group loop that the durable worker is measured against.

``python -m benchmarks.raw_stream_consumer URL GROUP`` creates ``GROUP`` on the
raw payload and latency streams (at their end, as a new sigbroker group is),
then loops: ``XREADGROUP COUNT 100`` on both streams, ``msgpack.unpackb`` of
each entry's ``d`` field, the datetime and the Decimal turned back into
``datetime`` and ``Decimal`` (the raw publisher sent them as strings), a
function call per message (one that counts, or one that acknowledges, as the
sigbroker receivers do), and one ``XACK`` per stream per batch. It imports no
sigbroker code.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from decimal import Decimal

import msgpack
import redis

from benchmarks.report import Reporter, stop_on_sigterm

#: Streams, as in benchmarks.durable_workload (not imported: it would load sigbroker).
PAYLOAD_STREAM = b"raw:stream:payload"
LATENCY_STREAM = b"raw:stream:latency"
#: Entries read per stream per XREADGROUP.
BATCH = 100
#: Longest block of one read before the loop checks its stop flag (ms).
BLOCK_MS = 1000


def create_group(client: redis.Redis, stream: bytes, group: str) -> None:
    """``XGROUP CREATE stream group $ MKSTREAM``; a group that exists already is fine."""
    try:
        client.xgroup_create(stream, group, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def main(url: str, group: str) -> None:
    """Consume until SIGTERM."""
    stopped = stop_on_sigterm()
    handlers = Reporter.from_environment("raw-stream").handlers(PAYLOAD_STREAM, LATENCY_STREAM)
    client = redis.Redis.from_url(url)
    for stream in handlers:
        create_group(client, stream, group)
    consumer = f"raw-{os.getpid()}"
    wanted = {stream: ">" for stream in handlers}
    unpackb, fromisoformat = msgpack.unpackb, datetime.fromisoformat
    while not stopped:
        for stream, entries in client.xreadgroup(group, consumer, wanted, BATCH, BLOCK_MS) or ():
            handler = handlers[stream]
            for _, fields in entries:
                message = unpackb(fields[b"d"])
                message["placed_at"] = fromisoformat(message["placed_at"])
                message["total"] = Decimal(message["total"])
                handler(message)
            client.xack(stream, group, *[entry_id for entry_id, _ in entries])
    client.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
