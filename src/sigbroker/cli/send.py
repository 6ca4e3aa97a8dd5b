"""``sigbroker send``: send a signal by name, with arguments from the command line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..durable import DEFAULT_MAXLEN, stream_key
from ..transport.base import Stream
from .context import Options, pass_options

__all__ = ["parse_arguments", "send"]


@click.command()
@click.argument("signal_name")
@click.option("--sender", default=None, help="Sender reference, e.g. accounts.models.User.")
@click.option(
    "-a",
    "--arg",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="An argument; VALUE is parsed as JSON when it parses, else a string.",
)
@click.option("--json", "json_text", default=None, metavar="OBJECT", help="Arguments as JSON.")
@click.option(
    "--durable",
    is_flag=True,
    help="Append to the signal's stream (the default when the stream exists).",
)
@pass_options
def send(
    opts: Options,
    signal_name: str,
    sender: str | None,
    pairs: tuple[str, ...],
    json_text: str | None,
    durable: bool,
) -> None:
    """Send SIGNAL_NAME with the given arguments; print how many workers (or groups) got it.

    A durable signal (one whose stream exists, or with --durable) is appended
    to its stream, which keeps at least as many entries as it holds now.
    """
    kwargs = parse_arguments(pairs, json_text)
    with opts.client() as client:
        data = client.encode(signal_name, sender, kwargs)
        key = stream_key(client.namespace, signal_name)
        held = client.call(lambda r: r.xlen(key) if r.type(key) in (b"stream", "stream") else None)
        if durable or held is not None:
            maxlen = max(DEFAULT_MAXLEN, (held or 0) + 1)
            count = client.publish(Stream(key, maxlen), data)
            noun = "group" if count == 1 else "groups"
        else:
            count = client.publish(client.channel(signal_name), data)
            noun = "worker" if count == 1 else "workers"
    click.echo(f"Sent {signal_name} to {count} {noun}")


def parse_arguments(pairs: Sequence[str], json_text: str | None) -> dict[str, Any]:
    """Build keyword arguments from ``-a key=value`` pairs and ``--json``."""
    import json  # deferred: --help stays fast

    kwargs: dict[str, Any] = {}
    if json_text is not None:
        try:
            loaded = json.loads(json_text)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--json")
        kwargs.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-a")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    return kwargs
