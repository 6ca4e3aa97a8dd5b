"""What figure 10 sends: durable signals, their streams, and the raw streams beside them.

Same payload as every other figure (:mod:`benchmarks.workload`). The sigbroker
side sends it with ``Signal(durable=True)``, which appends the envelope to the
stream ``{namespace}:stream:{signal name}``; the raw side appends the payload
packed the raw way (:func:`benchmarks.workload.raw_message`) as field ``d`` of
an entry of its own streams, with the same approximate ``MAXLEN``. Import-light
(sigbroker's Signal only): the sigbroker worker of figure 10 imports it.
"""

from __future__ import annotations

from sigbroker import Signal

#: Namespace of the durable worker of figure 10 (its own streams).
DURABLE_NAMESPACE = "bench-durable"
#: Consumer group of every consumer of figure 10 (sigbroker worker, raw loop, FastStream).
GROUP = "bench"
#: Approximate MAXLEN of every stream (sigbroker's default, ``sigbroker.durable.DEFAULT_MAXLEN``).
MAXLEN = 100_000
#: The field of a stream entry that holds the message (DESIGN section 6).
FIELD = "d"

#: The raw redis-py streams, mirroring the sigbroker ones.
RAW_PAYLOAD_STREAM = "raw:stream:payload"
RAW_LATENCY_STREAM = "raw:stream:latency"
#: The raw send-cost stream (nobody reads it, as nobody reads the sigbroker one).
RAW_SEND_STREAM = "raw-send:stream:payload"
#: FastStream's stream (FastStream reads the message from the entry's ``__data__`` field).
FASTSTREAM_STREAM = "faststream:stream:payload"
FASTSTREAM_FIELD = "__data__"

#: The durable signal of the cost and drain rows (its receiver only counts).
durable_payload_signal = Signal(name="benchmarks.durable_payload", durable=True)
#: The durable signal of the latency rows (its receiver acknowledges each message).
durable_latency_signal = Signal(name="benchmarks.durable_latency", durable=True)


def stream(signal: Signal, namespace: str) -> str:
    """The stream of a durable signal (DESIGN section 6: ``{namespace}:stream:{name}``)."""
    return f"{namespace}:stream:{signal.name}"
