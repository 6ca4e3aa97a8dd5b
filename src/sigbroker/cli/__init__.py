"""The ``sigbroker`` command: run workers, emit signals, look at the broker.

This package parses arguments and prints; the work is done by the client, the
worker and the dev server. Errors are one line on stderr with exit code 1
(``--debug`` shows the traceback); usage errors exit with 2.

Here: the group, its global options and its error handling. The commands live
in one module per concern: :mod:`~sigbroker.cli.worker` (with the OS signal
handlers), :mod:`~sigbroker.cli.send`, :mod:`~sigbroker.cli.inspection`
(``channels``, ``workers``, ``listen``, ``inspect``, ``ping``),
:mod:`~sigbroker.cli.streams` (``streams``, ``dlq``: durable signals) and
:mod:`~sigbroker.cli.dev` (``server``, ``demo``). They share
:mod:`~sigbroker.cli.context` and never import this package's namespace, so
the imports have no cycle. Nothing here imports redis: ``--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..errors import SigbrokerError
from .context import Framework, Options
from .dev import demo, server
from .inspection import channels, inspect, listen, ping, workers
from .send import send
from .streams import dlq, streams
from .worker import worker

__all__ = ["cli", "main"]


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
    # main() may hand a Framework (manage.py sigbroker) in as the initial object.
    framework = ctx.obj if isinstance(ctx.obj, Framework) else None
    ctx.obj = Options(
        url=url,
        namespace=namespace,
        secrets=_secrets(secret, secret_file),
        debug=debug,
        framework=framework,
    )


def _secrets(secret: str | None, secret_file: str | None) -> tuple[bytes, ...] | None:
    # None: the environment's (SIGBROKER_SECRET or SIGBROKER_SECRET_FILE).
    from ..config import normalize_secrets, read_secret_file

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


for _command in (
    worker,
    send,
    channels,
    listen,
    workers,
    streams,
    dlq,
    inspect,
    ping,
    server,
    demo,
):
    cli.add_command(_command)


def main(
    argv: Sequence[str] | None = None,
    *,
    prog_name: str = "sigbroker",
    framework: Framework | None = None,
) -> None:
    """Entry point of the ``sigbroker`` console script; exits the process (click's way).

    ``manage.py sigbroker`` calls it with its own ``prog_name`` and a
    :class:`~sigbroker.cli.context.Framework` that discovers the project's
    receivers and tends its database connections around each message.
    """
    cli.main(args=argv, prog_name=prog_name, obj=framework)
