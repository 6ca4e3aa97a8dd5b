"""``python -m sigbroker``: the same as the ``sigbroker`` command."""

from .cli import main

main()
