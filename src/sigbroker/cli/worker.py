"""``sigbroker worker``: run receivers, with the process's only OS signal handlers.

The library never installs signal handlers; this command does. The first
SIGTERM/SIGINT asks the worker for a warm stop, the second for a stop now,
a third exits on the spot. The handlers only set flags, so they are safe
wherever they interrupt, gevent's hub included.
"""

from __future__ import annotations

import logging
import os
import signal as os_signal
import sys
from collections.abc import Callable
from types import FrameType

import click

from ..durable import CLAIM_IDLE_S, MAX_DELIVERIES
from .context import Options, app_option, load_modules, pass_options

__all__ = ["LOG_FORMAT", "worker"]

#: The worker's log lines on stderr (``--loglevel`` sets the level).
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@click.command()
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
    "--group",
    default=None,
    metavar="NAME",
    help="Consumer group of durable signals (one per service; its workers share the messages).",
)
@click.option(
    "--from-start",
    is_flag=True,
    help="A group this worker creates starts at the streams' first retained entry, not the end.",
)
@click.option(
    "--max-deliveries",
    default=MAX_DELIVERIES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Attempts of a durable receiver on one message before it is dead-lettered.",
)
@click.option(
    "--claim-idle",
    default=CLAIM_IDLE_S,
    show_default=True,
    type=click.FloatRange(min=10),
    help="Seconds a durable message may sit pending before another worker claims it.",
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
    group: str | None,
    from_start: bool,
    max_deliveries: int,
    claim_idle: float,
    loglevel: str,
) -> None:
    """Run the receivers of MODULE for signals sent by any process."""
    from ..broker import Worker

    logging.basicConfig(level=loglevel.upper(), format=LOG_FORMAT, stream=sys.stderr)
    loaded = load_modules(opts, modules)
    framework = opts.framework
    if framework is not None:
        logging.getLogger(__name__).info(
            "%s: imported %s", framework.name, ", ".join(loaded) or "no module"
        )
    w = Worker(
        opts.client(),
        concurrency=concurrency,
        shutdown_timeout_s=shutdown_timeout,
        max_age_s=max_age,
        before_message=framework.before_message if framework is not None else None,
        after_message=framework.after_message if framework is not None else None,
        group=group,
        from_start=from_start,
        max_deliveries=max_deliveries,
        claim_idle_s=claim_idle,
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
