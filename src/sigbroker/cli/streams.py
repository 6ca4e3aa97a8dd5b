"""The operator's commands for durable signals: ``streams`` and ``dlq``.

``streams`` shows each durable signal's stream and how its consumer groups
keep up with it; ``dlq`` lists, shows, replays and purges the dead letters
(the messages a receiver still failed on after ``max_deliveries`` attempts).
The Redis side is :mod:`sigbroker.transport.redis_streams_admin`, run through
:meth:`~sigbroker.client.Client.call` and imported only when a command runs,
so that ``--help`` does not load redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from .context import Options, pass_options
from .inspection import duration, echo_json, table

if TYPE_CHECKING:
    from ..client import Client
    from ..transport.redis_streams_admin import DeadLetter, StreamReport

__all__ = ["dlq", "streams"]

#: Characters of an error shown in ``dlq list``'s table (``--json`` and ``show`` give it whole).
ERROR_COLUMN_CHARS = 60


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@pass_options
def streams(opts: Options, as_json: bool) -> None:
    """List the durable signals' streams and their consumer groups (lag, pending, lost)."""
    from ..transport.redis_streams_admin import stream_reports

    with opts.client() as client:
        reports = client.call(lambda r: stream_reports(r, client.namespace))
    if as_json:
        echo_json([report.as_dict() for report in reports])
    elif not reports:
        click.echo(f"No durable streams in namespace {client.namespace!r}")
    else:
        headers = ["SIGNAL", "LENGTH", "FIRST ID", "LAST ID", "GROUP", "CONSUMERS", "PENDING"]
        click.echo(table([*headers, "LAG", "OLDEST PENDING", "LOST"], _stream_rows(reports)))


def _stream_rows(reports: Sequence[StreamReport]) -> list[list[object]]:
    # One row per (stream, group); a stream no group consumes yet gets one row.
    rows: list[list[object]] = []
    for report in reports:
        stream = [report.signal, report.length, report.first_id or "-", report.last_id or "-"]
        if not report.groups:
            rows.append([*stream, "-", "-", "-", "-", "-", "-"])
        for group in report.groups:
            age = group.oldest_pending_age_s
            rows.append(
                [
                    *stream,
                    group.group,
                    group.consumers,
                    group.pending,
                    "?" if group.lag is None else group.lag,  # Redis can not tell (Redis 7.0)
                    "-" if age is None else duration(age),
                    group.lost,
                ]
            )
    return rows


# -- dlq ----------------------------------------------------------------------


def _check_ids(ctx: click.Context, param: click.Parameter, ids: tuple[str, ...]) -> tuple[str, ...]:
    from ..transport.redis_streams_admin import is_entry_id

    for entry_id in ids:
        if not is_entry_id(entry_id):
            raise click.BadParameter(
                f"{entry_id!r} is not a dead letter id (as `dlq list` shows them: 1700000000000-0)",
                ctx=ctx,
                param=param,
            )
    return tuple(dict.fromkeys(ids))  # each once, in order


_group_option = click.option(
    "--group", "-g", metavar="GROUP", help="Only this consumer group (default: every group)."
)
_ids_argument = click.argument("ids", nargs=-1, metavar="[ID]...", callback=_check_ids)
_json_option = click.option("--json", "as_json", is_flag=True, help="JSON output.")


@click.group()
def dlq() -> None:
    """Dead letters: messages a receiver failed on max_deliveries times.

    Each consumer group has its own; a message whose receivers failed gives one
    dead letter per failing receiver. `replay` sends a message again to its
    group and receiver only.
    """


@dlq.command("list")
@_group_option
@_json_option
@pass_options
def list_(opts: Options, group: str | None, as_json: bool) -> None:
    """List the dead letters (one line each, without the traceback)."""
    from ..transport.redis_streams_admin import dead_letters

    with opts.client() as client:
        letters = client.call(lambda r: dead_letters(r, client.namespace, group))
    if as_json:
        echo_json([letter.summary() for letter in letters])
        return
    if not letters:
        click.echo(f"No dead letters {_where(client, group)}")
        return
    now = time.time()
    rows = [
        (
            letter.id,
            letter.group,
            letter.signal,
            letter.receiver,
            _shorten(letter.error),
            "?" if letter.deliveries is None else letter.deliveries,
            _ago(letter.failed_at, now),
        )
        for letter in letters
    ]
    headers = ["ID", "GROUP", "SIGNAL", "RECEIVER", "ERROR", "DELIVERIES", "FAILED"]
    click.echo(table(headers, rows))


@dlq.command()
@_group_option
@_ids_argument
@_json_option
@pass_options
def show(opts: Options, group: str | None, ids: tuple[str, ...], as_json: bool) -> None:
    """Show dead letters whole: the message, the error and its traceback (all without ID)."""
    with opts.client() as client:
        letters = _letters(client, group, ids, unique=False)
        records = [_full_record(client, letter) for letter in letters]
    if as_json:
        echo_json(records)
    elif not records:
        click.echo(f"No dead letters {_where(client, group)}")
    else:
        click.echo("\n\n".join(_describe(record) for record in records))


