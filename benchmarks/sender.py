"""The sending figures in a fresh process: ``python -m benchmarks.sender URL [options]``.

Figures 1, 2, 7, 8, 9 and the send cost of 10 measure code in the process that runs them, so each
runs in a clean interpreter that has loaded nothing else (the orchestrating
process holds Celery, subprocess handles and results). The rows go to stdout
as JSON. The variant without hiredis is this same module started with
``sys.modules["hiredis"] = None`` (see :data:`WITHOUT_HIREDIS`), so that
``import hiredis`` fails for redis-py and sigbroker alike.
"""

from __future__ import annotations

import argparse
import json
import sys

import redis.utils

from benchmarks import durable
from benchmarks.codec_bench import codec_rows
from benchmarks.django_bench import django_rows
from benchmarks.harness import Row
from benchmarks.send import batch_rows, send_rows
from benchmarks.threads import thread_rows

#: ``python -c`` code that starts this module with hiredis unimportable.
WITHOUT_HIREDIS = (
    "import runpy, sys; sys.modules['hiredis'] = None; "
    "runpy.run_module('benchmarks.sender', run_name='__main__', alter_sys=True)"
)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line: the Redis URL, which figures, and how long to run them."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sender")
    parser.add_argument("url")
    parser.add_argument("--figures", default="send,batch,threads,codec")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--send-calls", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--per-thread", type=int, default=1000)
    parser.add_argument("--codec-calls", type=int, default=5000)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    """Run the chosen figures and print ``{"hiredis": bool, "rows": [...]}``."""
    args = parse(argv)
    figures = set(args.figures.split(","))
    hiredis = bool(redis.utils.HIREDIS_AVAILABLE)
    rows: list[Row] = []
    if "codec" in figures:
        rows += codec_rows(rounds=args.rounds, calls=args.codec_calls)
    if "send" in figures:
        rows += send_rows(
            args.url, rounds=args.rounds, calls=args.send_calls, hiredis=hiredis, full=hiredis
        )
    if "batch" in figures:
        rows += batch_rows(args.url, rounds=args.rounds, batches=args.batches)
    if "threads" in figures:
        rows += thread_rows(
            args.url, rounds=args.rounds, per_thread=args.per_thread, calls=args.send_calls
        )
    if "durable" in figures:
        rows += durable.send_rows(
            args.url, rounds=args.rounds, calls=args.send_calls, hiredis=hiredis
        )
    if "django" in figures:  # last: it configures Django in this process
        rows += django_rows(
            args.url, rounds=args.rounds, calls=args.send_calls, codec_calls=args.codec_calls
        )
    json.dump({"hiredis": hiredis, "rows": [row.to_json() for row in rows]}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
