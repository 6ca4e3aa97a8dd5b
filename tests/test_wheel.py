"""The package as users install it: ``sigbroker demo`` from a wheel in a fresh venv.

The slowest test of the suite (it builds a wheel and installs it, with its
dependencies from PyPI, into a new virtual environment), and the only one
that needs the network. ``pytest tests/test_wheel.py`` runs it alone;
``--ignore tests/test_wheel.py`` leaves it out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sigbroker.demo.runner import NO_REDIS
from tests.helpers import ROOT

#: Lines the demo prints when it ran end to end (see test_demo.py for the details).
DEMO_LINES = [
    "(redis-server started for the demo)",
    "Worker pid ",
    "(sigbroker worker -A sigbroker.demo.receivers) subscribed to 5 signals",
    "  [worker]     user = User(id=42, username='ada', email='ada@example.com')",
    "  [worker]     total = Decimal('59.80')",
    "  [worker]     payment_id = UUID('6f1c2a52-3d4e-4b8a-9c1f-2b7d5e8a9f10')",
    "  Sent sigbroker.demo.signals.order_shipped to 1 worker",
    "  [worker] order_shipped by warehouse: UPS tracking 1Z999AA1 mailed for order #1002",
    "Latency from send() to the receiver in the worker: 200 messages",
    "Stopped the worker (SIGTERM, exit code 0) and Redis",
]
#: Time allowed to build the wheel, make the venv and install into it.
INSTALL_TIMEOUT_S = 300


def run(
    args: list[str | Path], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output; fail the test on a non-zero exit."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with sigbroker installed from a wheel built from this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the wheel is made of, so the build writes no
    # build/ or egg-info into the checkout.
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source], env=env)
    (wheel,) = dist.glob("sigbroker-*.whl")
    home = work / "venv"
    run([sys.executable, "-m", "venv", home], env=env)
    run([home / "bin" / "python", "-m", "pip", "install", "-q", wheel], env=env)
    return home


def clean_env(path: str) -> dict[str, str]:
    """The environment of a user's shell: nothing points at this checkout or its Redis."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env = {k: v for k, v in env.items() if not k.startswith("SIGBROKER_")}
    return {**env, "PATH": path}


@pytest.mark.timeout(INSTALL_TIMEOUT_S * 2)
def test_demo_runs_from_a_wheel_in_a_fresh_venv(venv: Path, tmp_path: Path) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        if os.environ.get("SIGBROKER_REQUIRE_REDIS") == "1":
            pytest.fail("SIGBROKER_REQUIRE_REDIS=1 but no redis-server is on PATH")
        pytest.skip("no redis-server on PATH")
    bin_dir = venv / "bin"
    path = os.pathsep.join([str(bin_dir), str(Path(redis_server).parent), os.defpath])
    where = run(
        [bin_dir / "python", "-c", "import sigbroker.demo.receivers as m; print(m.__file__)"],
        cwd=tmp_path,
        env=clean_env(path),
    )
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout

    done = subprocess.run(
        [bin_dir / "sigbroker", "demo"],
        cwd=tmp_path,  # outside the checkout: no examples/ to be found
        env=clean_env(path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    for line in DEMO_LINES:
        assert line in done.stdout, done.stdout


@pytest.mark.timeout(INSTALL_TIMEOUT_S * 2)
def test_demo_from_a_wheel_without_redis_says_how_to_get_one(venv: Path, tmp_path: Path) -> None:
    # The fresh venv has no fakeredis (not a dependency); its bin/ has no redis-server.
    done = subprocess.run(
        [venv / "bin" / "sigbroker", "demo"],
        cwd=tmp_path,
        env=clean_env(str(venv / "bin")),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr == f"Error: {NO_REDIS}\n"
