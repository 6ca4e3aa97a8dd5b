"""The sending process: its origin, its message ids and its sequence numbers.

Every message names its origin, ``"host:pid:token"`` (the token is 8 random
hex digits, so that a pid reused after a restart is another origin), carries
an id unique to this process (16 random hex digits, then a 16-digit counter:
far cheaper than ``uuid4()``) and a sequence number per channel: 1, 2, 3...
A forked child is a new origin: all of it is made afresh in the child, whose
sequences start again from 1, so that a codec needs no ``getpid()`` per
message.

:data:`ID_HEAD` and :data:`ORIGIN_ENTRY` are this process's part of every
message, packed once (the layout is in the docstring of
:mod:`sigbroker.codec`). A fork rebinds them: read them from this module
(``process.ID_HEAD``), not through names imported from it.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator

import msgpack

from .fields import SEQUENCE_TAG

#: The counter at the end of every message id (``next()`` on it is atomic under the GIL).
COUNTER = itertools.count()
#: One counter per channel (or signal name), shared by every codec of the process.
SEQUENCES: dict[str, Iterator[int]] = {}

PID = 0
ORIGIN = ""
ID_PREFIX = ""
#: The id's key and str8 header for 32 characters, then the 16 random hex digits.
ID_HEAD = b""
#: The origin's key and packed value, then the key and uint64 marker of the sequence number.
ORIGIN_ENTRY = b""


def _init_process() -> None:
    # Runs at import and in every forked child, so that ids and origins never
    # repeat across processes.
    global PID, ORIGIN, ID_PREFIX, ID_HEAD, ORIGIN_ENTRY
    PID = os.getpid()
    ID_PREFIX = os.urandom(8).hex()
    ORIGIN = f"{socket.gethostname()}:{PID}:{ID_PREFIX[:8]}"
    ID_HEAD = b"\xa1i\xd9\x20" + ID_PREFIX.encode()
    ORIGIN_ENTRY = b"\xa1o" + msgpack.packb(ORIGIN) + SEQUENCE_TAG
    SEQUENCES.clear()


_init_process()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_init_process)


def origin() -> str:
    """Return this process's ``"hostname:pid:token"``, computed once per process."""
    if os.getpid() != PID:  # forked by something that skipped the at-fork hooks
        _init_process()
    return ORIGIN


def new_id() -> str:
    """A message id that no other message of any process has: 32 lowercase hex digits."""
    return f"{ID_PREFIX}{next(COUNTER):016x}"


def next_sequence(channel: str) -> int:
    """The next sequence number of this process on ``channel``: 1, 2, 3...

    Thread-safe (``next()`` on an ``itertools.count`` is atomic under the GIL).
    """
    counter = SEQUENCES.get(channel)
    if counter is None:
        counter = SEQUENCES.setdefault(channel, itertools.count(1))
    return next(counter)
