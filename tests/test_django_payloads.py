"""The Django app in-process: settings, model senders by label, and the Django payloads.

Django is configured once for this module (SQLite in a temporary directory,
``django.contrib.auth``, ``django.contrib.contenttypes``, the app and the
small ``tests.django_shop`` app). Payloads go through the real codec
(``sigbroker.codec.Codec``) and end to end through ``sigbroker.testing.in_memory()``,
whose worker decodes them in its own thread. The tests of each payload kind
are named after it: ``test_model_instance_*``, ``test_request_*``,
``test_form_*``, ``test_bad_input_*``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402

from sigbroker import Client, Signal, config, configure  # noqa: E402
from sigbroker.codec import Codec  # noqa: E402
from sigbroker.errors import ConfigurationError, InvalidMessage, PayloadError  # noqa: E402
from sigbroker.naming import sender_reference  # noqa: E402
from sigbroker.testing import in_memory  # noqa: E402
from tests.django_setup import setup_project  # noqa: E402

# The seed's django-registration signal, as the issue sends it.
user_registered = Signal(providing_args=["user", "request"])
order_placed = Signal(providing_args=["order"])

SIGNAL = "tests.test_django_payloads.order_placed"
PASSWORD = "correct horse battery staple"
COOKIE = "sessionid=cookie-secret-0123"
AUTHORIZATION = "Bearer token-secret-4567"
PROXY_AUTHORIZATION = "Basic proxy-secret-89ab"


@pytest.fixture(scope="module", autouse=True)
def django_project(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Django on tests/django_project's settings (once per session): tests.django_shop too."""
    setup_project(tmp_path_factory.mktemp("django"))
    from django.apps import apps

    assert apps.is_installed("sigbroker.contrib.django")
    assert apps.is_installed("tests.django_shop")


@pytest.fixture
def shop() -> Any:
    from tests.django_shop import models

    return models


@pytest.fixture
def user() -> Any:
    from django.contrib.auth.models import User

    created = User(username=f"ada-{User.objects.count()}", email="ada@example.com")
    created.set_password(PASSWORD)
    created.save()
    return User.objects.get(pk=created.pk)  # as a view has it: loaded from the database


@pytest.fixture
def order(shop: Any) -> Any:
    customer = shop.Customer.objects.create(name="Grace")
    created = shop.Order.objects.create(
        customer=customer,
        total=Decimal("9.90"),
        placed_at=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
        receipt="receipts/r-1.pdf",
        internal_note="note-secret-cdef",
    )
    return shop.Order.objects.get(pk=created.pk)


