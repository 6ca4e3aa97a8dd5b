"""The ``sigbroker`` command under gevent: ``python -m tests.gevent_sigbroker ARGS``.

Monkey-patches everything first, as a gevent application does (gunicorn's
gevent worker, say), then runs the ordinary CLI.
"""

from gevent import monkey

monkey.patch_all()

from sigbroker.cli import main  # noqa: E402 - must come after the patching

if __name__ == "__main__":
    main()
