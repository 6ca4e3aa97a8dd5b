"""The exceptions sigbroker raises, and the one it delivers.

Every exception that sigbroker raises derives from :class:`SigbrokerError`, so
``except SigbrokerError`` catches anything the library raises on purpose.
:class:`RemoteError` is apart: a value that sigbroker delivers, never raises::

    Exception
     +-- SigbrokerError
     |    +-- ConfigurationError      a setting, URL or signal name that can not work
     |    +-- PayloadError            a send refused before anything was published
     |    +-- InvalidMessage          a message from the wire that the decoder rejected
     |    +-- BrokerUnavailable       Redis could not be reached within the bound
     |         +-- DeliveryUnknown    the command was written, no reply came: maybe delivered
     |         +-- BatchRefused       Redis refused some messages of a batch and ran the others
     +-- RemoteError                  an exception sent in a signal's arguments, as it arrives:
                                      type name, args and message, never the original class

Errors from redis-py never leave ``sigbroker.transport``: they are
re-raised there as :class:`BrokerUnavailable`, chained with ``from`` so that
the original cause stays in the traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "BatchRefused",
    "BrokerUnavailable",
    "ConfigurationError",
    "DeliveryUnknown",
    "InvalidMessage",
    "PayloadError",
    "RemoteError",
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


class RemoteError(Exception):
    """An exception that a sender put in a signal's arguments, as a receiver gets it.

    Any exception in a payload (``task_failed.send(sender, exception=exc)``,
    or one inside a list or dict) travels as its type's qualified name, its
    args and its message, and arrives as a ``RemoteError``, wherever it sat.
    ``type_name`` is ``"module.QualName"`` of the original type
    (``"builtins.ValueError"``, ``"shop.errors.PaymentDeclined"``); ``args``
    keeps each original argument that the codec can encode and puts the
    ``repr()`` of any other, cut to a bound, in its place; ``message`` is
    ``str()`` of the original, cut to a bound.

    The original class is never rebuilt, imported or looked up: a receiver
    compares ``type_name`` with a string. The traceback, ``__cause__`` and
    ``__context__`` and other attributes do not travel (pass a formatted
    traceback as an argument of its own, as viewflow's ``task_failed`` does).
    A ``RemoteError`` sent again travels as itself, so a worker can forward
    it. Two are equal when their type name, args and message are. ``str()``
    reads like the original's traceback line, ``"ValueError: bad amount"``.
    """

    type_name: str
    message: str

    def __init__(self, type_name: str, args: Iterable[Any] = (), message: str = "") -> None:
        if not isinstance(type_name, str) or not type_name or not isinstance(message, str):
            raise TypeError("RemoteError needs a type_name (a str, not empty) and a str message")
        super().__init__(*args)  # self.args: the original args
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        name = self.type_name.rpartition(".")[2]
        return f"{name}: {self.message}" if self.message else name

    def __repr__(self) -> str:
        return f"RemoteError({self.type_name!r}, {self.args!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteError):
            return NotImplemented
        return (self.type_name, self.args, self.message) == (
            other.type_name,
            other.args,
            other.message,
        )

    def __hash__(self) -> int:
        # args may hold lists: hash what is always hashable, as equal values must agree.
        return hash((self.type_name, self.message))

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException's would call RemoteError(*args): copy and pickle need the fields.
        return (RemoteError, (self.type_name, self.args, self.message), self.__dict__)
