"""The envelope of a signal on the wire and its msgpack encoding.

A :class:`Codec` turns an :class:`Envelope` (signal name, sender reference,
keyword arguments, id, send time, origin, sequence number) into one msgpack
message and back.
It signs messages with HMAC-SHA256 when given a secret, refuses at the sender
what a receiver could not decode (:class:`~sigbroker.errors.PayloadError`),
and rejects anything wrong that arrives from the wire with
:class:`~sigbroker.errors.InvalidMessage`, in bounded time and memory. It
knows nothing about Redis or sockets.

Wire format, version 2
----------------------
A message is one msgpack map (``fixmap``) with one-letter string keys::

    "v"  int        format version, 2
    "i"  str        message id (this encoder: 32 lowercase hex digits)
    "s"  str        signal name, not empty
    "r"  str | nil  sender reference
    "t"  float64    send time, seconds since the Unix epoch (a decoder also takes an int)
    "o"  str        origin: the sending process, "host:pid:token" (token: 8 random hex
                    digits, so that a pid reused after a restart is another origin)
    "n"  uint64     sequence number: 1, 2, 3... per origin and channel (this encoder
                    writes a uint64, 0xcf); 0 means the sender keeps no sequence
    "k"  bin        the keyword arguments: a msgpack map with str keys, packed on its own
    "h"  bin (32)   HMAC-SHA256 of the message, present when the sender has a secret

Version 1 is the same map without ``"n"`` (and with ``"v"`` 1); decoders
still read it, as sequence 0, so that workers can be upgraded before senders.
The sequence lets a worker count exactly the messages of an origin that it
never received (see :mod:`sigbroker.dispatch`).

The encoder writes the entries in this order. The signature is the last entry,
written as the 36 bytes ``a1 68 c4 20`` + digest, and signs every byte before
it: ``HMAC-SHA256(secret, message[:-36])``. A decoder with secrets checks it
before it parses anything, and accepts it under any of its secrets (key
rotation: the first secret signs). A decoder without secret accepts signed
and unsigned messages alike and checks no signature. Strings, keys and the
name fields are at most ``Limits.max_name_bytes`` of UTF-8; unknown keys,
missing keys and wrong types are rejected. Later versions keep the map and
its ``"v"`` key, so that any version can be told apart.

Values inside ``"k"``: nil, bool, int (-2**63 .. 2**64-1), float, str, bin
(bytes; a bytearray also goes out as bin), array (list) and map (dict, any
key type) are plain msgpack. Everything else is an ext type whose code and
big-endian payload are::

     1  int beyond 64 bits   two's-complement signed integer, minimal length
     2  tuple                msgpack array of the items
     3  set                  msgpack array of the items
     4  frozenset            msgpack array of the items
     5  datetime             the wall clock: >H year, B month, B day, B hour, B minute,
                             B second, >I microsecond; B flags (1: aware, 2: fold); and
                             when aware, >q the UTC offset in microseconds (12 or 20 bytes)
     6  date                 >i days since 1970-01-01
     7  time                 B hour, B minute, B second, >I microsecond, B flags, and the
                             >q offset when aware, as in 5 (8 or 16 bytes)
     8  timedelta            >i days, >i seconds (0..86399), >i microseconds (0..999999)
     9  Decimal              ASCII ``str(value)``: "1.10", "-0", "NaN", "sNaN", "-Infinity"
    10  UUID                 the 16 bytes
    11  registered type      msgpack array [name: str, encoded value]
    12  exception            msgpack array [type name: str, args: array, message: str]

Registered types (:func:`register_type`) travel under their name and are
found again only in the local registry: no name from the wire is ever
imported or looked up with ``getattr``. A type registered with
``subclasses=True`` lends its name to its subclasses: the Django app sends
every model under ``"django.model"`` (its payloads' layouts are in
:mod:`sigbroker.contrib.django.payloads`). An aware datetime or time comes back
with a fixed-offset :class:`~datetime.timezone` and the same offset; a time
whose tzinfo gives no offset (a ``ZoneInfo`` on a bare time) goes out naive.

Any exception (an instance of a ``BaseException`` subclass that is not
registered) travels as code 12 and arrives as a
:class:`~sigbroker.errors.RemoteError`, never as its own class: the type name
is ``"module.QualName"`` (1 to ``MAX_REMOTE_TYPE_CHARS`` characters), the
message ``str(exc)`` cut to ``MAX_REMOTE_MESSAGE_CHARS``, and each of
``exc.args`` goes as itself when the sender can encode it within the limits,
else as its ``repr()`` cut to ``MAX_REMOTE_REPR_CHARS`` (the constants are in
:mod:`sigbroker.codec.limits`). A ``RemoteError`` travels as the exception it
stands for, so a forwarded one arrives equal. The traceback, ``__cause__``,
``__context__``, notes and other attributes are not carried.

Exact types are what count. Unregistered subclasses of the supported types go
out as their base type (a ``SafeString`` as str, an ``OrderedDict`` as dict,
a ``namedtuple`` as tuple, freezegun's datetime as datetime), except Enum
members, which must be registered: an ``IntEnum`` never turns into an int
silently.

Limits
------
Depth counts nested containers (list, tuple, dict, set, frozenset),
registered values (one level around their encoded form) and exceptions (one
level around their args): an argument that is a scalar has depth 0, a list of
ints depth 1, ``ValueError("bad", [1])`` depth 2. An exception's array and its
args array count as values like any list. The sender refuses what breaks
a limit, so that a message that was sent is one that workers accept. The
decoder checks the size before any work, parses the envelope under tight
limits, and unpacks the arguments only after the signature was verified.
msgpack preallocates arrays from their headers, so arguments over
:data:`~sigbroker.codec.limits.PRESCAN_MIN_BYTES` are first walked by
msgpack's allocation-free ``skip()``: a header can then not claim more items
than the bytes that follow. Maps and sets whose keys share hash values (hash flooding) are
refused; str and bytes keys hash with a per-process random key and need no
check. So the decoder first unpacks the arguments with no state, taking maps
with str or bytes keys, scalars, and short tuples and sets of them; anything
else makes it start over on its careful path, which gives the same values
and errors.

The parts are modules of this package, one concept each: ``types`` (the
extension types), ``registry`` (users' types), ``limits`` (limits and the
guards against hostile input), ``pack`` and ``unpack`` (the arguments'
bytes), ``fields`` (the envelope map), ``process`` (this process's origin,
message ids and sequence numbers) and ``signing`` (secrets and HMAC). This
module puts the envelope around them and is the one to import.
"""

