"""The exceptions sigbroker raises.

Every exception derives from :class:`SigbrokerError`, so ``except SigbrokerError``
catches anything the library raises on purpose::

    SigbrokerError
     +-- ConfigurationError      a setting, URL or signal name that can not work
     +-- PayloadError            a send refused before anything was published
     +-- InvalidMessage          a message from the wire that the decoder rejected
     +-- BrokerUnavailable       Redis could not be reached within the bound
          +-- DeliveryUnknown    the command was written, no reply came: maybe delivered
          +-- BatchRefused       Redis refused some messages of a batch and ran the others

Errors from redis-py never leave ``sigbroker.transport``: they are
re-raised there as :class:`BrokerUnavailable`, chained with ``from`` so that
the original cause stays in the traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BatchRefused",
    "BrokerUnavailable",
    "ConfigurationError",
    "DeliveryUnknown",
    "InvalidMessage",
    "PayloadError",
    "SigbrokerError",
]


class SigbrokerError(Exception):
    """The root of every exception that sigbroker raises on purpose."""


class ConfigurationError(SigbrokerError):
    """A setting that can not work: a malformed URL, a signal without a name, a bad limit."""


class PayloadError(SigbrokerError, ValueError):
    """A send was refused at the sender: nothing was published.

    Raised for an argument that can not be encoded (the message names the
    argument and its type), an argument that ``providing_args`` does not
    declare, a declared argument that is missing, or a message over the size
    limit.
    """


class InvalidMessage(SigbrokerError):
    """A message read from the wire was rejected by the decoder.

    Garbage bytes, truncated msgpack, an unknown format version, a bad or
    missing signature, an oversize message or one that breaks the nesting and
    length limits all raise this, and only this. ``reason`` is the short
    name a worker counts it under: ``"signature"`` for a missing or bad
    signature, ``"invalid"`` for everything else.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class BrokerUnavailable(SigbrokerError, ConnectionError):
    """Redis could not be reached, or stopped answering, within the configured bound."""


class DeliveryUnknown(BrokerUnavailable):
    """A send was written to Redis but no reply came: the message may have been delivered.

    Raised when the connection broke or timed out after some byte of the
    command had left the client. Redis may have run it, so it is never sent
    again (a retry could deliver it twice); the caller decides whether to
    resend. A ``except BrokerUnavailable`` still catches it. Every send of a
    group-commit pipeline or a batch that was written with it gets it too.
    """


class BatchRefused(BrokerUnavailable):
    """Redis refused some messages of a batch (error replies) and ran the others.

    Raised by ``Batch.flush`` (so on leaving ``with client.batch()``) when
    Redis answered every command but refused at least one, an ACL that
    forbids one channel, say. ``results`` has one item per message, in
    order: the receiver count of a message that was delivered, or the
    :class:`BrokerUnavailable` of one that was refused and not delivered.
    Resend only the refused ones: the others were published.
    """

    def __init__(self, message: str, results: Sequence[int | BrokerUnavailable]) -> None:
        super().__init__(message)
        self.results = list(results)
