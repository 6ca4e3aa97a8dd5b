"""The commands that look without changing anything: what is live, what passes, what is defined.

``channels``, ``workers``, ``listen`` and ``ping`` ask the broker; ``inspect``
imports modules and needs no Redis. Each prints a table, or JSON with
``--json``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click

from ..errors import SigbrokerError
from .context import Options, app_option, load_modules, pass_options

__all__ = [
    "RECOMMENDED_PUBSUB_HARD_BYTES",
    "RECOMMENDED_PUBSUB_SOFT_BYTES",
    "channels",
    "duration",
    "echo_json",
    "inspect",
    "listen",
    "output_buffer_warning",
    "ping",
    "table",
    "workers",
]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Render rows as a left-aligned text table with a header line."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def echo_json(value: object) -> None:
    """Print ``value`` as one line of JSON (the ``--json`` output of every command)."""
    import json  # deferred: only --json needs it, and --help stays fast

    click.echo(json.dumps(value))


def duration(seconds: float) -> str:
    """A short, readable duration: ``42s``, ``3m05s``, ``2h10m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@pass_options
def channels(opts: Options, as_json: bool) -> None:
    """List the live channels of the namespace and their subscriber counts."""
    from ..broker import INTERNAL_PREFIX

    with opts.client() as client:
        prefix = f"{client.namespace}:"
        live = {
            channel: count
            for channel, count in client.channels().items()
            if not channel[len(prefix) :].startswith(INTERNAL_PREFIX)
        }
    rows = [
        {"channel": ch, "signal": ch[len(prefix) :], "subscribers": n} for ch, n in live.items()
    ]
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(f"No live channels in namespace {client.namespace!r}")
    else:
        click.echo(
            table(
                ["CHANNEL", "SIGNAL", "SUBSCRIBERS"],
                [(r["channel"], r["signal"], r["subscribers"]) for r in rows],
            )
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@pass_options
def workers(opts: Options, as_json: bool) -> None:
    """List the live workers, from their heartbeats."""
    from ..broker import list_workers

    with opts.client() as client:
        found = list_workers(client)
    for heartbeat in found:
        heartbeat.setdefault("group", None)  # a worker of an older version has none
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo(f"No live workers in namespace {client.namespace!r}")
        return
    now = time.time()
    rows = [_worker_columns(w, now) for w in found]
    click.echo(table(list(rows[0]), [list(row.values()) for row in rows]))


def _worker_columns(heartbeat: dict[str, Any], now: float) -> dict[str, object]:
    # Header and value side by side, in the table's order.
    return {
        "ID": heartbeat.get("id", "?"),
        "HOST": heartbeat.get("host", "?"),
        "PID": heartbeat.get("pid", "?"),
        "GROUP": heartbeat.get("group") or "-",  # None: a worker of pub/sub signals only
        "UPTIME": duration(now - float(heartbeat.get("started_at", now))),
        "SIGNALS": len(heartbeat.get("signals", [])),
        "PROCESSED": heartbeat.get("processed", 0),
        "FAILED": heartbeat.get("failed", 0),
        "REJECTED": heartbeat.get("rejected", 0),
        "LOST": heartbeat.get("lost", "?"),  # a worker of an older version does not count it
        "RESUBSCRIBES": heartbeat.get("resubscribes", 0),
        "LAST SEEN": f"{duration(now - float(heartbeat.get('last_seen', now)))} ago",
    }


@click.command()
@click.argument("signal_names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@pass_options
def listen(opts: Options, signal_names: tuple[str, ...], as_json: bool, count: int | None) -> None:
    """Decode and print messages as they pass, durable ones too (default: every signal)."""
    from .listen import Listener

    with opts.client() as client:
        listener = Listener(client, signal_names, as_json=as_json, count=count, echo=click.echo)
        with contextlib.suppress(KeyboardInterrupt):
            listener.run()


@click.command()
@app_option("Module that defines signals or connects receivers (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@pass_options
def inspect(opts: Options, modules: tuple[str, ...], as_json: bool) -> None:
    """List the signals MODULE defines and their receivers (no Redis needed)."""
    from ..routing import describe_receivers
    from ..signal import all_signals

    load_modules(opts, modules)
    rows: list[dict[str, Any]] = []
    for sig in sorted(all_signals(), key=lambda s: s.name_or_none or ""):
        rows.append(
            {
                "signal": sig.name_or_none or "<unnamed>",
                "providing_args": sorted(sig.providing_args) if sig.providing_args else None,
                "receivers": describe_receivers(sig),
            }
        )
    if as_json:
        echo_json(rows)
        return
    lines = []
    for row in rows:
        args = ", ".join(row["providing_args"] or []) or "-"
        receivers = ", ".join(
            r["receiver"] + (f" (sender={r['sender']})" if r["sender"] else "")
            for r in row["receivers"]
        )
        lines.append((row["signal"], args, receivers or "-"))
    click.echo(table(["SIGNAL", "PROVIDING_ARGS", "RECEIVERS"], lines))


@click.command()
@pass_options
def ping(opts: Options) -> None:
    """Check connectivity: server version, round-trip time, settings that lose messages."""
    from ..client import mask_url

    with opts.client() as client:
        rtt = client.ping()
        version = client.server_info().get("redis_version", "?")
        click.echo(f"PONG from {mask_url(client.url)} (Redis {version}) in {rtt * 1000:.2f} ms")
        try:
            found = client.transport.setting("client-output-buffer-limit")
        except SigbrokerError:  # CONFIG is often refused on managed Redis
            click.echo(
                "Note: could not read client-output-buffer-limit (CONFIG GET refused); "
                "check its pubsub class with your provider (see the README)"
            )
            return
        warning = output_buffer_warning(found or "")
        if warning:
            click.echo(f"Warning: {warning}")


#: A subscriber's output buffer Redis should allow before it cuts a worker off (hard limit).
RECOMMENDED_PUBSUB_HARD_BYTES = 256 * 1024 * 1024
#: The soft limit (kept for the seconds given) that goes with it.
RECOMMENDED_PUBSUB_SOFT_BYTES = 64 * 1024 * 1024


def output_buffer_warning(setting: str) -> str | None:
    """A warning when ``client-output-buffer-limit``'s pubsub class cuts busy workers off.

    ``setting`` is the value of ``CONFIG GET client-output-buffer-limit``
    (``"normal 0 0 0 replica ... pubsub 33554432 8388608 60"``). Redis
    disconnects a subscriber whose unread messages pass the hard limit, or
    stay above the soft limit for its seconds; what was buffered for it is
    lost (workers count it as lost).
    """
    words = setting.split()
    try:
        at = words.index("pubsub")
        hard, soft, seconds = (int(w) for w in words[at + 1 : at + 4])
    except ValueError:
        return None
    hard_low = 0 < hard < RECOMMENDED_PUBSUB_HARD_BYTES
    soft_low = 0 < soft < RECOMMENDED_PUBSUB_SOFT_BYTES
    if not (hard_low or soft_low):
        return None
    mib = 1024 * 1024
    advice = f"{RECOMMENDED_PUBSUB_HARD_BYTES // mib}mb {RECOMMENDED_PUBSUB_SOFT_BYTES // mib}mb 60"
    limits = []
    if hard:
        limits.append(f"{hard // mib} MiB at once")
    if soft:
        limits.append(f"{soft // mib} MiB for {seconds}s")
    return (
        f"Redis cuts off a worker whose unread messages pass {' or '.join(limits)} "
        f"(client-output-buffer-limit pubsub {hard} {soft} {seconds}); its buffered messages "
        "are lost and counted as lost. For busy workers: CONFIG SET client-output-buffer-limit "
        f'"pubsub {advice}"'
    )
