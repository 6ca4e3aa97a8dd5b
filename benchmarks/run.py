"""Entry point of ``make bench``: ``.venv/bin/python benchmarks/run.py [--quick] [--no-celery]``.

Starts its own redis-server on a free loopback port, measures sigbroker side
by side with raw redis-py (and Celery, for context), prints the table and
writes ``benchmarks/README.md`` and ``benchmarks/results.json``. See
``benchmarks/README.md`` for the method of each figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Make the repository importable (this file runs as a script), then run the suite."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.suite import run

    return run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
