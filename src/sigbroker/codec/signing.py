"""Message signatures: the secrets a codec is given, and HMAC-SHA256 with them.

The signature is a message's last entry, the 36 bytes :data:`TAG` + digest,
and signs every byte before it (the layout is in the docstring of
:mod:`sigbroker.codec`). The standard library's :mod:`hmac` computes it: each
secret is keyed once into an ``hmac.HMAC``, which every message copies, so the
key is not processed again per message. The first secret signs; a message is
accepted under any of them (key rotation), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from ..errors import ConfigurationError, InvalidMessage

#: What a codec accepts as its secrets: one, or several for key rotation (the first signs).
Secrets = bytes | str | Sequence[bytes | str] | None

#: The signature entry before its digest: the key "h", then a bin8 header for 32 bytes.
TAG: Final = b"\xa1h\xc4\x20"
#: The bytes that a signature adds to a message.
SIGNATURE_BYTES: Final = len(TAG) + 32


def secret_keys(secrets: Secrets) -> tuple[bytes, ...]:
    """The secrets as keys, in order; raise :class:`ConfigurationError` for an empty one."""
    if secrets is None:
        return ()
    items = [secrets] if isinstance(secrets, str | bytes | bytearray) else list(secrets)
    keys = []
    for item in items:
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes | bytearray) or not item:
            raise ConfigurationError("a secret must be a non-empty string or bytes")
        keys.append(bytes(item))
    return tuple(keys)


def keyed(secrets: Secrets) -> tuple[hmac.HMAC, ...]:
    """An HMAC-SHA256 keyed with each secret, in order, for :func:`sign` and :func:`verify`."""
    return tuple(hmac.new(key, digestmod=hashlib.sha256) for key in secret_keys(secrets))


def _digest(key: hmac.HMAC, message: bytes) -> bytes:
    mac = key.copy()  # the keyed state, without hashing the key's pads again
    mac.update(message)
    return mac.digest()


def sign(key: hmac.HMAC, message: bytes) -> bytes:
    """``message`` with its signature entry appended."""
    return b"".join((message, TAG, _digest(key, message)))


def verify(keys: Sequence[hmac.HMAC], data: bytes) -> None:
    """Raise :class:`InvalidMessage` unless ``data`` ends with a signature by one of ``keys``."""
    end = len(data) - SIGNATURE_BYTES  # where the signed bytes end
    if end <= 0 or not data.startswith(TAG, end):
        raise InvalidMessage(
            "message is not signed, and this codec has a secret", reason="signature"
        )
    signed = data[:end]  # a copy, yet cheaper than a memoryview of a short message
    signature = data[-32:]
    for key in keys:
        if hmac.compare_digest(_digest(key, signed), signature):
            return
    raise InvalidMessage("bad signature", reason="signature")
