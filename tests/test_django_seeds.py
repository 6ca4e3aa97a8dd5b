"""The seed's six signal modules, sent with real Django objects, across real processes.

tests/django_project/seeds holds the signal modules of django-simple-history,
aldryn-accounts, django-easy-timezones, viewflow, django-registration and
django-cors-headers as they write them (``Signal(providing_args=[...])``,
from ``sigbroker`` instead of ``django.dispatch``), and one receiver on all
of them that records what it gets. Each test sends one of the modules'
signals as its project sends it (real ``auth.User`` rows, ``HttpRequest``
objects from ``RequestFactory``, a bound form, a raised exception) to one
worker subprocess started as ``manage.py sigbroker worker`` on a real
redis-server, and reads back what arrived. A tap on the namespace's channels
keeps the published bytes, in which no password hash, cookie, credential or
password field's value may appear.

The last tests run in a ``django.test.TestCase`` with
``@override_settings(SIGBROKER_EAGER=True)``: the same sends, no Redis.
"""

from __future__ import annotations

import datetime as dt
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sigbroker import config
from sigbroker.errors import PayloadError
from tests.app.recorder import read_records
from tests.helpers import WorkerProcess

pytest.importorskip("django")

from django.test import RequestFactory, TestCase, override_settings

from tests.django_setup import MANAGE, setup_project

PASSWORD = "correct horse battery staple"
COOKIE = "sessionid=cookie-secret-0123"
AUTHORIZATION = "Bearer token-secret-4567"
WHEN = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module", autouse=True)
def project_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Django on the test project's settings (once per session), the seeds app installed."""
    database = setup_project(tmp_path_factory.mktemp("django"))
    from django.apps import apps

    assert apps.is_installed("seeds")
    return database