@pytest.fixture
def all_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement run from now on, in any thread (the in-memory worker has its own)."""
    from django.db.backends import utils

    seen: list[str] = []
    original = utils.CursorWrapper._execute

    def counting(self: Any, sql: str, *args: Any) -> Any:
        seen.append(sql)
        return original(self, sql, *args)

    monkeypatch.setattr(utils.CursorWrapper, "_execute", counting)
    return seen


def round_trip(**kwargs: Any) -> tuple[bytes, dict[str, Any]]:
    """The message for ``kwargs`` and the arguments decoded from it, with no query on the way."""
    from django.db import connection

    codec = Codec()
    with CaptureQueriesContext(connection) as captured:
        data = codec.pack(SIGNAL, None, kwargs)
        decoded = codec.decode(data).kwargs
    assert captured.captured_queries == []
    return data, decoded


def request_factory() -> Any:
    from django.test import RequestFactory

    return RequestFactory()


def secret_request(user: Any = None, path: str = "/signup/?next=%2Fhome&tag=a&tag=b") -> Any:
    from django.utils.functional import SimpleLazyObject

    request = request_factory().get(
        path,
        secure=True,
        REMOTE_ADDR="203.0.113.9",
        HTTP_USER_AGENT="pytest/1",
        HTTP_COOKIE=COOKIE,
        HTTP_AUTHORIZATION=AUTHORIZATION,
        HTTP_PROXY_AUTHORIZATION=PROXY_AUTHORIZATION,
    )
    if user is not None:
        request.user = SimpleLazyObject(lambda: user)  # as AuthenticationMiddleware sets it
    return request


# -- settings -----------------------------------------------------------------


def test_settings_come_between_configure_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIGBROKER_NAMESPACE", "from-env")
    monkeypatch.setenv("SIGBROKER_URL", "redis://env.invalid:6379/0")
    config.reset()
    assert config.settings().namespace == "from-env"
    with override_settings(SIGBROKER_NAMESPACE="from-settings", SIGBROKER_SECRET=["new", "old"]):
        current = config.settings()
        assert current.namespace == "from-settings"
        assert current.secrets == (b"new", b"old")
        assert current.url == "redis://env.invalid:6379/0"  # not set: the environment's
        client = Client()
        try:
            assert client.namespace == "from-settings"
            assert client.codec.signed
        finally:
            client.close()
        configure(namespace="explicit")
        assert config.settings().namespace == "explicit"
        assert config.settings().secrets == (b"new", b"old")
    assert config.settings().namespace == "explicit"  # configure() still wins
    config.reset()
    assert config.settings().namespace == "from-env"


def test_settings_eager_runs_receivers_in_process() -> None:
    calls: list[dict[str, Any]] = []

    def on_order(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "ran"

    order_placed.connect(on_order)
    try:
        with override_settings(SIGBROKER_EAGER=True):
            assert config.is_eager()
            assert order_placed.send(sender="store.Order", order=1) == [(on_order, "ran")]
        assert not config.is_eager()
    finally:
        order_placed.disconnect(on_order)
    assert calls == [{"signal": order_placed, "sender": "store.Order", "order": 1}]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("SIGBROKER_EAGER", "yes"), ("SIGBROKER_URL", 6379), ("SIGBROKER_SECRET", [1])],
)
def test_settings_of_the_wrong_type_are_refused(setting: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=setting), override_settings(**{setting: value}):
        pass
    config.settings()  # restored


def test_settings_exclude_fields_names_must_exist() -> None:
    from sigbroker.contrib.django.settings import check_excluded_fields

    with (
        override_settings(SIGBROKER_EXCLUDE_FIELDS={"store.Order": ["internal_notes"]}),
        pytest.raises(ConfigurationError, match=r"store\.Order has no field 'internal_notes'"),
    ):
        check_excluded_fields()
    with override_settings(SIGBROKER_EXCLUDE_FIELDS={"billing.Invoice": ["anything"]}):
        check_excluded_fields()  # a model of another service: not checked here
    with (
        override_settings(SIGBROKER_EXCLUDE_FIELDS={"store.Order": "internal_note"}),
        pytest.raises(ConfigurationError, match="must be a list of field names"),
    ):
        check_excluded_fields()


# -- senders ------------------------------------------------------------------


def test_model_senders_travel_as_their_label(shop: Any) -> None:
    from django.contrib.auth.models import User

    assert sender_reference(shop.Order) == "store.Order"
    assert sender_reference(User) == "auth.User"
    assert sender_reference(Codec) == "sigbroker.codec.Codec"  # other classes: module.QualName


def test_model_senders_are_labels_for_receivers_connected_as_models_load(shop: Any) -> None:
    from sigbroker.routing import describe_receivers

    [row] = describe_receivers(shop.order_shipped)
    assert row["sender"] == "store.Order"


def test_model_senders_match_receivers_connected_with_the_class(order: Any, shop: Any) -> None:
    got: list[tuple[object, object]] = []

    def by_class(sender: object, order: object, **kwargs: Any) -> None:
        got.append((sender, order))

    def by_label(sender: object, order: object, **kwargs: Any) -> None:
        got.append((sender, "label"))

    order_placed.connect(by_class, sender=shop.Order)
    order_placed.connect(by_label, sender="store.Order")
    try:
        with in_memory() as broker:
            assert order_placed.send(sender=shop.Order, order=order) == 1
    finally:
        order_placed.disconnect(by_class, sender=shop.Order)
        order_placed.disconnect(by_label, sender="store.Order")
    assert [m.sender for m in broker.sent] == ["store.Order"]
    assert got == [(shop.Order, order), (shop.Order, "label")]
    assert broker.stats.failed == 0


# -- model instances ----------------------------------------------------------


def test_model_instance_round_trips_without_a_query(order: Any, shop: Any) -> None:
    from django.db import connection

    data, decoded = round_trip(order=order)
    arrived = decoded["order"]
    assert type(arrived) is shop.Order
    assert arrived == order
    assert arrived.customer_id == order.customer_id
    assert arrived.total == Decimal("9.90")
    assert arrived.placed_at == order.placed_at
    assert arrived.receipt.name == "receipts/r-1.pdf"
    assert arrived._state.adding is False
    assert arrived._state.db == "default"
    assert arrived.get_deferred_fields() == {"internal_note"}
    assert b"note-secret-cdef" not in data
    # What was not sent is read from the database, never made up.
    with CaptureQueriesContext(connection) as captured:
        assert arrived.internal_note == "note-secret-cdef"
        assert arrived.customer.name == "Grace"
    assert len(captured.captured_queries) == 2
    shop.Order.objects.filter(pk=order.pk).update(total=Decimal("12.00"))
    arrived.refresh_from_db()
    assert arrived.total == Decimal("12.00")


def test_model_instance_password_is_never_sent(user: Any) -> None:
    from django.db import connection

    data, decoded = round_trip(user=user)
    assert user.password.startswith("md5$")
    for part in user.password.split("$"):
        assert part.encode() not in data
    arrived = decoded["user"]
    assert arrived.username == user.username
    assert "password" in arrived.get_deferred_fields()
    with CaptureQueriesContext(connection) as captured:
        assert arrived.check_password(PASSWORD)  # loads the real hash: one query
    assert len(captured.captured_queries) == 1


def test_model_instance_deferred_fields_stay_deferred(order: Any, shop: Any) -> None:
    partial = shop.Order.objects.only("total").get(pk=order.pk)
    _, decoded = round_trip(order=partial)  # no query at the send either
    arrived = decoded["order"]
    assert arrived.total == Decimal("9.90")
    assert arrived.get_deferred_fields() == {
        "customer_id",
        "placed_at",
        "receipt",
        "internal_note",
    }
    assert arrived.customer_id == order.customer_id  # one query, the right value


def test_model_instance_multi_table_child_keeps_the_parents_exclusion(shop: Any) -> None:
    customer = shop.Customer.objects.create(name="Hedy")
    child = shop.PriorityOrder.objects.create(
        customer=customer,
        total=Decimal("1.00"),
        placed_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        internal_note="child-secret-7777",
        level=3,
    )
    data, decoded = round_trip(order=child)
    assert b"child-secret-7777" not in data
    arrived = decoded["order"]
    assert type(arrived) is shop.PriorityOrder
    assert (arrived.pk, arrived.level, arrived.total) == (child.pk, 3, Decimal("1.00"))
    assert "internal_note" in arrived.get_deferred_fields()


def test_model_instance_exclude_fields_setting_applies_at_once(order: Any) -> None:
    with override_settings(SIGBROKER_EXCLUDE_FIELDS={"store.Order": ["total"]}):
        _, decoded = round_trip(order=order)
        assert decoded["order"].get_deferred_fields() == {"total"}
    _, decoded = round_trip(order=order)
    assert decoded["order"].get_deferred_fields() == {"internal_note"}


def test_model_instance_of_a_model_not_installed_arrives_as_a_snapshot(
    order: Any, user: Any
) -> None:
    from sigbroker.contrib.django import ModelSnapshot

    codec = Codec()
    data = codec.pack(SIGNAL, None, {"order": order, "user": user})
    # The receiving process has no app "other": the same bytes under that label.
    data = data.replace(b"store.Order", b"other.Order").replace(b"auth.User", b"gone.User")
    decoded = codec.decode(data).kwargs
    snapshot = decoded["order"]
    assert type(snapshot) is ModelSnapshot
    assert (snapshot.label, snapshot.pk) == ("other.Order", order.pk)
    assert snapshot.customer_id == order.customer_id
    assert snapshot.total == Decimal("9.90")
    assert snapshot.receipt == "receipts/r-1.pdf"
    assert set(snapshot.fields) == {"id", "customer_id", "total", "placed_at", "receipt"}
    assert repr(snapshot) == f"<ModelSnapshot other.Order pk={order.pk}>"
    with pytest.raises(AttributeError, match="no field 'internal_note'"):
        snapshot.internal_note  # noqa: B018
    with pytest.raises(AttributeError, match="read-only"):
        snapshot.total = 1
    assert decoded["user"].username == user.username
    with pytest.raises(AttributeError):
        decoded["user"].password  # noqa: B018


def test_model_instance_with_a_malformed_payload_is_rejected() -> None:
    # The codec rejects the message with InvalidMessage whatever a decoder raises.
    from sigbroker.contrib.django.payloads.instances import decode_instance

    for bad in (["store.Order", 1, "default"], [1, 1, None, {}], ["store.Order", 1, None, {1: 2}]):
        with pytest.raises(ValueError):
            decode_instance(bad)


def test_model_instance_end_to_end_user_registered(user: Any, all_queries: list[str]) -> None:
    """The issue's call: ``user_registered.send(sender=User, user=user, request=request)``."""
    from django.contrib.auth.models import User

    from sigbroker.contrib.django import RequestSnapshot

    got: list[dict[str, Any]] = []

    def on_registered(sender: object, **kwargs: Any) -> None:
        got.append({"sender": sender, **kwargs})

    user_registered.connect(on_registered, sender=User)
    try:
        with in_memory() as broker:
            sent = user_registered.send(sender=User, user=user, request=secret_request(user))
    finally:
        user_registered.disconnect(on_registered, sender=User)
    assert sent == 1
    assert broker.stats.failed == 0 and broker.stats.rejected == 0
    assert all_queries == []  # neither the send nor the arrival ran a query
    [call] = got
    assert call["sender"] is User
    assert type(call["user"]) is User and call["user"].pk == user.pk
    assert call["user"]._state.adding is False
    assert isinstance(call["request"], RequestSnapshot)
    assert call["request"].user == user
    [(_, data)] = broker.memory.sent
    for secret in (user.password, COOKIE, AUTHORIZATION, PROXY_AUTHORIZATION):
        assert secret.encode() not in data
    call["user"].refresh_from_db()  # works on the shared database
    assert call["user"].email == "ada@example.com"


