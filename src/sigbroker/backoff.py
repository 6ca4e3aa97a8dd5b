"""The one backoff: capped exponential with jitter.

Reconnecting workers and retrying sends both wait ``compute_backoff(attempt)``
with their own base and cap, so that clients that lost Redis together do not
all come back at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["compute_backoff"]

#: First delay; doubles each attempt.
BACKOFF_BASE_S = 0.1
#: Longest delay.
BACKOFF_MAX_S = 5.0


def compute_backoff(
    attempt: int,
    *,
    base_s: float = BACKOFF_BASE_S,
    max_s: float = BACKOFF_MAX_S,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Delay before ``attempt`` (1-based): capped exponential with jitter.

    The delay is drawn between half and all of ``min(max_s, base_s * 2**(attempt-1))``.
    """
    if attempt < 1:
        return 0.0
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 32))
    return ceiling * (0.5 + 0.5 * jitter())
