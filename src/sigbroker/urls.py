"""Broker URLs without their secrets: what may be printed, logged or raised.

:func:`mask_url` hides every credential form a Redis URL can hold;
:func:`url_secrets` lists the strings that must never appear in a text about
a URL, and :func:`scrub` hides them in a text that came from elsewhere
(redis-py's error messages quote the URL, or a piece of it).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

__all__ = ["MASK", "mask_url", "scrub", "url_secrets"]

#: What a password or a secret in a URL is shown as.
MASK = "***"
#: Query (or fragment) parameters whose value is a secret, matched anywhere in
#: the name, case-insensitively: ``password``, ``ssl_password``, ``token``...
SECRET_PARAM = re.compile(r"pass|pwd|secret|token|auth|cred|key|private", re.IGNORECASE)

# A host, host:port or [v6]:port: what may follow the "@" that ends the userinfo.
_HOSTLIKE = re.compile(r"[\w.%\[\]:-]*")
_URL_DELIMITERS = re.compile(r"[/?#]")
_PARAMS_START = re.compile(r"[?#]")
# Query and fragment separators, kept in the output as they were.
_PARAM_SEPARATORS = re.compile(r"([&;?#])")
# A secret is also scrubbed piecewise, in case a parser split it at these.
_SECRET_PIECES = re.compile(r"[/?#@:&=]")


def mask_url(url: str) -> str:
    """Return ``url`` with every credential replaced by ``***`` (safe to print or log).

    Masks the password of ``user:pass@`` and ``:pass@`` (also when it holds
    unescaped ``@``, ``/`` or ``?``), and the value of every query or fragment
    parameter whose name says it is a secret (``?password=``, the ACL user's
    ``?username=alice&password=...``, ``ssl_password``, ``token``...), in
    ``redis://``, ``rediss://`` and ``unix://`` URLs alike. Never raises.
    """
    try:
        return _parse_credentials(url)[0]
    except Exception:  # masking must never be the thing that fails
        return "<unparseable url>"


def _parse_credentials(url: str) -> tuple[str, list[str]]:
    """``url`` masked, and the secrets it held, as written in it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    secrets: list[str] = []
    head = ""
    at = _userinfo_end(rest)
    if at >= 0:
        user, colon, password = rest[:at].partition(":")
        if colon:
            secrets.append(password)
            head = f"{user}:{MASK}@"
        else:
            head = f"{user}@"  # a user name alone is not a secret
        rest = rest[at + 1 :]
    params = _PARAMS_START.search(rest)
    start = len(rest) if params is None else params.start()
    pieces = _PARAM_SEPARATORS.split(rest[start:])
    for i, piece in enumerate(pieces):
        name, eq, value = piece.partition("=")
        if eq and value and SECRET_PARAM.search(unquote_plus(name)):
            secrets.append(value)
            pieces[i] = f"{name}={MASK}"
    return scheme + head + rest[:start] + "".join(pieces), secrets


def _userinfo_end(rest: str) -> int:
    """Index of the "@" that ends the userinfo in ``rest`` (after ``scheme://``), or -1.

    It is the last "@" that a host (or nothing, in ``unix://:pw@/path``)
    follows, preferring one with no "?" or "#" before it (an "@" in a query
    value ends no userinfo), so that an unescaped "@", "/" or "?" in a
    password is masked with the rest of it.
    """
    for strict in (True, False):
        at = len(rest)
        while (at := rest.rfind("@", 0, at)) >= 0:
            userinfo = rest[:at]
            if not _HOSTLIKE.fullmatch(_URL_DELIMITERS.split(rest[at + 1 :], maxsplit=1)[0]):
                continue
            if strict and _PARAMS_START.search(userinfo):
                continue
            if ":" in userinfo or not _URL_DELIMITERS.search(userinfo):
                return at
    return -1


def url_secrets(url: str) -> list[str]:
    """Every string that must not appear in a text about ``url``, longest first."""
    try:
        found = _parse_credentials(url)[1]
    except Exception:  # see mask_url
        return [url]
    out: set[str] = set()
    for secret in found:
        for form in (secret, unquote(secret), unquote_plus(secret)):
            out.add(form)
            out.update(p for p in _SECRET_PIECES.split(form) if len(p) >= 3)
    out.discard("")
    return sorted(out, key=len, reverse=True)


def scrub(text: str, url: str, secrets: list[str]) -> str:
    """``text`` with ``url`` masked and every secret of it replaced by ``***``."""
    text = text.replace(url, mask_url(url))
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
