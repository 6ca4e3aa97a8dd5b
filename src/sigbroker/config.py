"""The process-wide default configuration, and the default client built from it.

``configure()`` sets it explicitly; otherwise it is read from the environment
the first time it is needed:

* ``SIGBROKER_URL``, else ``REDIS_URL``, else ``redis://localhost:6379/0``
* ``SIGBROKER_NAMESPACE`` (default ``sigbroker``)
* ``SIGBROKER_SECRET``: one secret, or several separated by commas; the first
  signs, all of them verify (key rotation)
* ``SIGBROKER_SECRET_FILE``: a file holding the secrets instead, one per line
  (the first signs); unlike the variable's value, it is not visible to other
  processes of the machine
* ``SIGBROKER_EAGER``: ``1``/``true``/``yes``/``on`` runs receivers in-process,
  exactly like ``django.dispatch``

This module keeps the slot of the default client but never imports the
client: whoever needs the default client says how to build one
(``default_client(Client)``), so ``signal.py`` can depend on this module and
still work with no Redis installed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_URL",
    "ClientFactory",
    "Settings",
    "configure",
    "default_client",
]

#: Where a client connects when neither configure() nor the environment says.
DEFAULT_URL = "redis://localhost:6379/0"
#: The first part of every channel name and heartbeat key.
DEFAULT_NAMESPACE = "sigbroker"

_TRUE = frozenset({"1", "true", "yes", "on"})

Secret = str | bytes
SecretSetting = Secret | Sequence[Secret] | None


class SupportsClose(Protocol):
    """All this module needs of a client: ``configure()`` closes the one it replaces."""

    def close(self) -> None:
        """Release the client's connections."""


_C = TypeVar("_C", bound=SupportsClose)
_C_co = TypeVar("_C_co", bound=SupportsClose, covariant=True)


class ClientFactory(Protocol[_C_co]):
    """Builds the default client from the settings: ``sigbroker.client.Client`` is one."""

    def __call__(self, url: str, *, namespace: str, secret: tuple[bytes, ...]) -> _C_co:
        """Return a new client for ``url`` and ``namespace``, signing with ``secret``."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved process-wide configuration."""

    url: str
    namespace: str
    secrets: tuple[bytes, ...]
    eager: bool


def normalize_secrets(secret: SecretSetting) -> tuple[bytes, ...]:
    """Turn one secret or a list of them into a tuple of bytes; the first one signs."""
    if secret is None:
        return ()
    items: Sequence[Secret] = [secret] if isinstance(secret, str | bytes) else secret
    out = tuple(s.encode() if isinstance(s, str) else bytes(s) for s in items)
    return tuple(s for s in out if s)


def read_secret_file(path: str | os.PathLike[str]) -> tuple[bytes, ...]:
    """The secrets in a file, one per line (the first signs); blank lines are skipped.

    Raises :class:`ConfigurationError` naming the file (never its content)
    when it can not be read or holds no secret.
    """
    try:
        with open(path, "rb") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the secret file {str(path)!r}: {exc.strerror}"
        ) from None
    secrets = tuple(line.strip() for line in lines if line.strip())
    if not secrets:
        raise ConfigurationError(f"the secret file {str(path)!r} holds no secret")
    return secrets


def from_environment() -> Settings:
    """Read the settings from the ``SIGBROKER_*`` environment variables."""
    env = os.environ
    raw_secret = env.get("SIGBROKER_SECRET", "")
    secret_file = env.get("SIGBROKER_SECRET_FILE", "")
    if raw_secret.strip() and secret_file:
        raise ConfigurationError("set SIGBROKER_SECRET or SIGBROKER_SECRET_FILE, not both")
    if secret_file:
        secrets = read_secret_file(secret_file)
    else:
        secrets = normalize_secrets([s.strip() for s in raw_secret.split(",")])
    return Settings(
        url=env.get("SIGBROKER_URL") or env.get("REDIS_URL") or DEFAULT_URL,
        namespace=env.get("SIGBROKER_NAMESPACE") or DEFAULT_NAMESPACE,
        secrets=secrets,
        eager=env.get("SIGBROKER_EAGER", "").strip().lower() in _TRUE,
    )


_lock = threading.Lock()
_settings: Settings | None = None
_client: SupportsClose | None = None


def configure(
    url: str | None = None,
    namespace: str | None = None,
    secret: SecretSetting = None,
    eager: bool | None = None,
) -> Settings:
    """Set the process-wide default that ``Signal.send`` uses.

    Arguments left as None keep the value from the environment. The previous
    default client, if any, is closed; the next send builds a new one.
    """
    global _settings, _client
    env = from_environment()
    new = Settings(
        url=url if url is not None else env.url,
        namespace=namespace if namespace is not None else env.namespace,
        secrets=normalize_secrets(secret) if secret is not None else env.secrets,
        eager=eager if eager is not None else env.eager,
    )
    with _lock:
        old, _settings, _client = _client, new, None
    if old is not None:
        old.close()
    return new


def settings() -> Settings:
    """Return the current settings, reading the environment on first use."""
    global _settings
    current = _settings
    if current is None:
        with _lock:
            if _settings is None:
                _settings = from_environment()
            current = _settings
    return current


def is_eager() -> bool:
    """True when sends run the local receivers instead of publishing."""
    current = _settings
    return (current or settings()).eager


def default_client(factory: ClientFactory[_C]) -> _C:
    """Return the client that ``Signal.send`` publishes through, building it on first use.

    The first call builds it with ``factory`` from the settings; later calls
    return that one (or the one :func:`swap_default_client` installed, which
    must be of the kind ``factory`` builds) until :func:`configure`.
    """
    global _client
    client = _client
    if client is None:
        current = settings()
        with _lock:
            if _client is None:
                _client = factory(current.url, namespace=current.namespace, secret=current.secrets)
            client = _client
    return cast(_C, client)


def swap_default_client(client: SupportsClose | None) -> SupportsClose | None:
    """Install ``client`` as the default (None: build one on next use); return the old one.

    The old client is not closed: ``sigbroker.testing`` puts it back afterwards.
    """
    global _client
    with _lock:
        old, _client = _client, client
    return old


def reset() -> None:
    """Forget the configuration and close the default client (for tests)."""
    global _settings, _client
    with _lock:
        old, _settings, _client = _client, None, None
    if old is not None:
        old.close()
