"""Receivers write what they got to the file named by $SIGBROKER_TEST_OUT.

Each record is one frame: 4-byte big-endian length, then a message encoded
with our own codec, so every argument type crosses back to the test intact.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Any

from sigbroker.codec import Codec

_codec = Codec()
_lock = threading.Lock()


def record(receiver: str, sender: object, **fields: Any) -> None:
    """Append one record for ``receiver`` to the output file.

    ``kwargs`` is recorded without the ``signal`` that every receiver gets.
    """
    if "kwargs" in fields:
        fields["kwargs"] = {k: v for k, v in fields["kwargs"].items() if k != "signal"}
    sender_is_class = isinstance(sender, type)
    sender_ref = f"{sender.__module__}.{sender.__qualname__}" if sender_is_class else sender
    data = _codec.pack(
        "record",
        None,
        {"receiver": receiver, "sender": sender_ref, "sender_is_class": sender_is_class, **fields},
    )
    frame = struct.pack(">I", len(data)) + data
    with _lock, open(os.environ["SIGBROKER_TEST_OUT"], "ab") as out:
        out.write(frame)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read every complete record written so far."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return []
    records, offset = [], 0
    while offset + 4 <= len(blob):
        (size,) = struct.unpack_from(">I", blob, offset)
        if offset + 4 + size > len(blob):
            break
        records.append(_codec.decode(blob[offset + 4 : offset + 4 + size]).kwargs)
        offset += 4 + size
    return records
