"""Test what users install: the delivery, CLI, fault and Django tests on two dependency sets.

``lowest``: the declared floor of every runtime dependency (``redis``,
``msgpack``, ``click``, ``hiredis``), pinned from ``pyproject.toml``, and
Django's lowest supported LTS (the ``django`` extra's floor, 4.2: its newest
patch release), on the lowest supported Python. ``newest``: the newest
releases, Django included, on the highest supported Python. The package is
installed with its ``django`` extra in every session. Each runs with hiredis
and, in the ``*_no_hiredis`` twin, with hiredis uninstalled after the package
(it is a dependency, so pip always brings it): the pure-Python parser path
that users get where hiredis does not import.

The package is installed from a built wheel, not in editable mode, so the
tests import what ``pip install sigbroker`` gives. Interpreters come from
pyenv (its ``python3.X`` shims may not be on PATH) or else from PATH; a
missing interpreter is an error, never a skipped session.

    nox                       # all four sessions (``make nox``)
    nox -s newest_no_hiredis  # one
    nox -s lowest -- -k acl   # arguments after ``--`` go to pytest
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the dev extra installs tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent

#: Lowest Python that ``requires-python`` admits.
LOWEST_PYTHON = "3.10"
#: Highest Python the package supports and CI tests.
HIGHEST_PYTHON = "3.13"

#: The suite's tests of what crosses processes and Redis: one place to add a file.
TEST_FILES = (
    "tests/test_delivery.py",
    "tests/test_cli.py",
    "tests/test_faults.py",
    "tests/test_signal_remote.py",
    "tests/test_acl.py",
    "tests/test_client.py",
    "tests/test_embedded.py",
    "tests/test_no_hiredis.py",
    "tests/test_warm_stop.py",
    "tests/test_fork.py",
    "tests/test_no_duplicates.py",
    "tests/test_loss.py",
    "tests/test_mask.py",
    "tests/test_testing.py",
    "tests/test_group_commit.py",
    "tests/test_durable_units.py",
    "tests/test_cli_streams.py",
    "tests/test_durable.py",
)
#: The Django app's tests: payloads in-process, ``manage.py sigbroker worker`` and
#: ``send_on_commit`` across processes (tests/django_project), the worker's message hooks.
DJANGO_TEST_FILES = (
    "tests/test_django_payloads.py",
    "tests/test_django_worker.py",
    "tests/test_message_hooks.py",
)
#: What those test files import besides the package (the dev extra is much heavier);
#: gevent: test_warm_stop.py stops a worker running under gevent monkey-patching;
#: psycopg: test_django_worker.py's database-restart test, on PostgreSQL at
#: 127.0.0.1:5432 when it is reachable (skipped, saying why, when it is not).
TEST_REQUIREMENTS = ("pytest", "pytest-timeout", "gevent", "psycopg[binary]")
#: The extra every session installs the package with (Django comes with it).
EXTRA = "django"
#: pytest options of every session: stop at the first failure, quiet.
#: The chaos tests (kills, heartbeats running out) run once, in make test: they
#: exercise the worker's own protocol, the same on every dependency version.
PYTEST_OPTIONS = ("-x", "-q", "-p", "no:cacheprovider", "-m", "not chaos")

nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lowest", "lowest_no_hiredis", "newest", "newest_no_hiredis"]


def interpreter(version: str) -> str:
    """The pyenv interpreter for ``version`` ("3.10"), newest patch; else its name on PATH."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        out = subprocess.run(
            [pyenv, "versions", "--bare"], capture_output=True, text=True, check=False
        ).stdout
        patches = [v for v in out.split() if re.fullmatch(rf"{re.escape(version)}\.\d+", v)]
        if patches:
            newest = max(patches, key=lambda v: int(v.rsplit(".", 1)[1]))
            prefix = subprocess.run(
                [pyenv, "prefix", newest], capture_output=True, text=True, check=True
            ).stdout.strip()
            return str(Path(prefix) / "bin" / f"python{version}")
    return f"python{version}"