class Wire:
    """A pattern subscription to every channel of a namespace: the bytes as published."""

    def __init__(self, url: str, namespace: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(f"{namespace}:*")
        self.pubsub.get_message(timeout=5)  # the psubscribe confirmation

    def take(self, quiet_s: float = 0.3) -> list[bytes]:
        """Everything published since the last call (waits until ``quiet_s`` pass silently)."""
        got = []
        while (message := self.pubsub.get_message(timeout=quiet_s)) is not None:
            if message["type"] == "pmessage":
                got.append(message["data"])
        return got

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture(scope="module")
def seeds_namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def seeds_worker(
    project_db: Path,
    redis_server: Any,
    seeds_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """One ``manage.py sigbroker worker`` for the module: autodiscovery finds seeds.receivers."""
    out = tmp_path_factory.mktemp("seeds-worker") / "worker.bin"
    worker = WorkerProcess(
        redis_server.url,
        seeds_namespace,
        out,
        entry=(str(MANAGE), "sigbroker"),
        modules=(),
        env={"SIGBROKER_TEST_DB": str(project_db)},
    )
    try:
        worker.wait_subscribed(f"{seeds_namespace}:seeds.viewflow.signals.task_failed")
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def wire(redis_server: Any, seeds_namespace: str) -> Iterator[Wire]:
    tap = Wire(redis_server.url, seeds_namespace)
    try:
        yield tap
    finally:
        tap.close()


@pytest.fixture
def send_to_worker(
    seeds_worker: WorkerProcess, redis_server: Any, seeds_namespace: str, wire: Wire
) -> Callable[..., tuple[dict[str, Any], bytes]]:
    """Send one signal to the worker; return what its receiver recorded and the bytes sent."""
    config.configure(url=redis_server.url, namespace=seeds_namespace)

    def send(signal: Any, sender: Any, **kwargs: Any) -> tuple[dict[str, Any], bytes]:
        before = len(seeds_worker.records())
        # The worker and the tap: a published send counts its subscribers.
        assert signal.send(sender=sender, **kwargs) == 2
        rows = seeds_worker.wait_records(before + 1)
        (data,) = wire.take()
        got = rows[before]
        assert got["receiver"] == signal.name
        return got, data

    return send


def new_user(name: str) -> Any:
    from django.contrib.auth.models import User

    user = User(username=f"{name}-{uuid.uuid4().hex[:6]}", email=f"{name}@example.com")
    user.set_password(PASSWORD)
    user.save()
    return User.objects.get(pk=user.pk)  # as a view has it: loaded from the database


def request_with_secrets(path: str, user: Any, *, method: str = "get", **extra: Any) -> Any:
    """A request as a view gets it: a session cookie, credentials, the user set by middleware."""
    from django.utils.functional import SimpleLazyObject

    request = getattr(RequestFactory(), method)(
        path,
        HTTP_COOKIE=COOKIE,
        HTTP_AUTHORIZATION=AUTHORIZATION,
        HTTP_ACCEPT_LANGUAGE="fr",
        **extra,
    )
    request.user = SimpleLazyObject(lambda: user)  # as AuthenticationMiddleware sets it
    return request


def assert_no_secrets(data: bytes, *users: Any) -> None:
    for secret in (PASSWORD, COOKIE, "cookie-secret-0123", "token-secret-4567"):
        assert secret.encode() not in data, secret
    for user in users:
        assert user.password.startswith("md5$")
        assert user.password.encode() not in data


def assert_user(got: dict[str, Any], user: Any) -> None:
    """A user arrived as an auth.User instance from the row's values, its password not sent."""
    assert got["type"] == "django.contrib.auth.models.User"
    assert got["pk"] == user.pk and got["adding"] is False
    fields = got["fields"]
    assert fields["username"] == user.username and fields["email"] == user.email
    assert fields["date_joined"] == user.date_joined and fields["is_active"] is True
    assert "password" not in fields and got["deferred"] == ["password"]


# -- across processes: one test per seed project --------------------------------------------


def test_simple_history_post_create_historical_record_arrives_with_its_models(
    send_to_worker: Callable[..., tuple[dict[str, Any], bytes]], wire: Wire
) -> None:
    from seeds.models import HistoricalPoll, Poll
    from seeds.simple_history.signals import (
        post_create_historical_record,
        pre_create_historical_record,
    )

    user = new_user("editor")
    poll = Poll.objects.create(question="Tea or coffee?", pub_date=WHEN)
    history = HistoricalPoll(
        id=poll.pk,
        question=poll.question,
        pub_date=poll.pub_date,
        history_date=WHEN,
        history_type="+",
        history_user=user,
        history_change_reason="imported",
    )
    args = {
        "instance": poll,
        "history_instance": history,
        "history_date": WHEN,
        "history_user": user,
        "history_change_reason": "imported",
        "using": "default",
    }
    # simple-history sends pre_create before it saves the record, for receivers
    # that change it in place: an in-process hook. Across processes the unsaved
    # record is refused at the call, and nothing is published.
    with pytest.raises(PayloadError, match=r"'history_instance' is an unsaved seeds\.Historic"):
        pre_create_historical_record.send(sender=HistoricalPoll, **args)
    assert wire.take() == []

    history.save()
    got, data = send_to_worker(post_create_historical_record, HistoricalPoll, **args)
    assert got["sender"] == "seeds.HistoricalPoll"
    assert got["instance"]["type"] == "seeds.models.Poll"
    assert got["instance"]["fields"] == {
        "id": poll.pk,
        "question": "Tea or coffee?",
        "pub_date": WHEN,
    }
    record = got["history_instance"]
    assert record["type"] == "seeds.models.HistoricalPoll" and record["adding"] is False
    assert record["pk"] == history.history_id
    assert record["fields"]["history_user_id"] == user.pk and record["fields"]["id"] == poll.pk
    assert record["fields"]["history_type"] == "+"
    assert_user(got["history_user"], user)
    assert got["history_date"] == WHEN and got["history_change_reason"] == "imported"
    assert got["using"] == "default"
    assert_no_secrets(data, user)


def test_aldryn_accounts_user_signed_up_arrives_with_the_user_and_the_bound_form(
    send_to_worker: Callable[..., tuple[dict[str, Any], bytes]],
) -> None:
    from django.contrib.auth.models import User
    from seeds.aldryn_accounts.signals import user_signed_up
    from seeds.forms import SignupForm

    form = SignupForm(
        data={
            "username": "ada",
            "email": "ada@example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
        }
    )
    assert form.is_valid()
    user = new_user("ada")
    got, data = send_to_worker(user_signed_up, User, user=user, form=form)
    assert got["sender"] == "auth.User"
    assert_user(got["user"], user)
    sent = got["form"]
    assert sent["type"] == "sigbroker.contrib.django.snapshots.FormSnapshot"
    assert sent["form_class"] == "seeds.forms.SignupForm"
    assert sent["is_bound"] is True and sent["valid"] is True and sent["errors"] == {}
    assert sent["data"] == {"username": "ada", "email": "ada@example.com"}
    assert_no_secrets(data, user)


def test_easy_timezones_detected_timezone_arrives_with_the_user_and_a_zoneinfo(
    send_to_worker: Callable[..., tuple[dict[str, Any], bytes]],
) -> None:
    from zoneinfo import ZoneInfo

    from django.contrib.auth import get_user_model
    from seeds.easy_timezones.signals import detected_timezone

    user = new_user("paris")
    request = request_with_secrets("/", user)
    # As its middleware sends it: request.user (a lazy object), a tz object
    # (the seeds app registers ZoneInfo with the codec, in every process).
    got, data = send_to_worker(
        detected_timezone,
        get_user_model(),
        instance=request.user,
        timezone=ZoneInfo("Europe/Paris"),
    )
    assert got["sender"] == "auth.User"
    assert_user(got["instance"], user)
    assert got["timezone"] == {"type": "zoneinfo.ZoneInfo", "key": "Europe/Paris"}
    assert_no_secrets(data, user)


class ApprovalRefused(Exception):
    """An error of the flow's own: the worker does not have (or import) this class."""


def test_viewflow_task_failed_arrives_with_models_and_the_exception_as_remote_error(
    send_to_worker: Callable[..., tuple[dict[str, Any], bytes]],
) -> None:
    from seeds.models import Process, Task
    from seeds.senders import HelloWorldFlow
    from seeds.viewflow.signals import task_failed

    owner = new_user("approver")
    process = Process.objects.create(flow_class="seeds.senders.HelloWorldFlow", status="STARTED")
    task = Task.objects.create(process=process, flow_task="approve", owner=owner, status="ERROR")
    try:
        raise ApprovalRefused("T-1 needs a manager", 3)
    except ApprovalRefused as exc:
        # As viewflow's activation sends it: the exception and the formatted traceback.
        got, data = send_to_worker(
            task_failed,
            HelloWorldFlow,
            process=process,
            task=task,
            exception=exc,
            traceback=traceback.format_exc(),
        )
    assert got["sender"] == "seeds.senders.HelloWorldFlow"
    assert got["process"]["type"] == "seeds.models.Process" and got["process"]["pk"] == process.pk
    assert got["process"]["fields"]["status"] == "STARTED"
    assert got["process"]["fields"]["created"] == process.created
    sent_task = got["task"]
    assert sent_task["type"] == "seeds.models.Task" and sent_task["pk"] == task.pk
    assert sent_task["fields"]["process_id"] == process.pk
    assert sent_task["fields"]["owner_id"] == owner.pk
    assert sent_task["fields"]["flow_task"] == "approve"
    assert got["exception"] == {
        "type": "sigbroker.errors.RemoteError",
        "remote": True,
        "type_name": "tests.test_django_seeds.ApprovalRefused",
        "args": ["T-1 needs a manager", 3],
        "message": "('T-1 needs a manager', 3)",
        "str": "ApprovalRefused: ('T-1 needs a manager', 3)",
    }
    assert 'raise ApprovalRefused("T-1 needs a manager", 3)' in got["traceback"]
    assert (
        "tests.test_django_seeds.ApprovalRefused: ('T-1 needs a manager', 3)" in (got["traceback"])
    )
    assert_no_secrets(data, owner)


def test_registration_user_registered_arrives_with_the_user_and_a_request_snapshot(
    send_to_worker: Callable[..., tuple[dict[str, Any], bytes]],
) -> None:
    from django.contrib.auth.models import AnonymousUser
    from seeds.registration.signals import user_registered
    from seeds.senders import RegistrationView

    user = new_user("newcomer")
    request = request_with_secrets(
        "/accounts/register/?next=/welcome/&next=/home/",
        user,
        method="post",
        data={"username": user.username, "password1": PASSWORD, "password2": PASSWORD},
    )
    request.user = AnonymousUser()  # registering: nobody is logged in yet
    got, data = send_to_worker(user_registered, RegistrationView, user=user, request=request)
    assert got["sender"] == "seeds.senders.RegistrationView"
    assert_user(got["user"], user)
    sent = got["request"]
    assert sent["type"] == "sigbroker.contrib.django.snapshots.RequestSnapshot"
    assert sent["method"] == "POST" and sent["path"] == "/accounts/register/"
    assert sent["full_path"] == "/accounts/register/?next=/welcome/&next=/home/"
    assert sent["GET"] == {"next": ["/welcome/", "/home/"]}
    assert sent["headers"]["Accept-Language"] == "fr"
    assert "Cookie" not in sent["headers"] and "Authorization" not in sent["headers"]
    assert sent["remote_addr"] == "127.0.0.1" and sent["secure"] is False
    assert sent["user"] is None  # anonymous
    assert_no_secrets(data, user)


def test_cors_headers_check_request_enabled_arrives_with_the_request_and_its_user(
    send_to_worker: Callable[..., tuple[dict[str, Any], bytes]],
) -> None:
    from seeds.corsheaders.signals import check_request_enabled

    user = new_user("api")
    request = request_with_secrets(
        "/api/orders/?page=2", user, HTTP_ORIGIN="https://shop.example.com", secure=True
    )
    got, data = send_to_worker(check_request_enabled, None, request=request)
    assert got["sender"] is None
    sent = got["request"]
    assert sent["type"] == "sigbroker.contrib.django.snapshots.RequestSnapshot"
    assert sent["method"] == "GET" and sent["full_path"] == "/api/orders/?page=2"
    assert sent["headers"]["Origin"] == "https://shop.example.com"
    assert "Cookie" not in sent["headers"] and "Authorization" not in sent["headers"]
    assert sent["secure"] is True
    assert_user(sent["user"], user)
    assert_no_secrets(data, user)


# -- eager mode from settings, in a Django TestCase -----------------------------------------


@override_settings(SIGBROKER_EAGER=True, SIGBROKER_URL="redis://127.0.0.1:1/0")
class EagerFromSettingsTests(TestCase):
    """``SIGBROKER_EAGER=True`` in settings: ``send`` is django.dispatch's, nothing is published.

    ``SIGBROKER_URL`` names a port where nothing listens: a send that tried
    to publish would fail.
    """

    out: Path

    @pytest.fixture(autouse=True)
    def _recorder(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.out = tmp_path / "eager.bin"
        monkeypatch.setenv("SIGBROKER_TEST_OUT", str(self.out))

    def test_send_returns_django_responses_and_the_receivers_ran(self) -> None:
        from seeds.corsheaders.signals import check_request_enabled
        from seeds.receivers import on_seed_signal
        from seeds.registration.signals import user_registered
        from seeds.senders import RegistrationView

        assert config.is_eager() is True
        user = new_user("eager")
        request = request_with_secrets("/api/?x=1", user)
        # django-cors-headers reads the responses: any truthy one allows the request.
        responses = check_request_enabled.send(sender=None, request=request)
        assert responses == [(on_seed_signal, True)]
        assert any(allowed for _, allowed in responses)
        assert user_registered.send(sender=RegistrationView, user=user, request=request) == [
            (on_seed_signal, True)
        ]
        cors, registered = read_records(self.out)
        # In-process: the receiver got the real request, not a snapshot, and the sender class.
        assert cors["receiver"] == "seeds.corsheaders.signals.check_request_enabled"
        assert cors["request"]["type"] == "django.core.handlers.wsgi.WSGIRequest"
        assert cors["request"]["headers"]["Cookie"] == COOKIE
        assert registered["sender"] == "seeds.senders.RegistrationView"
        assert registered["sender_is_class"] is True
        assert registered["user"]["pk"] == user.pk

    def test_simple_history_pre_create_works_as_an_in_process_hook(self) -> None:
        from seeds.models import HistoricalPoll, Poll
        from seeds.simple_history.signals import pre_create_historical_record

        poll = Poll.objects.create(question="Eager?", pub_date=WHEN)
        history = HistoricalPoll(
            id=poll.pk, question=poll.question, pub_date=WHEN, history_date=WHEN, history_type="+"
        )

        def add_reason(sender: Any, history_instance: Any, **kwargs: Any) -> None:
            history_instance.history_change_reason = "set by a receiver"

        pre_create_historical_record.connect(add_reason)
        try:
            pre_create_historical_record.send(
                sender=HistoricalPoll,
                instance=poll,
                history_instance=history,  # unsaved: fine, nothing is encoded
                history_date=WHEN,
                history_user=None,
                history_change_reason=None,
                using="default",
            )
        finally:
            pre_create_historical_record.disconnect(add_reason)
        assert history.history_change_reason == "set by a receiver"
        (got,) = read_records(self.out)
        assert got["history_instance"]["adding"] is True

    def test_send_on_commit_runs_the_receivers_when_the_test_commits(self) -> None:
        from django.contrib.auth.models import User
        from django.db import transaction
        from seeds.aldryn_accounts.signals import password_changed

        user = new_user("oncommit")
        with self.captureOnCommitCallbacks(execute=True) as callbacks, transaction.atomic():
            assert password_changed.send_on_commit(sender=User, user=user) is None
            assert read_records(self.out) == []
        assert len(callbacks) == 1
        (got,) = read_records(self.out)
        assert got["receiver"] == "seeds.aldryn_accounts.signals.password_changed"
        assert got["user"]["pk"] == user.pk

    @override_settings(SIGBROKER_EAGER=False)
    def test_without_eager_the_same_send_publishes(self) -> None:
        # The session's redis-server, a fresh namespace and a subscriber of our own.
        from seeds.viewflow.signals import flow_started

        url, namespace = self.redis_url, f"t{uuid.uuid4().hex[:12]}"
        with override_settings(SIGBROKER_URL=url, SIGBROKER_NAMESPACE=namespace):
            assert config.is_eager() is False
            tap = Wire(url, namespace)
            try:
                assert (
                    flow_started.send(sender="seeds.HelloWorldFlow", process=None, task=None) == 1
                )
                (data,) = tap.take()
            finally:
                tap.close()
        assert b"seeds.viewflow.signals.flow_started" in data
        assert read_records(self.out) == []  # published, not run here

    redis_url: str

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:
        self.redis_url = redis_url