from __future__ import annotations

import binascii
import itertools
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import time as _now
from typing import Any, Final

import msgpack

from ..errors import ConfigurationError, InvalidMessage, PayloadError
from . import process
from .fields import (
    BIN8,
    FORMAT_VERSION,
    MAX_SEQUENCE,
    SEQUENCE_TAG,
    bin_header,
    name_entries,
    packed_name,
    read_fields,
)
from .limits import DEFAULT_LIMITS, Limits, describe, short
from .pack import pack_arguments, pack_kwargs
from .process import next_sequence, origin
from .registry import register_type
from .signing import SIGNATURE_BYTES, Secrets, keyed, sign, verify
from .unpack import unpack_arguments

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "Codec",
    "Envelope",
    "Limits",
    "decode",
    "encode",
    "new_envelope",
    "next_sequence",
    "origin",
    "register_type",
]

#: Signal name and sender pairs whose packed bytes a codec keeps.
NAME_CACHE_ENTRIES: Final = 1024

_F64: Final = struct.Struct(">d")
_U64: Final = struct.Struct(">Q")
_hexlify: Final = binascii.b2a_hex
_unpackb: Final = msgpack.unpackb
#: The arguments' key and bin8 header for each size that fits in a bin8.
_ARGS_BIN8: Final = [b"\xa1k" + header for header in BIN8]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One signal on the wire: what was sent, by whom, when and from where.

    ``sender`` is already a reference string (the signal module makes it), and
    ``kwargs`` are the keyword arguments of the send. ``id`` is unique per
    message, ``sent_at`` is ``time.time()`` at the sender, ``origin`` names
    the sending process (``"host:pid:token"``) and ``seq`` numbers the
    messages of that origin on one channel from 1 (0: no sequence, as in
    messages of format version 1).
    """

    signal: str
    sender: str | None
    kwargs: dict[str, Any] = field(hash=False)
    id: str
    sent_at: float
    origin: str
    seq: int = 0
    version: int = FORMAT_VERSION


#: An envelope's fields as :meth:`Codec.read` returns them:
#: ``(signal, sender, kwargs, id, sent_at, origin, seq)``.
Fields = tuple[str, str | None, dict[str, Any], str, float, str, int]


def new_envelope(
    signal: str, sender: str | None, kwargs: Mapping[str, Any], *, channel: str | None = None
) -> Envelope:
    """Return an envelope for a send happening now, with a fresh id.

    With ``channel`` (the key a :class:`~sigbroker.client.Client` counts
    under), it takes that channel's next sequence number; without, sequence
    0, which no worker tracks, so it can never collide with a client's.
    """
    seq = 0 if channel is None else next_sequence(channel)
    return Envelope(signal, sender, dict(kwargs), process.new_id(), _now(), origin(), seq)


# -- the codec ----------------------------------------------------------------


class Codec:
    """Encodes envelopes into messages and decodes messages back, with limits.

    With ``secrets`` (one, or a list for key rotation) every message is signed
    with the first and verified against any of them; a codec with secrets
    rejects unsigned messages. A codec without secret sends unsigned messages
    and accepts both kinds, checking no signature. Thread-safe: one codec can
    serve every thread of a process.
    """

    def __init__(self, secrets: Secrets = None, limits: Limits = DEFAULT_LIMITS) -> None:
        if not isinstance(limits, Limits):
            raise ConfigurationError(f"limits must be a Limits, not {type(limits).__qualname__}")
        self.limits = limits
        self._keys = keyed(secrets)
        self._head = (b"\x89" if self._keys else b"\x88") + b"\xa1v" + bytes([FORMAT_VERSION])
        self._max_bytes = limits.max_message_bytes
        self._max_name_bytes = limits.max_name_bytes
        self._names: dict[tuple[str, str | None], bytes] = {}

    def __repr__(self) -> str:
        return f"<Codec signed={self.signed} {self.limits}>"

    @property
    def signed(self) -> bool:
        """Whether this codec signs its messages (and insists on signed ones)."""
        return bool(self._keys)

    # -- sending --------------------------------------------------------------

    def pack(
        self,
        signal: str,
        sender: str | None,
        kwargs: Mapping[str, Any],
        channel: str | None = None,
    ) -> bytes:
        """Encode a send happening now: the fast path of :meth:`encode`.

        Makes the id, send time, origin and sequence number (counted per
        ``channel``, else per signal name) itself and returns the same layout
        as ``encode(new_envelope(signal, sender, kwargs, channel=channel or signal))``.
        Raises :class:`PayloadError`, naming the argument, for anything that
        can not be sent; a refused payload takes no sequence number.
        """
        body = pack_kwargs(kwargs, self.limits)
        try:
            names = self._names[signal, sender]
        except (KeyError, TypeError):  # TypeError: an unhashable sender, refused below
            names = self._name_entries(signal, sender)
        counter = process.SEQUENCES.get(channel or signal)
        if counter is None:  # next_sequence(), inlined
            counter = process.SEQUENCES.setdefault(channel or signal, itertools.count(1))
        size = len(body)
        message = b"".join(
            (
                self._head,
                process.ID_HEAD,
                _hexlify(_U64.pack(next(process.COUNTER))),  # the counter, 16 hex digits
                names,
                _F64.pack(_now()),
                process.ORIGIN_ENTRY,
                _U64.pack(next(counter)),
                _ARGS_BIN8[size] if size < 0x100 else b"\xa1k" + bin_header(size),
                body,
            )
        )
        if self._keys or len(message) > self._max_bytes:
            return self._finish(message)
        return message

    def encode(self, envelope: Envelope) -> bytes:
        """Encode ``envelope``; raise :class:`PayloadError` for anything that can not be sent."""
        if not isinstance(envelope, Envelope):
            raise PayloadError(f"expected an Envelope, not {type(envelope).__qualname__!r}")
        if envelope.version != FORMAT_VERSION:
            raise PayloadError(f"this codec writes format version {FORMAT_VERSION} only")
        sent_at = envelope.sent_at
        if type(sent_at) not in (float, int) or not math.isfinite(sent_at):
            raise PayloadError(f"sent_at must be a finite float, not {short(sent_at)}")
        seq = envelope.seq
        if type(seq) is not int or not 0 <= seq <= MAX_SEQUENCE:
            raise PayloadError(f"seq must be an int from 0 to 2**64-1, not {short(seq)}")
        max_bytes = self._max_name_bytes
        id_entry = b"\xa1i" + packed_name(envelope.id, "the message id", max_bytes, empty=False)
        origin_entry = b"\xa1o" + packed_name(envelope.origin, "the origin", max_bytes)
        body = pack_arguments(envelope.kwargs, self.limits)
        names = self._name_entries(envelope.signal, envelope.sender)
        message = b"".join(
            (
                self._head,
                id_entry,
                names,
                _F64.pack(sent_at),
                origin_entry,
                SEQUENCE_TAG,
                _U64.pack(seq),
                b"\xa1k",
                bin_header(len(body)),
                body,
            )
        )
        return self._finish(message)

    def _finish(self, message: bytes) -> bytes:
        size = len(message) + (SIGNATURE_BYTES if self._keys else 0)
        if size > self._max_bytes:
            raise PayloadError(f"message is {size} bytes, over the limit of {self._max_bytes}")
        if self._keys:
            return sign(self._keys[0], message)
        return message

    def _name_entries(self, signal: object, sender: object) -> bytes:
        entries = name_entries(signal, sender, self._max_name_bytes)
        if type(signal) is str and (sender is None or type(sender) is str):
            if len(self._names) >= NAME_CACHE_ENTRIES:
                self._names.clear()
            self._names[signal, sender] = entries
        return entries

    # -- receiving ------------------------------------------------------------

    def decode(self, data: bytes) -> Envelope:
        """Decode and check one message; raise :class:`InvalidMessage` and nothing else."""
        signal, sender, kwargs, message_id, sent_at, origin_, seq = self.read(data)
        # Only a message with sequence 0 can be of the previous version: ask its map.
        version = FORMAT_VERSION if seq else _unpackb(bytes(data), max_ext_len=0)["v"]
        return Envelope(signal, sender, kwargs, message_id, sent_at, origin_, seq, version)

    def read(self, data: bytes) -> Fields:
        """What :meth:`decode` returns, as a plain tuple in the fields' order.

        ``(signal, sender, kwargs, id, sent_at, origin, seq)``, the same
        checks and the same errors, without building the :class:`Envelope`:
        the worker's per-message path. ``seq`` is 0 for a message of format
        version 1.
        """
        try:
            if type(data) is not bytes:
                data = self._as_bytes(data)
            if len(data) > self._max_bytes:
                raise InvalidMessage(
                    f"message is {len(data)} bytes, over the limit of {self._max_bytes}"
                )
            if not data or data[0] & 0xF0 != 0x80:
                raise InvalidMessage("not a sigbroker message: expected a msgpack map")
            keys = self._keys
            if keys:
                verify(keys, data)
            # The envelope holds no array, no ext and no long string: msgpack
            # refuses them while parsing. (A bin can not be longer than the message.)
            fields = _unpackb(
                data,
                max_str_len=self._max_name_bytes,
                max_array_len=0,
                max_map_len=16,
                max_ext_len=0,
            )
            message_id, signal, sender, sent_at, origin_, seq, body = read_fields(fields)
            if keys and fields.get("h") != data[-32:]:
                raise InvalidMessage("the signature is not the last field")
            kwargs = unpack_arguments(body, self.limits)
            return signal, sender, kwargs, message_id, sent_at, origin_, seq
        except InvalidMessage:
            raise
        except Exception as exc:
            raise InvalidMessage(f"undecodable message ({describe(exc)})") from exc

    def _as_bytes(self, data: object) -> bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidMessage(f"expected bytes, not {type(data).__qualname__}")
        if memoryview(data).nbytes > self._max_bytes:
            raise InvalidMessage(f"message is over the limit of {self._max_bytes} bytes")
        return bytes(data)


_UNSIGNED: Final = Codec()


def encode(envelope: Envelope, *, secret: Secrets = None, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Encode ``envelope`` into a message, signed when ``secret`` is given."""
    codec = _UNSIGNED if secret is None and limits is DEFAULT_LIMITS else Codec(secret, limits)
    return codec.encode(envelope)


def decode(data: bytes, *, secrets: Secrets = None, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode a message; with ``secrets``, only a message signed with one of them."""
    codec = _UNSIGNED if secrets is None and limits is DEFAULT_LIMITS else Codec(secrets, limits)
    return codec.decode(data)
