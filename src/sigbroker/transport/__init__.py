"""Everything that carries messages, behind one small interface (see :mod:`.base`).

:mod:`.redis_pubsub` speaks Redis pub/sub; :mod:`.memory` keeps messages in
this process. Only the modules of this package import redis-py.
"""

from .base import Done, Handler, Outcome, PatternHandler, Source, Transport

__all__ = ["Done", "Handler", "Outcome", "PatternHandler", "Source", "Transport"]
