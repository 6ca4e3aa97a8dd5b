"""The ``sigbroker`` command: run workers, emit signals, look at the broker.

This module parses arguments and prints; the work is done by the client, the
worker and the dev server. Errors are one line on stderr with exit code 1
(``--debug`` shows the traceback); usage errors exit with 2.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal as os_signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import click

from . import __version__
from .errors import ConfigurationError, SigbrokerError

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Options:
    """The global options, passed to every command through the click context."""

    url: str | None
    namespace: str | None
    secrets: tuple[bytes, ...] | None
    debug: bool

    def client(self) -> Any:
        """Build the client these options describe."""
        from .client import Client

        return Client(self.url, namespace=self.namespace, secret=self.secrets)


class _Group(click.Group):
    """Turns every unexpected exception into a one-line error (exit code 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            opts = ctx.find_object(Options)
            if opts is not None and opts.debug:
                raise
            raise click.ClickException(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, SigbrokerError):
        return text
    return f"{type(exc).__name__}: {text}"


pass_options = click.make_pass_decorator(Options)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", help="Redis URL (default: $SIGBROKER_URL, $REDIS_URL, localhost).")
@click.option("--namespace", help="Channel and key prefix (default: $SIGBROKER_NAMESPACE).")
@click.option(
    "--secret-file",
    metavar="PATH",
    help="File of HMAC secrets, one per line, the first signs (default: $SIGBROKER_SECRET_FILE).",
)
@click.option(
    "--secret",
    help="HMAC secret; comma-separated to rotate. Visible to other users: prefer --secret-file.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="sigbroker")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str | None,
    namespace: str | None,
    secret_file: str | None,
    secret: str | None,
    debug: bool,
) -> None:
    """Django-style signals across processes, over Redis."""
    ctx.obj = Options(
        url=url, namespace=namespace, secrets=_secrets(secret, secret_file), debug=debug
    )


def _secrets(secret: str | None, secret_file: str | None) -> tuple[bytes, ...] | None:
    # None: the environment's (SIGBROKER_SECRET or SIGBROKER_SECRET_FILE).
    from .config import normalize_secrets, read_secret_file

    if secret is not None and secret_file is not None:
        raise click.UsageError("give --secret or --secret-file, not both")
    if secret_file is not None:
        return read_secret_file(secret_file)
    if secret is None:
        return None
    click.echo(
        "Warning: --secret is visible to other users of this machine (ps, /proc);"
        " use --secret-file or SIGBROKER_SECRET_FILE",
        err=True,
    )
    return normalize_secrets([s.strip() for s in secret.split(",")])


# -- helpers ------------------------------------------------------------------


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules named by ``-A``, with the current directory on sys.path."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import {name!r}: {exc}") from exc


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Render rows as a left-aligned text table with a header line."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def parse_arguments(pairs: Sequence[str], json_text: str | None) -> dict[str, Any]:
    """Build keyword arguments from ``-a key=value`` pairs and ``--json``."""
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


# -- commands -------------------------------------------------------------------


