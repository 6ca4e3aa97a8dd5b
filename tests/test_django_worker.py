"""``manage.py sigbroker worker`` and ``send_on_commit``, across real processes.

The project is tests/django_project: a sender app (``shop``: the ``Order``
model and its signals) and a receiver app (``billing``: receivers found by
autodiscovery, which record what they get and what the database shows them).
The test process and a worker subprocess started as ``python
tests/django_project/manage.py sigbroker worker`` share a SQLite file
database and a real redis-server. The database-restart test runs on
PostgreSQL (127.0.0.1:5432) and is skipped, saying why, when it is not there.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sigbroker import Client, Signal, config, receiver
from sigbroker.codec import Codec
from sigbroker.errors import PayloadError
from tests.helpers import ROOT, WorkerProcess, wait_for

pytest.importorskip("django")

from tests.django_setup import MANAGE, setup_project


@pytest.fixture(scope="session")
def project_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Django set up in this process on the project's settings, with a migrated SQLite file."""
    return setup_project(tmp_path_factory.mktemp("django"))


@pytest.fixture
def django_worker(
    project_db: Path, start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> Callable[..., WorkerProcess]:
    """Start ``manage.py sigbroker worker`` (no ``-A`` unless given) on the test's namespace."""
    config.configure(url=redis_url, namespace=namespace)

    def start(*, modules: tuple[str, ...] = (), env: dict[str, str] | None = None) -> WorkerProcess:
        worker = start_worker(
            entry=(str(MANAGE), "sigbroker"),
            modules=modules,
            env={"SIGBROKER_TEST_DB": str(project_db), **(env or {})},
        )
        worker.wait_subscribed(f"{namespace}:shop.signals.order_placed")
        return worker

    return start


def _new_order(reference: str) -> Any:
    from shop.models import Order

    return Order.objects.create(reference=reference, total=Decimal("9.90"))


def _place(order: Any, *, on_commit: bool) -> Any:
    from shop.models import Order
    from shop.signals import order_placed

    send = order_placed.send_on_commit if on_commit else order_placed.send
    return send(Order, order_id=order.pk, reference=order.reference, total=order.total)


def _mark(label: str) -> int:
    from shop.signals import marker

    return int(marker.send("test", label=label))


def test_the_worker_finds_the_apps_receivers_without_dash_a(
    django_worker: Callable[..., WorkerProcess],
) -> None:
    # billing.receivers is imported by autodiscovery (shop has no receivers
    # module and billing no signals module: both are skipped); -A adds
    # tests.app.receivers on top.
    from tests.app.signals import User, user_registered

    worker = django_worker(modules=("tests.app.receivers",))
    (imported,) = [line for line in worker.output().splitlines() if "Django: imported" in line]
    assert "shop.signals" in imported and "billing.receivers" in imported
    assert "shop.receivers" not in imported and "billing.signals" not in imported
    assert _place(_new_order("A-1"), on_commit=False) == 1
    (got,) = worker.wait_records(1, receiver="billing.on_order_placed")
    assert got["reference"] == "A-1" and got["total"] == "9.90" and got["row_exists"] is True
    assert user_registered.send(sender=User, user="ann", request=None) == 1
    worker.wait_records(1, receiver="on_user_class")


def test_send_on_commit_publishes_after_commit_and_the_row_is_there(
    django_worker: Callable[..., WorkerProcess],
) -> None:
    from django.db import transaction

    worker = django_worker()
    with transaction.atomic():
        order = _new_order("C-1")
        assert _place(order, on_commit=True) is None  # not sent yet: no count to return
        # A plain send goes out at once; once the worker has handled it,
        # anything published before it has been handled too (one reader,
        # concurrency 1, one channel order per publisher): the order is not.
        assert _mark("inside the transaction") == 1
        worker.wait_records(1, receiver="billing.on_marker")
        assert [r["receiver"] for r in worker.records()] == ["billing.on_marker"]
    (got,) = worker.wait_records(1, receiver="billing.on_order_placed")
    assert got["order_id"] == order.pk
    assert got["row_exists"] is True and got["row_reference"] == "C-1"


def test_send_on_commit_sends_nothing_on_rollback(
    django_worker: Callable[..., WorkerProcess],
) -> None:
    from django.db import transaction

    worker = django_worker()

    class Abort(Exception):
        pass

    # One sequenced message first, so that the worker follows this process's
    # sequence on the channel: a rolled-back message that took a number would
    # show as a gap.
    assert _place(_new_order("R-0"), on_commit=False) == 1
    with pytest.raises(Abort), transaction.atomic():
        _place(_new_order("R-1"), on_commit=True)
        raise Abort
    with transaction.atomic():
        with pytest.raises(Abort), transaction.atomic():  # a savepoint rolled back
            _place(_new_order("R-2"), on_commit=True)
            raise Abort
        kept = _new_order("R-3")
        _place(kept, on_commit=True)
    assert _mark("after the rollbacks") == 1
    worker.wait_records(1, receiver="billing.on_marker")
    placed = [
        r["reference"] for r in worker.records() if r["receiver"] == "billing.on_order_placed"
    ]
    assert placed == ["R-0", "R-3"]
    # The rolled-back messages took no sequence number: the worker counts no loss.
    assert worker.warm_stop()
    last = worker.output().splitlines()[-1]
    assert "stopped" in last and "'lost': 0" in last and "'processed': 3" in last, last


def test_a_plain_send_inside_atomic_can_arrive_before_the_row(
    django_worker: Callable[..., WorkerProcess],
) -> None:
    # Why send_on_commit exists (the README's on-commit section).
    from django.db import transaction

    worker = django_worker()
    with transaction.atomic():
        order = _new_order("E-1")
        assert _place(order, on_commit=False) == 1
        (early,) = worker.wait_records(1, receiver="billing.on_order_placed")
    assert early["order_id"] == order.pk and early["row_exists"] is False


def test_send_on_commit_outside_a_transaction_publishes_at_once(
    django_worker: Callable[..., WorkerProcess],
) -> None:
    from shop.signals import order_cancelled

    worker = django_worker()
    assert order_cancelled.send_on_commit("shop", order_id=41) == 1
    (got,) = worker.wait_records(1, receiver="billing.on_order_cancelled")
    assert got["order_id"] == 41


def test_a_durable_signal_of_the_project_reaches_a_manage_py_worker_with_a_group(
    project_db: Path, start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    import redis
    from billing.durable import invoice_due
    from shop.models import Order

    config.configure(url=redis_url, namespace=namespace)
    worker = start_worker(
        entry=(str(MANAGE), "sigbroker"),
        modules=("billing.durable",),
        extra=("--group", "billing"),
        env={"SIGBROKER_TEST_DB": str(project_db)},
    )
    stream = config.default_client(Client).channel(invoice_due)
    r = redis.Redis.from_url(redis_url)
    wait_for(lambda: r.exists(stream) and r.xinfo_groups(stream), 30, "the billing group")
    order = _new_order("D-1")
    assert invoice_due.send(Order, order=order) == 1  # one service: the group
    (got,) = worker.wait_records(1, receiver="billing.open_invoice")
    assert got["order_pk"] == order.pk and got["reference"] == "D-1" and got["is_instance"]
    assert (got["group"], got["deliveries"]) == ("billing", 1)
    assert got["sender"] == "shop.models.Order"


def test_send_on_commit_of_a_durable_signal_appends_to_its_stream_at_commit(
    project_db: Path, real_redis: Any, namespace: str
) -> None:
    import redis
    from django.db import transaction

    config.configure(url=real_redis.url, namespace=namespace)
    refunded = Signal(providing_args=["order_id"], name="tests.django.refunded", durable=True)
    key = config.default_client(Client).channel(refunded)
    r = redis.Redis.from_url(real_redis.url)
    r.xgroup_create(key, "billing", "$", mkstream=True)
    with transaction.atomic():
        assert refunded.send_on_commit("shop", order_id=7) is None
        assert r.xlen(key) == 0  # not before the commit
    with contextlib.suppress(RuntimeError), transaction.atomic():
        refunded.send_on_commit("shop", order_id=8)
        raise RuntimeError("rolled back")
    ((_, fields),) = r.xrange(key)
    assert Codec().decode(fields[b"d"]).kwargs == {"order_id": 7}


def test_send_on_commit_refuses_a_bad_payload_at_the_call(project_db: Path) -> None:
    from django.db import connection, transaction
    from shop.signals import order_cancelled

    config.configure(url="redis://127.0.0.1:1/0")  # never reached: nothing is published
    with transaction.atomic():
        with pytest.raises(PayloadError, match="order_id"):
            order_cancelled.send_on_commit("shop", order_id=object())
        with pytest.raises(PayloadError, match="missing"):
            order_cancelled.send_on_commit("shop")
        assert connection.run_on_commit == []  # nothing deferred


def test_send_on_commit_in_eager_mode_runs_the_receivers_on_commit(project_db: Path) -> None:
    from django.db import transaction

    config.configure(eager=True)
    cancelled = Signal(providing_args=["order_id"], name="tests.django.cancelled")
    got: list[int] = []

    @receiver(cancelled)
    def on_cancel(sender: object, order_id: int, **kwargs: Any) -> str:
        got.append(order_id)
        return "seen"

    with transaction.atomic():
        assert cancelled.send_on_commit("shop", order_id=1) is None
        assert got == []
    assert got == [1]
    with pytest.raises(ValueError), transaction.atomic():
        cancelled.send_on_commit("shop", order_id=2)
        raise ValueError
    assert got == [1]
    assert cancelled.send_on_commit("shop", order_id=3) == [(on_cancel, "seen")]
    with pytest.raises(PayloadError):
        cancelled.send_on_commit("shop", order=3)


def test_send_on_commit_without_django_says_so() -> None:
    code = (
        "import sys; sys.modules['django'] = None\n"
        "from sigbroker import Signal\n"
        "from sigbroker.errors import ConfigurationError\n"
        "s = Signal(name='x')\n"
        "try:\n"
        "    s.send_on_commit('me')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "needs Django" in out.stdout and "sigbroker[django]" in out.stdout


def _manage(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def test_manage_py_sigbroker_reads_the_projects_settings(
    project_db: Path, redis_url: str, namespace: str
) -> None:
    env = {
        "SIGBROKER_TEST_DB": str(project_db),
        "SIGBROKER_TEST_REDIS_URL": redis_url,
        "SIGBROKER_TEST_NAMESPACE": namespace,
    }
    ping = _manage("sigbroker", "ping", env=env)
    assert ping.returncode == 0, ping.stderr
    assert redis_url.rsplit("/", 1)[0] in ping.stdout
    usage = _manage("sigbroker", "--help", env=env)
    assert usage.returncode == 0 and "manage.py sigbroker" in usage.stdout
    assert "worker" in usage.stdout
    # inspect finds the apps' signals without -A too.
    inspect = _manage("sigbroker", "inspect", "--json", env=env)
    assert inspect.returncode == 0, inspect.stderr
    assert "billing.receivers.on_order_placed" in inspect.stdout
    # Plain sigbroker still insists on -A.
    plain = subprocess.run(
        [sys.executable, "-m", "sigbroker", "inspect"], capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 2 and "Missing option '-A'" in plain.stderr


def test_call_command_runs_the_cli_in_process(
    project_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from django.core.management import CommandError, call_command

    call_command("sigbroker", "inspect", "--json")
    assert "billing.receivers.on_order_placed" in capsys.readouterr().out
    with pytest.raises(CommandError, match="sigbroker no-such-command failed"):
        call_command("sigbroker", "no-such-command")


def test_a_receivers_module_that_fails_to_import_is_an_error(project_db: Path) -> None:
    env = {"SIGBROKER_TEST_DB": str(project_db), "SIGBROKER_TEST_BROKEN_RECEIVERS": "1"}
    result = _manage("sigbroker", "inspect", env=env)
    assert result.returncode != 0
    assert "no_such_module_for_the_test" in result.stderr


# -- the database restart -------------------------------------------------------


def _postgres() -> Any:
    """A psycopg connection to the server's ``postgres`` database, or a skip saying why."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        return psycopg.connect(
            host="127.0.0.1",
            port=5432,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=3,
        )
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")


@pytest.fixture
def pg_database() -> Iterator[tuple[Any, str]]:
    """A fresh ``test_*`` database, dropped after the test (its connections forced out)."""
    admin = _postgres()
    name = f"test_sigbroker_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin, name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_the_worker_survives_a_database_restart_between_two_messages(
    project_db: Path,
    pg_database: tuple[Any, str],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    namespace: str,
) -> None:
    # The worker keeps its connection across messages (CONN_MAX_AGE=None).
    # Killing its backend is what a database restart or failover does to it;
    # close_old_connections() before the next message (with Django's health
    # check) replaces the dead connection, and the receiver's queries work.
    admin, name = pg_database
    env = {"SIGBROKER_TEST_PG": name}
    migrate = _manage("migrate", "--verbosity", "0", env=env)
    assert migrate.returncode == 0, migrate.stderr
    config.configure(url=redis_url, namespace=namespace)
    worker = start_worker(entry=(str(MANAGE), "sigbroker"), modules=(), env=env)
    worker.wait_subscribed(f"{namespace}:shop.signals.marker")

    assert _mark("first") == 1
    (first,) = worker.wait_records(1, receiver="billing.on_marker", label="first")
    pid = first["backend_pid"]
    assert isinstance(pid, int)
    # The connection outlives the message: the same backend is still there, idle.
    assert (
        admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]
        == 1
    )

    assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True
    wait_for(
        lambda: (
            admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()[0]
            == 0
        ),
        10,
        "the worker's backend to end",
    )

    order_placed_count = _place_remote_order(admin, name)
    assert _mark("second") == 1
    (second,) = worker.wait_records(1, receiver="billing.on_marker", label="second")
    assert isinstance(second["backend_pid"], int) and second["backend_pid"] != pid
    # And a query through the ORM, on the new connection.
    from shop.signals import order_placed

    assert (
        order_placed.send(
            "shop", order_id=order_placed_count, reference="PG-1", total=Decimal("1.00")
        )
        == 1
    )
    (got,) = worker.wait_records(1, receiver="billing.on_order_placed")
    assert got["row_exists"] is True and got["row_reference"] == "PG-1" and got["orders"] == 1
    assert "Error calling" not in worker.output()


def _place_remote_order(admin: Any, name: str) -> int:
    # Insert the row in the worker's database through another connection.
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname=name, autocommit=True
    ) as conn:
        row = conn.execute(
            "INSERT INTO shop_order (reference, total) VALUES ('PG-1', 1.00) RETURNING id"
        ).fetchone()
    return int(row[0])
