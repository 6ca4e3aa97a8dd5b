"""FastStream's Redis Streams subscriber on figure 10's drain, for context.

``python -m benchmarks.faststream_consumer URL GROUP`` runs a FastStream app
whose one subscriber reads :data:`STREAM` in consumer group ``GROUP``
(``StreamSub(..., group=GROUP, consumer=...)``, FastStream's defaults
otherwise: it acknowledges each message after its handler returned). The
handler does the raw loop's work: ``msgpack.unpackb`` of the entry's data,
the datetime and the Decimal turned back, and a count. FastStream reads the
message from the entry's ``__data__`` field, so that is where the feeder puts
it. It imports no sigbroker code.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from decimal import Decimal

import msgpack
from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub

from benchmarks.report import Reporter

#: As benchmarks.durable_workload.FASTSTREAM_STREAM (not imported: it would load sigbroker).
STREAM = "faststream:stream:payload"


def app(url: str, group: str) -> FastStream:
    """The FastStream application: a broker with one stream subscriber."""
    reporter = Reporter.from_environment("faststream")
    broker = RedisBroker(url)

    @broker.subscriber(stream=StreamSub(STREAM, group=group, consumer=f"fs-{os.getpid()}"))
    async def on_payload(body: bytes) -> None:
        message = msgpack.unpackb(body)
        message["placed_at"] = datetime.fromisoformat(message["placed_at"])
        message["total"] = Decimal(message["total"])
        reporter.count()

    return FastStream(broker)


if __name__ == "__main__":
    asyncio.run(app(sys.argv[1], sys.argv[2]).run())