def app_option(help_text: str) -> Callable[[F], F]:
    """The ``-A MODULE`` option (repeatable, required) of ``worker`` and ``inspect``."""
    return click.option(
        "-A", "--app", "modules", multiple=True, required=True, metavar="MODULE", help=help_text
    )


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@cli.command()
@app_option("Module that connects receivers (repeatable).")
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Threads calling receivers; 1 keeps each signal's messages in order.",
)
@click.option(
    "--shutdown-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a warm stop (SIGTERM/SIGINT) gets to run what was received; then exit 1.",
)
@click.option(
    "--max-age",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="With a secret: reject messages sent longer ago than this (seconds) as replays.",
)
@click.option(
    "--loglevel",
    "-l",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@pass_options
def worker(
    opts: Options,
    modules: tuple[str, ...],
    concurrency: int,
    shutdown_timeout: float,
    max_age: float,
    loglevel: str,
) -> None:
    """Run the receivers of MODULE for signals sent by any process."""
    from .broker import Worker

    logging.basicConfig(level=loglevel.upper(), format=LOG_FORMAT, stream=sys.stderr)
    import_modules(modules)
    w = Worker(
        opts.client(),
        concurrency=concurrency,
        shutdown_timeout_s=shutdown_timeout,
        max_age_s=max_age,
    )
    received = _install_stop_handlers(w.stop, w.stop_now)
    w.run()
    if w.abandoned:
        # The worker logged what it abandoned and removed its heartbeat; the
        # threads still in receivers can not be joined, so leave without
        # waiting for them: 128+signum after a second signal, else 1.
        sys.stderr.flush()
        os._exit(128 + received[1] if len(received) > 1 else 1)


def _install_stop_handlers(stop: Callable[[], object], stop_now: Callable[[], object]) -> list[int]:
    # First SIGTERM/SIGINT: warm stop (the worker enforces --shutdown-timeout
    # itself). Second: stop now, logging what is abandoned. A third exits on
    # the spot, in case even that hangs. The handler only sets flags: no lock,
    # no thread, no I/O, so it is safe wherever it interrupts, gevent's hub
    # included. Returns the signals received, in order.
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            stop()
        elif len(received) == 2:
            stop_now()
        else:
            os._exit(128 + signum)

    os_signal.signal(os_signal.SIGTERM, handler)
    os_signal.signal(os_signal.SIGINT, handler)
    return received


@cli.command()
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
@pass_options
def send(
    opts: Options,
    signal_name: str,
    sender: str | None,
    pairs: tuple[str, ...],
    json_text: str | None,
) -> None:
    """Send SIGNAL_NAME with the given arguments; print how many workers got it."""
    kwargs = parse_arguments(pairs, json_text)
    with opts.client() as client:
        count = client.send(signal_name, sender, **kwargs)
    noun = "worker" if count == 1 else "workers"
    click.echo(f"Sent {signal_name} to {count} {noun}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@pass_options
def channels(opts: Options, as_json: bool) -> None:
    """List the live channels of the namespace and their subscriber counts."""
    from .broker import INTERNAL_PREFIX

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
        click.echo(json.dumps(rows))
    elif not rows:
        click.echo(f"No live channels in namespace {client.namespace!r}")
    else:
        click.echo(
            table(
                ["CHANNEL", "SIGNAL", "SUBSCRIBERS"],
                [(r["channel"], r["signal"], r["subscribers"]) for r in rows],
            )
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@pass_options
def workers(opts: Options, as_json: bool) -> None:
    """List the live workers, from their heartbeats."""
    from .broker import list_workers

    with opts.client() as client:
        found = list_workers(client)
    if as_json:
        click.echo(json.dumps(found))
        return
    if not found:
        click.echo(f"No live workers in namespace {client.namespace!r}")
        return
    now = time.time()
    rows = [
        (
            w.get("id", "?"),
            w.get("host", "?"),
            w.get("pid", "?"),
            _duration(now - float(w.get("started_at", now))),
            len(w.get("signals", [])),
            w.get("processed", 0),
            w.get("failed", 0),
            w.get("rejected", 0),
            w.get("lost", "?"),  # a worker of an older version does not count it
            w.get("resubscribes", 0),
            f"{_duration(now - float(w.get('last_seen', now)))} ago",
        )
        for w in found
    ]
    headers = [
        "ID",
        "HOST",
        "PID",
        "UPTIME",
        "SIGNALS",
        "PROCESSED",
        "FAILED",
        "REJECTED",
        "LOST",
        "RESUBSCRIBES",
        "LAST SEEN",
    ]
    click.echo(table(headers, rows))


@cli.command()
@click.argument("signal_names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@pass_options
def listen(opts: Options, signal_names: tuple[str, ...], as_json: bool, count: int | None) -> None:
    """Decode and print messages as they pass (all signals of the namespace by default)."""
    from .listen import Listener

    with opts.client() as client:
        listener = Listener(client, signal_names, as_json=as_json, count=count, echo=click.echo)
        with contextlib.suppress(KeyboardInterrupt):
            listener.run()


@cli.command()
@app_option("Module that defines signals or connects receivers (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@pass_options
def inspect(opts: Options, modules: tuple[str, ...], as_json: bool) -> None:
    """List the signals MODULE defines and their receivers (no Redis needed)."""
    from .routing import describe_receivers
    from .signal import all_signals

    import_modules(modules)
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
        click.echo(json.dumps(rows))
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


@cli.command()
@pass_options
def ping(opts: Options) -> None:
    """Check connectivity: server version, round-trip time, settings that lose messages."""
    from .client import mask_url

    with opts.client() as client:
        rtt = client.ping()
        version = client.server_info().get("redis_version", "?")
        click.echo(f"PONG from {mask_url(client.url)} (Redis {version}) in {rtt * 1000:.2f} ms")
        try:
            found = client.call(lambda r: r.config_get("client-output-buffer-limit"))
        except SigbrokerError:  # CONFIG is often refused on managed Redis
            click.echo(
                "Note: could not read client-output-buffer-limit (CONFIG GET refused); "
                "check its pubsub class with your provider (see the README)"
            )
            return
        warning = output_buffer_warning(str(found.get("client-output-buffer-limit", "")))
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


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=6379,
    show_default=True,
    help="Port on 127.0.0.1; 0 picks a free one.",
)
def server(port: int) -> None:
    """Run a Redis for development (redis-server if installed, else fakeredis)."""
    from .devserver import DevServer

    dev = DevServer(port)
    with dev:
        click.echo(f"Redis ({dev.backend}) listening on {dev.url}; Ctrl-C to stop", err=True)
        click.echo(dev.url)
        try:
            while dev.running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            click.echo("Stopping", err=True)
        else:
            raise SigbrokerError(f"the {dev.backend} server exited")


@cli.command()
@pass_options
def demo(opts: Options) -> None:
    """Run the whole thing end to end (starts an embedded Redis unless one is configured)."""
    from .demo import run_demo

    sys.exit(run_demo(url=opts.url, echo=click.echo))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sigbroker`` console script."""
    cli.main(args=argv, prog_name="sigbroker")
