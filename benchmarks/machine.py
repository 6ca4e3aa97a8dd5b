"""The header of the results: what machine and which versions produced them."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


def load_average() -> str:
    """The 1-minute load average (other work on the machine makes the numbers noisier)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def describe(redis_server: str) -> dict[str, str]:
    """Machine and versions, in the order the header lists them."""
    system = f"{platform.system()} {platform.release()}"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {_cpu_model()}, {system}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "sigbroker": f"{_version('sigbroker')} (git {_commit()})",
        "redis-py": _version("redis"),
        "hiredis": _version("hiredis"),
        "msgpack": _version("msgpack"),
        "Redis server": redis_server,
        "Celery": f"{_version('celery')} (kombu {_version('kombu')})",
    }
