"""The operator's view of durable delivery: streams, consumer groups, dead letters.

Functions of a redis-py client, for ``sigbroker streams``, ``sigbroker dlq``
and ``sigbroker listen``, which run them through
:meth:`~sigbroker.client.Client.call`. That call retries connection errors, so
each function here is safe to run twice: reads, ``DEL`` and ``XDEL``, and a
replay that moves an entry in one script, only while it is still in the
dead-letter stream. The keys are named by :mod:`sigbroker.durable`; the
consuming side is :mod:`.redis_streams`.

Redis 7.0's replies are read as they come: ``XINFO GROUPS`` gives a ``lag`` of
nil when the group's position can not be told from the stream (after an
``XDEL``, say) and an ``entries-read`` of nil for a group created at ``$``;
older servers give neither field. Both become ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from ..durable import dlq_key, lost_key, stream_key

__all__ = [
    "DeadLetter",
    "GroupReport",
    "StreamReport",
    "dead_letters",
    "delete",
    "dlq_lengths",
    "durable_streams",
    "find_dead_letters",
    "is_entry_id",
    "purge",
    "read_streams",
    "replay",
    "stream_positions",
    "stream_reports",
]

#: Entries read per XRANGE round trip when listing a dead-letter stream.
DLQ_PAGE_ENTRIES = 1000
#: Keys asked for per SCAN round trip.
SCAN_COUNT = 500

_ENTRY_ID = re.compile(r"\d+-\d+")

# Moves one dead letter back to its stream for its group and receiver, in one
# step, only if it is still there: a retried call (or a second operator)
# finds it gone and replays nothing twice.
# KEYS: dead-letter stream, signal stream; ARGV: dead letter id, group.
_REPLAY_LUA = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields = found[1][2]
local data, receiver, done
for i = 1, #fields, 2 do
    if fields[i] == 'd' then data = fields[i + 1] end
    if fields[i] == 'receiver' then receiver = fields[i + 1] end
    if fields[i] == 'done' then done = fields[i + 1] end
end
if not data then return false end
local id
if receiver and receiver ~= '' then
    id = redis.call('XADD', KEYS[2], '*', 'd', data, 'g', ARGV[2], 'r', receiver)
elseif done and done ~= '[]' then
    -- every receiver but those that had succeeded (a message whose workers died)
    id = redis.call('XADD', KEYS[2], '*', 'd', data, 'g', ARGV[2], 's', done)
else
    id = redis.call('XADD', KEYS[2], '*', 'd', data, 'g', ARGV[2])
end
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


@dataclass(frozen=True)
class GroupReport:
    """One consumer group of a stream, as ``sigbroker streams`` shows it."""

    group: str
    consumers: int
    pending: int
    #: Entries not yet read by the group; None when Redis can not tell.
    lag: int | None
    #: Age of the oldest entry read and not acknowledged (by its id's time), or None.
    oldest_pending_age_s: float | None
    #: Entries the group lost: trimmed or deleted before it processed them.
    lost: int
    last_delivered_id: str
    #: Entries the group read in all (Redis 7); None when Redis can not tell.
    entries_read: int | None


@dataclass(frozen=True)
class StreamReport:
    """The stream of one durable signal and its consumer groups."""

    signal: str
    stream: str
    length: int
    first_id: str | None
    last_id: str | None
    #: Entries ever added (Redis 7), trimmed and deleted ones included; None before 7.
    entries_added: int | None
    groups: tuple[GroupReport, ...]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        return asdict(self)


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a group's dead-letter stream: a message one receiver failed on."""

    id: str
    group: str
    signal: str
    #: The stream the message came from, and its entry there.
    stream: str
    entry: str
    #: The qualified name of the receiver that failed.
    receiver: str
    #: The last error, on one line (``"ValueError: boom"``), and its traceback.
    error: str
    traceback: str
    deliveries: int | None
    worker: str
    failed_at: float | None
    #: The message as it was sent (the envelope's bytes).
    data: bytes

    def summary(self) -> dict[str, Any]:
        """The fields ``dlq list`` shows (no traceback, no message)."""
        return {
            "id": self.id,
            "group": self.group,
            "signal": self.signal,
            "receiver": self.receiver,
            "error": self.error,
            "deliveries": self.deliveries,
            "failed_at": self.failed_at,
        }


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a complete stream entry id (``1700000000000-0``)."""
    return _ENTRY_ID.fullmatch(text) is not None


# -- streams ------------------------------------------------------------------


def stream_reports(r: redis.Redis, namespace: str) -> list[StreamReport]:
    """Every durable stream of ``namespace`` with its groups, in signal name order.

    Three round trips whatever the number of streams (SCAN aside): the
    streams and their groups, then each group's oldest pending entry and
    lost count. A stream deleted meanwhile is left out.
    """
    prefix = stream_key(namespace, "")
    keys = durable_streams(r, namespace)
    if not keys:
        return []
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
    pipe.time()
    *replies, (seconds, micros) = pipe.execute(raise_on_error=False)
    now_ms = seconds * 1000 + micros // 1000
    found = [
        (key, info, groups)
        for key, info, groups in zip(keys, replies[::2], replies[1::2], strict=True)
        if not isinstance(info, Exception) and not isinstance(groups, Exception)
    ]
    pipe = r.pipeline(transaction=False)
    for key, _, groups in found:
        for group in groups:
            name = _text(group["name"])
            pipe.xpending(key, name)
            pipe.hget(lost_key(namespace, name), key)
    details = iter(pipe.execute(raise_on_error=False))
    return [
        StreamReport(
            signal=key[len(prefix) :],
            stream=key,
            length=int(info["length"]),
            first_id=_entry_id(info.get("first-entry")),
            last_id=_entry_id(info.get("last-entry")),
            entries_added=_int_or_none(info.get("entries-added")),
            groups=tuple(_group_report(group, details, now_ms) for group in groups),
        )
        for key, info, groups in found
    ]


def _group_report(group: Mapping[str, Any], details: Iterator[Any], now_ms: int) -> GroupReport:
    pending, lost = next(details), next(details)
    oldest = pending.get("min") if isinstance(pending, dict) else None
    age = None if oldest is None else max(0, now_ms - _id_time_ms(oldest)) / 1000
    return GroupReport(
        group=_text(group["name"]),
        consumers=int(group["consumers"]),
        pending=int(group["pending"]),
        lag=_int_or_none(group.get("lag")),
        oldest_pending_age_s=age,
        lost=int(lost) if lost is not None and not isinstance(lost, Exception) else 0,
        last_delivered_id=_text(group["last-delivered-id"]),
        entries_read=_int_or_none(group.get("entries-read")),
    )


# -- dead letters -------------------------------------------------------------


def dead_letters(r: redis.Redis, namespace: str, group: str | None = None) -> list[DeadLetter]:
    """Every dead letter of ``group`` (of every group when None), oldest first per group."""
    letters: list[DeadLetter] = []
    for key, name in _dlq_keys(r, namespace, group):
        start = "-"
        while True:
            page: Any = r.xrange(key, start, "+", count=DLQ_PAGE_ENTRIES)
            letters.extend(_dead_letter(name, entry_id, fields) for entry_id, fields in page)
            if len(page) < DLQ_PAGE_ENTRIES:
                break
            start = "(" + _text(page[-1][0])
    return letters


def find_dead_letters(
    r: redis.Redis, namespace: str, ids: Sequence[str], group: str | None = None
) -> list[DeadLetter]:
    """The dead letters with these ids in ``group``'s stream (in every group's when None).

    Ids must be complete (see :func:`is_entry_id`). An id found in two
    groups' streams gives two letters; one found nowhere gives none.
    """
    keys = _dlq_keys(r, namespace, group)
    pipe = r.pipeline(transaction=False)
    for key, _ in keys:
        for entry_id in ids:
            pipe.xrange(key, entry_id, entry_id)
    replies = iter(pipe.execute())
    letters: list[DeadLetter] = []
    for _, name in keys:
        for _ in ids:
            letters.extend(
                _dead_letter(name, entry_id, fields) for entry_id, fields in next(replies)
            )
    return letters


def replay(r: redis.Redis, namespace: str, letters: Iterable[DeadLetter]) -> list[str | None]:
    """Send each letter's message again, to its group and receiver only; remove it from the DLQ.

    The message goes back to its stream (the signal's, when the letter does
    not say) with the fields ``g`` (the group) and ``r`` (the receiver): the
    group's workers run that receiver alone and the other groups acknowledge
    it without running anything. Returns each new entry id, or None for a
    letter that was no longer in the dead-letter stream.
    """
    script = r.register_script(_REPLAY_LUA)
    pipe = r.pipeline(transaction=False)
    for letter in letters:
        stream = letter.stream or stream_key(namespace, letter.signal)
        script(
            keys=[dlq_key(namespace, letter.group), stream],
            args=[letter.id, letter.group],
            client=pipe,
        )
    return [None if new_id is None else _text(new_id) for new_id in pipe.execute()]


def dlq_lengths(r: redis.Redis, namespace: str, group: str | None = None) -> dict[str, int]:
    """How many dead letters ``group`` has (every group that has some, when None)."""
    keys = _dlq_keys(r, namespace, group)
    pipe = r.pipeline(transaction=False)
    for key, _ in keys:
        pipe.xlen(key)
    lengths = pipe.execute() if keys else []
    return {name: int(n) for (_, name), n in zip(keys, lengths, strict=True) if n}


def delete(r: redis.Redis, namespace: str, letters: Iterable[DeadLetter]) -> int:
    """Delete these dead letters (``XDEL``); return how many were still there."""
    by_group: dict[str, list[str]] = {}
    for letter in letters:
        by_group.setdefault(letter.group, []).append(letter.id)
    if not by_group:
        return 0
    pipe = r.pipeline(transaction=False)
    for group, ids in by_group.items():
        pipe.xdel(dlq_key(namespace, group), *ids)
    return sum(pipe.execute())


def purge(r: redis.Redis, namespace: str, group: str | None = None) -> int:
    """Delete the dead-letter stream of ``group`` (of every group); return how many it held."""
    keys = [key for key, _ in _dlq_keys(r, namespace, group)]
    if not keys:
        return 0
    pipe = r.pipeline(transaction=True)  # counted and deleted at one instant
    for key in keys:
        pipe.xlen(key)
    pipe.delete(*keys)
    *lengths, _ = pipe.execute()
    return sum(lengths)


def _dlq_keys(r: redis.Redis, namespace: str, group: str | None) -> list[tuple[str, str]]:
    # (key, group) of the group's dead-letter stream, or of every group's.
    if group is not None:
        key = dlq_key(namespace, group)
        return [(key, group)] if r.exists(key) else []
    prefix = dlq_key(namespace, "")
    return [(key, key[len(prefix) :]) for key in _scan(r, prefix)]


def _dead_letter(group: str, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> DeadLetter:
    def text(name: bytes) -> str:
        return fields.get(name, b"").decode("utf-8", "replace")

    return DeadLetter(
        id=_text(entry_id),
        group=group,
        signal=text(b"signal"),
        stream=text(b"stream"),
        entry=text(b"entry"),
        receiver=text(b"receiver"),
        error=text(b"error"),
        traceback=text(b"traceback"),
        deliveries=_int(text(b"deliveries")),
        worker=text(b"worker"),
        failed_at=_float(text(b"failed_at")),
        data=bytes(fields.get(b"d", b"")),
    )


# -- tailing (listen) -----------------------------------------------------------


def durable_streams(r: redis.Redis, namespace: str) -> list[str]:
    """The keys of the durable streams of ``namespace``, in order."""
    return _scan(r, stream_key(namespace, ""))


def stream_positions(
    r: redis.Redis, namespace: str, signal_names: Sequence[str] = ()
) -> dict[str, str]:
    """The streams to tail (these signals', or every one of the namespace) and where they end.

    What ``XREAD ... $`` means, made explicit so that nothing added between
    two reads is skipped: the id of each stream's last entry, or ``0-0`` for
    a stream that does not exist yet (all it will hold is new).
    """
    keys = (
        [stream_key(namespace, name) for name in signal_names]
        if signal_names
        else durable_streams(r, namespace)
    )
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_stream(key)
    infos = pipe.execute(raise_on_error=False)
    return {
        key: "0-0" if isinstance(info, Exception) else _text(info["last-generated-id"])
        for key, info in zip(keys, infos, strict=True)
    }


def read_streams(
    r: redis.Redis, positions: Mapping[str, str], *, block_ms: int, count: int
) -> list[tuple[str, str, bytes | None]]:
    """One ``XREAD``, without a group: up to ``count`` entries after each stream's position.

    Waits up to ``block_ms`` for the first one. Returns ``(stream, entry id,
    message bytes)``, the bytes None for an entry with no ``d`` field.
    """
    if not positions:
        return []
    streams: dict[Any, Any] = dict(positions)
    reply: Any = r.xread(streams, count=count, block=block_ms) or []
    return [
        (_text(key), _text(entry_id), fields.get(b"d"))
        for key, entries in reply
        for entry_id, fields in entries
    ]


# -- helpers ------------------------------------------------------------------


def _scan(r: redis.Redis, prefix: str) -> list[str]:
    # The streams whose keys start with prefix, in key order.
    match = _glob_escape(prefix) + "*"
    return sorted({_text(k) for k in r.scan_iter(match=match, count=SCAN_COUNT, _type="stream")})


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _entry_id(entry: Any) -> str | None:
    # XINFO STREAM's first-entry / last-entry: (id, fields), or None when empty.
    return _text(entry[0]) if entry else None


def _id_time_ms(entry_id: bytes | str) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
