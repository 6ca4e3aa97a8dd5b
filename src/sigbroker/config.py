"""The process-wide default configuration, and the default client built from it.

Each setting comes from the first of: ``configure()``; a framework's settings
(the Django app, ``sigbroker.contrib.django``, installs its ``settings.py``
as a source with :func:`set_source`); the environment, read the first time
a setting is needed:

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_URL",
    "ClientFactory",
    "Settings",
    "SettingsSource",
    "configure",
    "default_client",
    "reload",
    "set_source",
]

#: Where a client connects when neither configure() nor the environment says.
DEFAULT_URL = "redis://localhost:6379/0"
#: The first part of every channel name and heartbeat key.
DEFAULT_NAMESPACE = "sigbroker"

_TRUE = frozenset({"1", "true", "yes", "on"})

Secret = str | bytes
SecretSetting = Secret | Sequence[Secret] | None

#: A framework's settings: returns the ones it sets, by ``configure()``'s
#: argument names (``url``, ``namespace``, ``secret``, ``eager``), with the
#: types ``configure()`` takes. It is called again whenever settings are resolved.
SettingsSource = Callable[[], Mapping[str, object]]


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
_source: SettingsSource | None = None
#: The arguments of the last configure() call that were not None.
_explicit: dict[str, object] = {}


def _resolve(explicit: Mapping[str, object]) -> Settings:
    """The settings: ``explicit`` ones, else the source's, else the environment's."""
    chosen = dict(_source()) if _source is not None else {}
    chosen.update(explicit)
    env = from_environment()
    url, namespace = chosen.get("url"), chosen.get("namespace")
    eager = chosen.get("eager")
    return Settings(
        url=url if isinstance(url, str) else env.url,
        namespace=namespace if isinstance(namespace, str) else env.namespace,
        secrets=(
            normalize_secrets(cast(SecretSetting, chosen["secret"]))
            if chosen.get("secret") is not None
            else env.secrets
        ),
        eager=eager if isinstance(eager, bool) else env.eager,
    )


def configure(
    url: str | None = None,
    namespace: str | None = None,
    secret: SecretSetting = None,
    eager: bool | None = None,
) -> Settings:
    """Set the process-wide default that ``Signal.send`` uses.

    Arguments left as None keep the value of the framework's settings (the
    Django app's ``SIGBROKER_*`` settings), else of the environment. The
    previous default client, if any, is closed; the next send builds a new one.
    """
    global _settings, _client, _explicit
    given: dict[str, object] = {
        "url": url,
        "namespace": namespace,
        "secret": secret,
        "eager": eager,
    }
    explicit = {name: value for name, value in given.items() if value is not None}
    new = _resolve(explicit)
    with _lock:
        old, _settings, _client, _explicit = _client, new, None, explicit
    if old is not None:
        old.close()
    return new


def set_source(source: SettingsSource | None) -> None:
    """Read settings from ``source`` (None: no source), below ``configure()``'s.

    The settings are resolved again at once; when the connection settings
    changed (not only ``eager``), the default client is closed and the next
    send builds a new one. The Django app calls it at startup and again when
    a test changes a ``SIGBROKER_*`` setting (``override_settings``).
    """
    global _source
    with _lock:
        _source = source
    reload()


def reload() -> Settings:
    """Resolve the settings again (a source's values changed); return them.

    The arguments of the last ``configure()`` still win. A default client
    built with other connection settings is closed; one installed by
    :func:`swap_default_client` (``sigbroker.testing``) is left in place
    when they did not change.
    """
    global _settings, _client
    new = _resolve(_explicit)
    with _lock:
        old_settings, _settings = _settings, new
        # No settings yet: no client was built from them (one may be swapped in).
        same_connection = old_settings is None or (
            (old_settings.url, old_settings.namespace, old_settings.secrets)
            == (new.url, new.namespace, new.secrets)
        )
        old_client = None if same_connection else _client
        if old_client is not None:
            _client = None
    if old_client is not None:
        old_client.close()
    return new


def settings() -> Settings:
    """Return the current settings, resolving them on first use."""
    global _settings
    current = _settings
    if current is None:
        resolved = _resolve(_explicit)
        with _lock:
            if _settings is None:
                _settings = resolved
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
    """Forget the configuration and close the default client (for tests).

    A settings source stays installed: it is the process's, not a test's.
    """
    global _settings, _client, _explicit
    with _lock:
        old, _settings, _client, _explicit = _client, None, None, {}
    if old is not None:
        old.close()
