"""``sigbroker server`` and ``sigbroker demo``: a Redis for development, and the tour."""

from __future__ import annotations

import sys
import time

import click

from ..errors import SigbrokerError
from .context import Options, pass_options

__all__ = ["demo", "server"]


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=6379,
    show_default=True,
    help="Port on 127.0.0.1; 0 picks a free one.",
)
def server(port: int) -> None:
    """Run a Redis for development (redis-server if installed, else fakeredis)."""
    from ..devserver import DevServer

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


@click.command()
@pass_options
def demo(opts: Options) -> None:
    """Run the whole thing end to end (starts an embedded Redis unless one is configured)."""
    from ..demo import run_demo

    sys.exit(run_demo(url=opts.url, echo=click.echo))
