"""Send the demo's sample signals once: ``python -m examples.emit`` (compose's ``emitter``).

The Redis comes from the environment (``SIGBROKER_URL``, else ``REDIS_URL``,
else localhost). Pub/sub delivers only to workers subscribed at that moment,
so this first waits (up to ``--wait`` seconds) for a worker to listen. The
exit code is 1 if some signal reached no worker.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from sigbroker import Client, Signal
from sigbroker.demo.emit import samples


def wait_for_workers(signals: Sequence[Signal], timeout_s: float) -> bool:
    """Wait until every signal's channel has a subscriber; False if ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    with Client() as client:
        wanted = {client.channel(signal) for signal in signals}
        while not wanted <= client.channels().keys():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Wait for a worker, send every sample, print how many workers got each one."""
    parser = argparse.ArgumentParser(prog="python -m examples.emit", description=__doc__)
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for a worker (default: 30)"
    )
    args = parser.parse_args(argv)
    sends = samples()
    if not wait_for_workers([signal for signal, _, _ in sends], args.wait):
        print(f"No worker listened within {args.wait:g}s; sending anyway", file=sys.stderr)
    missed = 0
    for signal, sender, kwargs in sends:
        count = signal.send(sender=sender, **kwargs)
        print(f"Sent {signal.name} to {count} worker{'' if count == 1 else 's'}", flush=True)
        missed += count == 0
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
