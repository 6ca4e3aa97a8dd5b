"""A durable consumer's upkeep, every pulse: fresh holds, claims, dead consumers, losses.

:class:`Claims` does what the worker's pulse thread asks of a durable
consumer every few seconds, on the consumer's side connection:

* resets the idle time of what this worker holds (a batch running, a pool's
  messages, retries waiting), so that no other worker claims a message from
  a live one, however long its receiver runs;
* claims the pending messages of a consumer whose worker's heartbeat is gone,
  and removes that consumer once nothing is pending on it (removing it
  earlier would drop its pending entries);
* claims anything pending longer than ``claim_idle_s``, whoever holds it;
* counts the entries the group lost to trimming before it read them.

Claimed messages go to :class:`~.redis_retries.Retries`, due at once.
Entries deleted or trimmed while pending are acknowledged and counted lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis

from ..durable import ConsumerOptions
from ..stats import Stats
from .redis_link import Link, command, pairs
from .redis_retries import Retries

__all__ = ["Claims"]

logger = logging.getLogger(__name__)

#: Counts what a group lost to trimming once, whichever of its workers sees it first.
#: KEYS[1]: the group's lost hash; ARGV: the stream, entries missing now, 1 to set a base.
LOST_SCRIPT = """
local base = redis.call('HGET', KEYS[1], ARGV[1] .. '|base')
local d = tonumber(ARGV[2])
if base == false or tonumber(ARGV[3]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1] .. '|base', math.max(d, 0))
  return 0
end
base = tonumber(base)
redis.call('HSET', KEYS[1], ARGV[1] .. '|base', d)
if d > base then
  redis.call('HINCRBY', KEYS[1], ARGV[1], d - base)
  return d - base
end
return 0
"""

#: Claims a dead consumer's entries (ARGV[4...]) for ARGV[2]: those gone from the stream
#: are acknowledged and counted lost (by the one worker whose XACK removed them).
#: KEYS: stream, lost hash, retry hash; ARGV: group, consumer, minimum idle ms, ids.
CLAIM_SCRIPT = """
local lost = 0
local live = {}
for i = 4, #ARGV do
  if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 0 then
    lost = lost + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('HDEL', KEYS[3], KEYS[1] .. '|' .. ARGV[i])
  else
    live[#live + 1] = ARGV[i]
  end
end
if lost > 0 then redis.call('HINCRBY', KEYS[2], KEYS[1], lost) end
local claimed = {}
if #live > 0 then
  claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(live))
