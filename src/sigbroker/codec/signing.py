"""Message signatures: the secrets a codec is given, and HMAC-SHA256 with them.

Part of :mod:`sigbroker.codec`, whose docstring says what is signed and where
the signature goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..errors import ConfigurationError

#: What a codec accepts as its secrets: one, or several for key rotation (the first signs).
Secrets = bytes | str | Sequence[bytes | str] | None


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


class HmacSha256:
    """HMAC-SHA256 (RFC 2104) with the key's two pads hashed once instead of per message."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))

    def digest(self, message: bytes | memoryview) -> bytes:
        """The 32-byte HMAC of ``message``."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
