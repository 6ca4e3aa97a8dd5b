"""Figure 7: the codec alone, against msgpack and json on the raw dict.

sigbroker's :class:`~sigbroker.codec.Codec` builds the whole envelope (id,
send time, origin, signal and sender names, typed arguments, optionally an
HMAC) and decodes it back with its limits and type checks. The raw sides pack
the payload as a hand-written publisher would (datetime and Decimal as
strings) and unpack it without turning the strings back into types, so they
do strictly less work.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgpack

from benchmarks.harness import Row, alternate, seconds_per_call
from benchmarks.workload import ORDER_REFERENCE, payload, payload_signal, raw_dict, raw_message
from sigbroker import codec as wire
from sigbroker.codec import Codec


def _packer(codec: Codec) -> Callable[[dict[str, Any]], bytes]:
    # ``pack`` is the send path's fast encoder; fall back to the general
    # ``encode`` should the fast path be renamed while the internals change.
    name = payload_signal.name
    pack = getattr(codec, "pack", None)
    if pack is not None:
        return lambda kwargs: bytes(pack(name, ORDER_REFERENCE, kwargs))
    return lambda kwargs: codec.encode(wire.new_envelope(name, ORDER_REFERENCE, kwargs))


def codec_rows(*, rounds: int, calls: int) -> list[Row]:
    """Figure 7: encode + decode, and each half, per message."""
    kwargs = payload()
    plain, signed = Codec(), Codec(b"benchmark-secret")
    pack, pack_signed = _packer(plain), _packer(signed)
    message, raw = pack(kwargs), raw_message(kwargs)
    sides: dict[str, Callable[[], float]] = {
        "round trip": lambda: seconds_per_call(lambda: plain.decode(pack(kwargs)), calls),
        "signed round trip": lambda: seconds_per_call(
            lambda: signed.decode(pack_signed(kwargs)), calls
        ),
        "msgpack round trip": lambda: seconds_per_call(
            lambda: msgpack.unpackb(raw_message(kwargs)), calls
        ),
        "json round trip": lambda: seconds_per_call(
            lambda: json.loads(json.dumps(raw_dict(kwargs))), calls
        ),
        "encode": lambda: seconds_per_call(lambda: pack(kwargs), calls),
        "msgpack encode": lambda: seconds_per_call(lambda: raw_message(kwargs), calls),
        "decode": lambda: seconds_per_call(lambda: plain.decode(message), calls),
        "msgpack decode": lambda: seconds_per_call(lambda: msgpack.unpackb(raw), calls),
    }
    r = alternate(sides, rounds)
    fig = "7. codec"
    return [
        Row(
            fig,
            "encode + decode",
            "us",
            r["round trip"],
            r["msgpack round trip"],
            "msgpack packb + unpackb",
        ),
        Row(
            fig,
            "encode + decode",
            "us",
            r["round trip"],
            r["json round trip"],
            "json dumps + loads",
        ),
        Row(
            fig,
            "encode + decode, signed",
            "us",
            r["signed round trip"],
            r["msgpack round trip"],
            "msgpack packb + unpackb",
        ),
        Row(fig, "encode (Codec.pack)", "us", r["encode"], r["msgpack encode"], "msgpack packb"),
        Row(
            fig, "decode (Codec.decode)", "us", r["decode"], r["msgpack decode"], "msgpack unpackb"
        ),
    ]
