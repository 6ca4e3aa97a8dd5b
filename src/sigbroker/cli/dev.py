"""``sigbroker server`` and ``sigbroker demo``: a Redis for development, and the tour."""

from __future__ import annotations

import signal as os_signal
import sys
import time
from types import FrameType

import click

from ..errors import SigbrokerError
from .context import Options, pass_options

__all__ = ["demo", "server"]

#: What stops ``sigbroker server``.
STOP_SIGNALS = (os_signal.SIGINT, os_signal.SIGTERM)


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

    # SIGINT and SIGTERM stop it (the handler only notes the signal), also
    # where SIGINT was ignored when the process started (a background job),
    # and redis-server is stopped with it rather than left behind.
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    dev = DevServer(port)
    with dev:
        previous = {s: os_signal.signal(s, on_signal) for s in STOP_SIGNALS}
        try:
            click.echo(f"Redis ({dev.backend}) listening on {dev.url}; Ctrl-C to stop", err=True)
            click.echo(dev.url)
            while dev.running and not stopping:
                time.sleep(0.2)
        finally:
            for signum, handler in previous.items():
                os_signal.signal(signum, handler)
        if not stopping:
            raise SigbrokerError(f"the {dev.backend} server exited")
        click.echo("Stopping", err=True)


@click.command()
@pass_options
def demo(opts: Options) -> None:
    """Run the whole thing end to end (starts an embedded Redis unless one is configured)."""
    from ..demo import run_demo

    sys.exit(run_demo(url=opts.url, echo=click.echo))
