"""sigbroker: Django-style signals across process boundaries, over Redis.

``Signal``, ``receiver`` and ``configure`` load without Redis; ``Client`` and
``Worker`` are imported on first access, so a project that only runs signals
in eager mode (its unit tests, say) never imports redis-py.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .config import configure
from .message import current_message
from .signal import Signal, receiver

if TYPE_CHECKING:
    from .broker import Worker
    from .client import Client

try:
    __version__ = version("sigbroker")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Client",
    "Signal",
    "Worker",
    "__version__",
    "configure",
    "current_message",
    "receiver",
]

_LAZY = {"Client": ".client", "Worker": ".broker"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sigbroker' has no attribute {name!r}")
