"""The raw redis-py subscriber the worker is measured against (run as a subprocess).

``python -m benchmarks.raw_subscriber URL`` subscribes to the raw payload and
latency channels with redis-py's ``PubSub``, unpacks each message with msgpack
and hands it to a no-op handler that counts it, or to one that acknowledges it:
the same receivers and report path as the sigbroker worker. It imports no
sigbroker code, so its memory is redis-py's and msgpack's alone.
"""

from __future__ import annotations

import sys

import msgpack
import redis

from benchmarks.report import Reporter, stop_on_sigterm

#: Channels, as in benchmarks.workload (not imported: it would load sigbroker).
PAYLOAD_CHANNEL = b"raw:payload"
LATENCY_CHANNEL = b"raw:latency"
#: Longest wait for a message before the loop checks its stop flag.
READ_TIMEOUT_S = 0.25


def main(url: str) -> None:
    """Subscribe and dispatch until SIGTERM."""
    stopped = stop_on_sigterm()
    handlers = Reporter.from_environment("raw").handlers(PAYLOAD_CHANNEL, LATENCY_CHANNEL)
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(*handlers)
    unpackb = msgpack.unpackb
    while not stopped:
        message = pubsub.get_message(timeout=READ_TIMEOUT_S)
        if message is not None and message["type"] == "message":
            handlers[message["channel"]](unpackb(message["data"]))
    pubsub.close()
    client.close()


if __name__ == "__main__":
    main(sys.argv[1])
