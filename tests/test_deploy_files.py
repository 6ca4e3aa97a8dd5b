"""docker-compose.yml, Dockerfile and .dockerignore agree with the code.

No Docker engine runs here or in CI, so nothing is built: these tests check
what ``docker build`` and ``docker compose up`` rely on. Every service has its
image or build, command, environment and start order; every ``sigbroker``
command they run parses with the real click CLI; every module named by ``-A``
or ``-m`` is importable; every file the Dockerfile copies exists.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from sigbroker.cli import cli
from tests.helpers import ROOT

SERVICE_URL = "redis://redis:6379/0"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, Any] = compose["services"]
    return found


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def check_command(args: list[str]) -> None:
    """Fail unless ``args`` would start: a sigbroker command, a ``python -m`` module,
    a Django project's ``python path/manage.py COMMAND``, or ``sh -c`` of those joined by ``&&``.
    """
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), args
    if args[0] == "sigbroker":
        check_sigbroker(args[1:])
    elif args[:2] == ["sh", "-c"] and len(args) == 3:
        for part in args[2].split("&&"):
            check_command(shlex.split(part))
    elif args[0] == "python" and args[1].endswith("manage.py"):
        check_manage_py(Path(args[1]), args[2:])
    else:
        assert args[:2] == ["python", "-m"], f"unexpected command {args}"
        assert importlib.util.find_spec(args[2]) is not None, f"no module {args[2]!r}"


def check_sigbroker(args: list[str]) -> None:
    """Parse ``args`` with the real CLI (without running it) and check the -A modules."""
    group_ctx = cli.make_context("sigbroker", list(args))
    # A group stops parsing at the command's name: what it left is the command's own.
    rest = args[len(args) - len(group_ctx.args) - 1 :]
    name = rest[0]
    assert name in cli.commands, f"sigbroker has no command {name!r}"
    command = cli.commands[name]
    try:
        ctx = command.make_context(name, rest[1:], parent=group_ctx)
    except click.UsageError as exc:
        pytest.fail(f"`sigbroker {' '.join(args)}`: {exc.format_message()}")
    for module in ctx.params.get("modules", ()):
        assert importlib.util.find_spec(module) is not None, f"-A {module}: not importable"


def check_manage_py(manage: Path, args: list[str]) -> None:
    """Fail unless ``manage.py`` exists (in the image: copied from here) and has the command."""
    assert (ROOT / manage).is_file(), f"no {manage} in the repository"
    name = args[0]
    if name == "sigbroker":
        check_sigbroker(args[1:])
        return
    project = (ROOT / manage).parent
    own = list(project.glob(f"*/management/commands/{name}.py"))
    django_command = importlib.util.find_spec(f"django.core.management.commands.{name}")
    assert own or django_command is not None, f"{manage} has no command {name!r}"


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_redis_worker_and_emitter(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", "worker", "emitter", "django-worker", "django-web"}


def test_redis_service_is_official_and_healthchecked(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    test = redis["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "redis-cli" in " ".join(test)
    assert "ping" in " ".join(test)
    check_retries = redis["healthcheck"].get("retries", 3)
    assert isinstance(check_retries, int) and check_retries >= 1


@pytest.mark.parametrize("name", ["worker", "emitter", "django-worker", "django-web"])
def test_app_services_are_built_here_and_reach_redis(services: dict[str, Any], name: str) -> None:
    service = services[name]
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert (ROOT / context / "Dockerfile").is_file()
    assert environment(service)["SIGBROKER_URL"] == SERVICE_URL
    host = SERVICE_URL.split("//")[1].split(":")[0]
    assert host in services, "SIGBROKER_URL must name the redis service"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    check_command(service["command"])


def test_worker_runs_the_example_receivers_and_restarts(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["command"][:2] == ["sigbroker", "worker"]
    assert "examples.receivers" in worker["command"]
    assert worker["restart"] == "on-failure"


def test_emitter_starts_after_the_worker(services: dict[str, Any]) -> None:
    emitter = services["emitter"]
    assert emitter["command"] == ["python", "-m", "examples.emit"]
    assert emitter["depends_on"]["worker"]["condition"] == "service_started"
    assert emitter.get("restart", "no") == "no"


def test_django_example_services_run_its_manage_py(services: dict[str, Any]) -> None:
    worker, web = services["django-worker"], services["django-web"]
    assert worker["command"] == ["python", "examples/django/manage.py", "sigbroker", "worker"]
    assert worker["restart"] == "on-failure"
    # The one-shot migrates its database, then places an order once the worker listens.
    steps = [shlex.split(part) for part in web["command"][2].split("&&")]
    assert [step[2] for step in steps] == ["migrate", "place_order"]
    assert web["depends_on"]["django-worker"]["condition"] == "service_started"
    assert web.get("restart", "no") == "no"
    for service in (worker, web):
        # Writable for the image's user, which owns nothing under /app.
        assert environment(service)["DATABASE"].startswith("/tmp/")


def test_check_command_refuses_a_missing_manage_py_or_command() -> None:
    with pytest.raises(AssertionError):
        check_command(["python", "examples/nope/manage.py", "migrate"])
    with pytest.raises(AssertionError):
        check_command(["python", "examples/django/manage.py", "place_ordr"])
    with pytest.raises(AssertionError):
        check_command(["sh", "-c", "python examples/django/manage.py migrate && sigbroker wroker"])
    check_command(["python", "examples/django/manage.py", "sigbroker", "worker"])


def test_dockerfile_base_image_install_and_user() -> None:
    rows = dockerfile()
    assert rows[0][0] == "FROM" and rows[0][1].split()[0] == "python:3.11-slim"
    runs = [args for word, args in rows if word == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    extras = [set(m.split(",")) for r in installs for m in re.findall(r"\.\[([a-z,]+)\]", r)]
    # hiredis for every service, Django for examples/django's.
    assert any({"hiredis", "django"} <= found for found in extras), runs
    words = [word for word, _ in rows]
    users = [args for word, args in rows if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    # Installing needs root; running does not: USER comes after the install, before CMD.
    last_install = max(i for i, (w, a) in enumerate(rows) if w == "RUN" and "pip install" in a)
    assert last_install < words.index("USER") < words.index("CMD")


def test_dockerfile_copies_existing_files_the_build_needs() -> None:
    copies = []
    for word, args in dockerfile():
        if word in ("COPY", "ADD"):
            parts = [p for p in args.split() if not p.startswith("--")]
            copies.append((parts[:-1], parts[-1]))
    sources = [s for srcs, _ in copies for s in srcs]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # setuptools reads these while `pip install .` builds the package.
    for needed in ["pyproject.toml", "src", project["readme"]]:
        assert needed in sources, f"the Dockerfile must COPY {needed}"
    dests = {Path(src).name: dest for srcs, dest in copies for src in srcs}
    # The worker imports -A modules from its working directory.
    assert dests["examples"].rstrip("/") in ("examples", "./examples")


def test_dockerfile_default_command_exists() -> None:
    rows = dockerfile()
    cmd = json.loads(next(args for word, args in reversed(rows) if word == "CMD"))
    check_command(cmd)


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    for needed in ("src", "examples", "pyproject.toml"):
        assert needed not in ignored


def test_check_sigbroker_rejects_unknown_commands_and_options() -> None:
    # The checker itself must fail on what the real CLI would refuse.
    with pytest.raises(AssertionError):
        check_sigbroker(["wroker", "-A", "examples.receivers"])
    with pytest.raises(pytest.fail.Exception):
        check_sigbroker(["worker", "-A", "examples.receivers", "--no-such-option"])
    with pytest.raises(AssertionError):
        check_sigbroker(["worker", "-A", "examples.nope"])
    check_sigbroker(["--url", SERVICE_URL, "worker", "-A", "examples.receivers"])