# -- requests -----------------------------------------------------------------


def test_request_arrives_as_a_read_only_snapshot(user: Any) -> None:
    from sigbroker.contrib.django import RequestSnapshot

    data, decoded = round_trip(request=secret_request(user))
    for secret in (COOKIE, AUTHORIZATION, PROXY_AUTHORIZATION, user.password):
        assert secret.encode() not in data
    request = decoded["request"]
    assert type(request) is RequestSnapshot
    assert request.method == "GET"
    assert request.path == "/signup/"
    assert request.get_full_path() == "/signup/?next=%2Fhome&tag=a&tag=b"
    assert request.GET["next"] == "/home"
    assert request.GET.getlist("tag") == ["a", "b"]
    assert request.headers["user-agent"] == "pytest/1"
    assert request.headers["User-Agent"] == "pytest/1"
    for header in ("Cookie", "Authorization", "Proxy-Authorization"):
        assert header not in request.headers
    assert request.remote_addr == "203.0.113.9"
    assert dict(request.META) == {"REMOTE_ADDR": "203.0.113.9"}
    assert request.is_secure() is True and request.scheme == "https"
    assert request.user == user and request.user._state.adding is False
    assert repr(request) == "<RequestSnapshot: GET '/signup/?next=%2Fhome&tag=a&tag=b'>"
    with pytest.raises(AttributeError):
        request.GET["next"] = "/elsewhere"
    with pytest.raises(AttributeError, match="read-only"):
        request.path = "/"
    assert not hasattr(request, "session") and not hasattr(request, "body")


