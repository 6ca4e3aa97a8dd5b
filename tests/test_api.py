"""The public surface and the module boundaries."""

from __future__ import annotations

import subprocess
import sys

import sigbroker
from sigbroker import errors


def test_all_is_exactly_the_public_surface() -> None:
    assert sorted(sigbroker.__all__) == sorted(
        ["Client", "Signal", "Worker", "__version__", "configure", "current_message", "receiver"]
    )
    for name in sigbroker.__all__:
        assert getattr(sigbroker, name) is not None


def test_error_tree() -> None:
    for cls in (
        errors.PayloadError,
        errors.InvalidMessage,
        errors.BrokerUnavailable,
        errors.ConfigurationError,
    ):
        assert issubclass(cls, errors.SigbrokerError)
        assert cls.__doc__
    assert issubclass(errors.PayloadError, ValueError)
    assert issubclass(errors.BrokerUnavailable, ConnectionError)


def test_signal_and_codec_work_without_redis() -> None:
    # The core never imports redis or the client, not even through the package,
    # and an eager send (sync and async receivers) does not either.
    code = (
        "import sys\n"
        "import sigbroker.signal, sigbroker.codec, sigbroker.naming, sigbroker.routing\n"
        "from sigbroker import Signal, receiver, configure\n"
        "configure(eager=True)\n"
        "ping = Signal()\n"
        "async def pong(**kwargs): return 2\n"
        "ping.connect(lambda **kwargs: 1, weak=False)\n"
        "ping.connect(pong)\n"
        "assert [r for _, r in ping.send(sender=None)] == [1, 2]\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('redis', 'sigbroker.client')))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