@dlq.command()
@_group_option
@_ids_argument
@_json_option
@pass_options
def replay(opts: Options, group: str | None, ids: tuple[str, ...], as_json: bool) -> None:
    """Send dead letters' messages again, to their group and receiver only (all without ID).

    Each goes back on its signal's stream, marked for its group and the
    receiver that failed, and leaves the dead-letter stream.
    """
    from ..transport.redis_streams_admin import replay as replay_letters

    with opts.client() as client:
        letters = _letters(client, group, ids, unique=True)
        new_ids = client.call(lambda r: replay_letters(r, client.namespace, letters))
    records = [
        {
            "id": letter.id,
            "group": letter.group,
            "signal": letter.signal,
            "receiver": letter.receiver,
            "stream": letter.stream,
            "replayed_as": new_id,
        }
        for letter, new_id in zip(letters, new_ids, strict=True)
    ]
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo(f"No dead letters {_where(client, group)}")
    for r in records:
        if r["replayed_as"] is None:
            click.echo(f"{r['id']} ({r['group']}): gone meanwhile (replayed or purged), skipped")
        else:
            click.echo(
                f"{r['id']} ({r['group']}, {r['receiver'] or 'every receiver'}): "
                f"replayed as {r['replayed_as']} on {r['stream']}"
            )


@dlq.command()
@_group_option
@_ids_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_json_option
@pass_options
def purge(opts: Options, group: str | None, ids: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Delete dead letters for good: these IDs, or all of the group (of every group)."""
    from ..transport.redis_streams_admin import delete, dlq_lengths
    from ..transport.redis_streams_admin import purge as purge_groups

    with opts.client() as client:
        if ids:
            letters = _letters(client, group, ids, unique=True)
            question = f"Delete {_count(len(letters))} ({', '.join(ids)})?"
        else:
            lengths = client.call(lambda r: dlq_lengths(r, client.namespace, group))
            if not lengths:
                click.echo(f"No dead letters {_where(client, group)}")
                return
            total = _count(sum(lengths.values()))
            groups = f"group{'' if len(lengths) == 1 else 's'} {', '.join(lengths)}"
            question = f"Delete every dead letter of {groups} ({total})?"
        if not yes:
            click.confirm(question, abort=True)
        if ids:
            purged = client.call(lambda r: delete(r, client.namespace, letters))
        else:
            purged = client.call(lambda r: purge_groups(r, client.namespace, group))
    if as_json:
        echo_json({"purged": purged})
    else:
        click.echo(f"Purged {_count(purged)}")


# -- helpers ------------------------------------------------------------------


def _letters(
    client: Client, group: str | None, ids: tuple[str, ...], *, unique: bool
) -> list[DeadLetter]:
    # The letters with these ids (every letter without ids); an id found
    # nowhere is an error, and so, with ``unique``, is one found in two groups.
    from ..transport.redis_streams_admin import dead_letters, find_dead_letters

    if not ids:
        return client.call(lambda r: dead_letters(r, client.namespace, group))
    letters = client.call(lambda r: find_dead_letters(r, client.namespace, ids, group))
    for entry_id in ids:
        groups = [letter.group for letter in letters if letter.id == entry_id]
        if not groups:
            raise click.ClickException(f"no dead letter {entry_id} {_where(client, group)}")
        if unique and len(groups) > 1:
            raise click.ClickException(
                f"dead letter {entry_id} is in the groups {', '.join(groups)}: pass --group"
            )
    return letters


def _full_record(client: Client, letter: DeadLetter) -> dict[str, Any]:
    from ..errors import InvalidMessage
    from .listen import to_json

    record: dict[str, Any] = {
        **letter.summary(),
        "stream": letter.stream,
        "entry": letter.entry,
        "worker": letter.worker,
        "traceback": letter.traceback,
    }
    try:
        envelope = client.codec.decode(letter.data)
    except InvalidMessage as exc:
        record["message"] = {"rejected": str(exc)}
    else:
        record["message"] = {
            "id": envelope.id,
            "sender": envelope.sender,
            "kwargs": to_json(envelope.kwargs),
            "origin": envelope.origin,
            "sent_at": envelope.sent_at,
        }
    return record


def _describe(record: dict[str, Any]) -> str:
    # A dead letter for people: its fields, then the message, then the traceback.
    message = record["message"]
    if "rejected" in message:
        sent = f"not readable here ({message['rejected']})"
    else:
        args = ", ".join(f"{k}={v!r}" for k, v in message["kwargs"].items())
        sent = f"sender={message['sender']} {args} (id {message['id']}, from {message['origin']})"
    failed_at = record["failed_at"]
    lines = [
        f"{record['id']}  group {record['group']}",
        f"  signal:     {record['signal']} (entry {record['entry']} of {record['stream']})",
        f"  message:    {sent}",
        f"  receiver:   {record['receiver']}",
        f"  error:      {record['error']}",
        f"  deliveries: {'?' if record['deliveries'] is None else record['deliveries']}",
        f"  failed:     {_timestamp(failed_at)} ({_ago(failed_at, time.time())}) on "
        f"{record['worker'] or '?'}",
        "  traceback:",
        *(f"    {line}" for line in (record["traceback"] or "-").splitlines()),
    ]
    return "\n".join(lines)


def _where(client: Client, group: str | None) -> str:
    where = f"in namespace {client.namespace!r}"
    return where if group is None else f"of group {group!r} {where}"


def _count(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_COLUMN_CHARS else text[: ERROR_COLUMN_CHARS - 3] + "..."


def _ago(timestamp: float | None, now: float) -> str:
    return "?" if timestamp is None else f"{duration(now - timestamp)} ago"


def _timestamp(timestamp: float | None) -> str:
    if timestamp is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