def test_request_of_an_anonymous_user_has_user_none() -> None:
    from django.contrib.auth.models import AnonymousUser
    from django.utils.functional import SimpleLazyObject

    request = secret_request()
    request.user = SimpleLazyObject(AnonymousUser)
    _, decoded = round_trip(request=request)
    assert decoded["request"].user is None
    _, decoded = round_trip(request=secret_request())  # no authentication middleware
    assert decoded["request"].user is None
    assert decoded["request"].META == {"REMOTE_ADDR": "203.0.113.9"}


def test_request_with_an_unreadable_body_still_encodes() -> None:
    class Unreadable:
        def read(self, *args: object) -> bytes:
            raise OSError("client went away")

        readline = read

    request = request_factory().post("/upload/", data={"a": "b"})
    request._stream = Unreadable()
    _, decoded = round_trip(request=request)
    assert decoded["request"].method == "POST"
    assert "_body" not in request.__dict__ and "_post" not in request.__dict__  # never read


# -- forms --------------------------------------------------------------------


def test_form_travels_with_data_and_errors_without_passwords() -> None:
    from sigbroker.contrib.django import FormSnapshot
    from tests.django_shop.forms import SignupForm

    query = (
        request_factory()
        .post("/", {"username": "ada", "email": "not-an-email", "password": PASSWORD})
        .POST
    )
    form = SignupForm(query)
    data, decoded = round_trip(form=form)
    assert PASSWORD.encode() not in data
    snapshot = decoded["form"]
    assert type(snapshot) is FormSnapshot
    assert snapshot.form_class == "tests.django_shop.forms.SignupForm"
    assert snapshot.is_bound is True and snapshot.is_valid() is False
    assert snapshot.data["username"] == "ada"
    assert snapshot.data.getlist("email") == ["not-an-email"]
    assert "password" not in snapshot.data
    assert snapshot.errors == {"email": ("Enter a valid email address.",)}
    with pytest.raises(AttributeError):
        snapshot.data["username"] = "eve"