def dependency_floors() -> list[str]:
    """``name==floor`` for every runtime dependency; each must declare a ``>=`` floor."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for line in project["dependencies"]:
        req = Requirement(line)
        floors = [s.version for s in req.specifier if s.operator == ">="]
        if len(floors) != 1:
            raise SystemExit(f"pyproject.toml: {line!r} needs exactly one >= floor for nox")
        pins.append(f"{req.name}=={floors[0]}")
    return pins


def extra_floors(extra: str) -> dict[str, str]:
    """The declared floor of every requirement of ``extra``: ``{"Django": "4.2"}``.

    An extra's floor names a release series (``Django>=4.2``: the 4.2 LTS); the
    sessions pin it as ``Django==4.2.*``, its newest patch release, since the
    series' patch releases are where its security and bug fixes go.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for line in project["optional-dependencies"][extra]:
        req = Requirement(line)
        found = [s.version for s in req.specifier if s.operator == ">="]
        if len(found) != 1:
            raise SystemExit(f"pyproject.toml: {line!r} needs exactly one >= floor for nox")
        floors[req.name] = found[0]
    return floors


#: Run in the session before the tests: print what is installed, and fail if the
#: interpreter (a reused venv may be stale), hiredis or Django's release series (when
#: the session names one) is not what the session says.
CHECK_ENVIRONMENT = """
import importlib.metadata as md, importlib.util, sys
import sigbroker
python, hiredis, django = sys.argv[1], sys.argv[2] == "yes", sys.argv[3]
versions = " ".join(f"{p}=={md.version(p)}" for p in ("redis", "msgpack", "click", "Django"))
has_hiredis = importlib.util.find_spec("hiredis") is not None
print(f"Python {sys.version.split()[0]} {versions} hiredis={has_hiredis} {sigbroker.__file__}")
if f"{sys.version_info[0]}.{sys.version_info[1]}" != python:
    sys.exit(f"this venv runs Python {sys.version.split()[0]}, not {python}: delete .nox")
if has_hiredis != hiredis:
    sys.exit(f"hiredis importable: {has_hiredis}, wanted: {hiredis}")
if django and not md.version("Django").startswith(django + "."):
    sys.exit(f"Django {md.version('Django')} installed, wanted {django}.*")
"""


def run_tests(session: nox.Session, python: str, *, hiredis: bool, django: str = "") -> None:
    """Uninstall hiredis unless wanted, check the environment, run the tests.

    ``django``: the release series the session must have ("4.2"), or "" for any.
    """
    if not hiredis:
        session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", "hiredis")
    session.run("python", "-c", CHECK_ENVIRONMENT, python, "yes" if hiredis else "no", django)
    session.run("pytest", *PYTEST_OPTIONS, *TEST_FILES, *DJANGO_TEST_FILES, *session.posargs)


def install_lowest(session: nox.Session) -> None:
    """The package with every runtime dependency at its declared floor, Django's LTS floor."""
    series = [f"{name}=={floor}.*" for name, floor in extra_floors(EXTRA).items()]
    session.install(f".[{EXTRA}]", *dependency_floors(), *series, *TEST_REQUIREMENTS)


def install_newest(session: nox.Session) -> None:
    """The package with the newest release of every dependency."""
    session.install("--upgrade", "--upgrade-strategy", "eager", f".[{EXTRA}]", *TEST_REQUIREMENTS)


@nox.session(python=interpreter(LOWEST_PYTHON))
def lowest(session: nox.Session) -> None:
    """Lowest declared dependencies on the lowest Python, with hiredis."""
    install_lowest(session)
    run_tests(session, LOWEST_PYTHON, hiredis=True, django=extra_floors(EXTRA)["Django"])


@nox.session(python=interpreter(LOWEST_PYTHON))
def lowest_no_hiredis(session: nox.Session) -> None:
    """Lowest declared dependencies on the lowest Python, hiredis uninstalled."""
    install_lowest(session)
    run_tests(session, LOWEST_PYTHON, hiredis=False, django=extra_floors(EXTRA)["Django"])


@nox.session(python=interpreter(HIGHEST_PYTHON))
def newest(session: nox.Session) -> None:
    """Newest dependencies on the highest Python, with hiredis."""
    install_newest(session)
    run_tests(session, HIGHEST_PYTHON, hiredis=True)


@nox.session(python=interpreter(HIGHEST_PYTHON))
def newest_no_hiredis(session: nox.Session) -> None:
    """Newest dependencies on the highest Python, hiredis uninstalled."""
    install_newest(session)
    run_tests(session, HIGHEST_PYTHON, hiredis=False)