end
return {lost, claimed}
"""

#: A consumer without a heartbeat idle this long is dead: its messages are claimed.
DEAD_IDLE_MS = 5000
#: Entries claimed at once.
CLAIM_COUNT = 100
#: Batches of a dead consumer's entries one pulse claims.
CLAIM_ROUNDS = 20
#: Entries whose idle time one command resets.
REFRESH_CHUNK = 500


def _id(entry: bytes) -> tuple[int, int]:
    ms, _, seq = entry.partition(b"-")
    return int(ms), int(seq or 0)


class Claims:
    """The pulse's work for one durable consumer (see the module)."""

    def __init__(
        self,
        link: Link,
        retries: Retries,
        *,
        options: ConsumerOptions,
        consumer: str,
        alive_key: Callable[[str], str],
        stats: Stats,
    ) -> None:
        self._link = link
        self._retries = retries
        self._options = options
        self._group = options.group
        self._consumer = consumer
        self._alive_key = alive_key
        self._stats = stats
        self._cursors: dict[bytes, bytes] = {}

    def refresh(self, held: Iterable[tuple[bytes, bytes]]) -> None:
        """Reset the idle time of ``held`` entries (a claim to itself that counts nothing)."""
        by_stream: dict[bytes, list[bytes]] = {}
        for stream, entry in held:
            by_stream.setdefault(stream, []).append(entry)
        for stream, entries in by_stream.items():
            for at in range(0, len(entries), REFRESH_CHUNK):
                chunk = entries[at : at + REFRESH_CHUNK]
                self._link.run(
                    command("XCLAIM", stream, self._group, self._consumer, 0, *chunk, "JUSTID")
                )

    def recover(self, stream: bytes) -> None:
        """Claim from dead consumers and idle entries; remove dead consumers left empty."""
        (consumers,) = self._link.run(command("XINFO", "CONSUMERS", stream, self._group))
        if isinstance(consumers, redis.ResponseError):
            return  # the group is being created again
        others = [c for c in map(pairs, consumers) if c["name"].decode() != self._consumer]
        if others:
            alive = self._link.run(
                *(command("EXISTS", self._alive_key(c["name"].decode())) for c in others)
            )
            for info, up in zip(others, alive, strict=True):
                if not up and info["idle"] >= DEAD_IDLE_MS:
                    self._dead(stream, info["name"], info["pending"])
        idle_ms = int(self._options.claim_idle_s * 1000)
        cursor = self._cursors.get(stream, b"0-0")
        (reply,) = self._link.run(
            command(
                "XAUTOCLAIM",
                stream,
                self._group,
                self._consumer,
                idle_ms,
                cursor,
                "COUNT",
                CLAIM_COUNT,
            )
        )
        if isinstance(reply, redis.ResponseError):
            return
        self._cursors[stream] = reply[0]  # where the next pulse goes on (0-0: from the start)
        # Redis 7 lists deleted entries apart (and drops them from the pending list).
        claimed = [(e, f) for e, f in reply[1] if f]
        deleted = [e for e, f in reply[1] if not f] + (list(reply[2]) if len(reply) > 2 else [])
        if deleted:  # only this call sees them: Redis dropped them from the pending list
            self._retries.lost(stream, deleted, "deleted or trimmed while pending", pending=False)
        if claimed:
            self._retries.take_over(stream, claimed, dead_holder=True)

    def _dead(self, stream: bytes, consumer: bytes, pending: int) -> None:
        if not pending:
            self._link.run(command("XGROUP", "DELCONSUMER", stream, self._group, consumer))
            logger.info("Removed the dead consumer %s from %s", consumer.decode(), self._group)
            return
        for _ in range(CLAIM_ROUNDS):  # a pulse takes up to this many batches
            if self._claim_from(stream, consumer) < CLAIM_COUNT:
                break

    def _claim_from(self, stream: bytes, consumer: bytes) -> int:
        """Claim a batch of a dead consumer's pending messages; return how many were pending."""
        (pending,) = self._link.run(
            command("XPENDING", stream, self._group, "-", "+", CLAIM_COUNT, consumer)
        )
        ids = [p[0] for p in pending]
        if not ids:
            return 0
        # One script: entries gone from the stream are acknowledged and
        # counted lost by whoever removes them from the pending list; the
        # others are claimed, the minimum idle time keeping two workers from
        # both taking one.
        (reply,) = self._link.run(
            command(
                "EVAL",
                CLAIM_SCRIPT,
                3,
                stream,
                self._retries.lost_key,
                self._retries.key,
                self._group,
                self._consumer,
                DEAD_IDLE_MS,
                *ids,
            )
        )
        lost, claimed = reply
        if lost:
            self._retries.counted_lost(stream, lost, "deleted or trimmed while pending")
        got = [(e, f) for e, f in claimed if f]
        if got:
            logger.info(
                "Claimed %d messages of %s from the dead consumer %s",
                len(got),
                stream.decode(),
                consumer.decode(),
            )
            self._retries.take_over(stream, got, dead_holder=True)
        return len(ids)

    def count_trimmed(self, stream: bytes, *, created: bool = False) -> None:
        """Count entries trimmed (or deleted) before the group read them, once per group.

        Redis 7 counts the entries appended to a stream and those its group
        read; what neither the group read nor the stream still holds after
        the group's position was lost. That can be measured when all that
        the stream holds is unread (the group is behind its first entry) or
        when the group has read everything. ``created``: the group was just
        created here, its count starts at 0.
        """
        info, groups = self._link.run(
            command("XINFO", "STREAM", stream), command("XINFO", "GROUPS", stream)
        )
        if isinstance(info, redis.ResponseError) or isinstance(groups, redis.ResponseError):
            return
        s = pairs(info)
        group = next((g for g in map(pairs, groups) if g["name"].decode() == self._group), None)
        if group is None:
            return
        added: int | None = s.get("entries-added")
        read: int | None = group.get("entries-read")
        unread = _unread(s, group["last-delivered-id"])
        if added is None or read is None or unread is None:
            if created:
                self._eval_lost(stream, 0, base=True)
            return
        counted = self._eval_lost(stream, added - read - unread, base=created)
        if counted > 0:
            self._stats.add(lost=counted)
            logger.warning(
                "Group %s lost %d entries of %s: trimmed before it read them "
                "(raise the signal's maxlen, or add workers)",
                self._group,
                counted,
                stream.decode(),
            )

    def _eval_lost(self, stream: bytes, missing: int, *, base: bool) -> int:
        (counted,) = self._link.run(
            command("EVAL", LOST_SCRIPT, 1, self._retries.lost_key, stream, missing, int(base))
        )
        return counted if isinstance(counted, int) else 0


def _unread(stream: dict[str, Any], last: bytes) -> int | None:
    # How many unread entries the stream holds after the group's position
    # ``last``, where that is known without reading them: None otherwise.
    first = stream["first-entry"][0] if stream.get("first-entry") else None
    if first is None or _id(first) > _id(last):
        return int(stream["length"])
    if last == stream["last-generated-id"]:
        return 0
    return None