def test_form_with_a_prefix_a_dict_or_no_data() -> None:
    from tests.django_shop.forms import SignupForm

    form = SignupForm(
        {"s-username": "ada", "s-email": "ada@example.com", "s-password": PASSWORD}, prefix="s"
    )
    data, decoded = round_trip(form=form, unbound=SignupForm())
    assert PASSWORD.encode() not in data
    bound = decoded["form"]
    assert bound.prefix == "s" and bound.is_valid()
    assert dict(bound.data) == {"s-username": "ada", "s-email": "ada@example.com"}
    unbound = decoded["unbound"]
    assert (unbound.is_bound, dict(unbound.data), dict(unbound.errors)) == (False, {}, {})


# -- bad input ----------------------------------------------------------------


def test_bad_input_unsaved_model_instance_is_refused(shop: Any) -> None:
    unsaved = shop.Customer(name="nobody")
    with (
        in_memory() as broker,
        pytest.raises(PayloadError, match=r"argument 'order' is an unsaved store\.Customer"),
    ):
        order_placed.send(sender=None, order=unsaved)
    assert broker.sent == []


def test_bad_input_queryset_is_refused_suggesting_pks(
    order: Any, shop: Any, all_queries: list[str]
) -> None:
    with in_memory() as broker:
        with pytest.raises(PayloadError, match=r"argument 'order' is a QuerySet of store.Order"):
            order_placed.send(sender=None, order=shop.Order.objects.filter(pk=order.pk))
        with pytest.raises(PayloadError, match=r"values_list\('pk', flat=True\)"):
            order_placed.send(sender=None, order=[order.customer.orders])  # a related manager
    assert broker.sent == []
    assert len(all_queries) == 1  # order.customer; the querysets never ran


def test_bad_input_lazy_object_is_evaluated_or_refused(user: Any) -> None:
    from django.utils.functional import SimpleLazyObject
    from django.utils.translation import gettext_lazy

    _, decoded = round_trip(user=SimpleLazyObject(lambda: user), text=gettext_lazy("Yes"))
    assert decoded["user"] == user and type(decoded["text"]) is str

    def broken() -> object:
        raise RuntimeError("no database")

    with in_memory() as broker:
        with pytest.raises(PayloadError, match="argument 'order' is a lazy object that failed"):
            order_placed.send(sender=None, order=SimpleLazyObject(broken))
        request = secret_request()
        request.user = SimpleLazyObject(broken)
        with pytest.raises(PayloadError, match="argument 'request' is a request whose user"):
            user_registered.send(sender=None, user=None, request=request)
    assert broker.sent == []


def test_bad_input_a_query_type_never_decodes() -> None:
    from sigbroker.contrib.django.payloads.lazy import never_sent

    with pytest.raises(InvalidMessage):
        never_sent([])


# -- boundaries ---------------------------------------------------------------


def test_the_package_imports_without_loading_django(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import sigbroker, sigbroker.codec, sigbroker.config, sigbroker.contrib.django\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'django')\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tmp_path)
