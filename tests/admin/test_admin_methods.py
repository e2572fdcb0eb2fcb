"""The admin's link form with every sign-in method: the REST serializer's checks, the method's inputs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from bill_integration.admin_forms import BillConnectionForm
from bill_integration.auth_methods import METHODS, AuthMethod, api_fields
from bill_integration.models import BillConnection
from tests.api.test_signin_api import KIND, body
from tests.api.test_signin_bad_input import cases, wrong_value
from tests.linking_support import CONNECTION_URL

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:bill_integration_billconnection_add")
INLINES = {"audit_events-TOTAL_FORMS": "0", "audit_events-INITIAL_FORMS": "0"}


def change_url(pk):
    return reverse("admin:bill_integration_billconnection_change", args=[pk])


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    return client


def with_hidden_noise(method: str, data: dict) -> dict:
    noise = {
        name: "left-over-typing"
        for other in METHODS
        for name in api_fields(other)
        if name not in api_fields(method)
    }
    return {**noise, **data}


@pytest.mark.parametrize("method", list(METHODS))
def test_the_add_form_links_with_each_method_ignoring_other_methods_inputs(
    method, admin_client, tenant, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind=KIND[method])
    data = with_hidden_noise(method, {"tenant": tenant.pk, **body(method, account)})
    response = admin_client.post(ADD_URL, data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.auth_method == method
    assert "left-over-typing" not in (stored.username, stored.oauth_client_id)


@pytest.mark.parametrize(("method", "problem", "field"), [c for c in cases() if c[1] != "foreign"])
def test_the_admin_refuses_what_the_api_refuses_with_the_same_words_before_bill(
    method, problem, field, tenant, owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind=KIND[method])
    data = body(method, account)
    if problem == "missing":
        data.pop(field)
    else:
        data[field] = wrong_value(field)
    before = sum(bill_emulator.state.counters().values())

    form = BillConnectionForm(data={"tenant": tenant.pk, **data})
    assert not form.is_valid()
    api = owner_api.put(CONNECTION_URL, data, format="json").json()

    assert form.errors.get(field) == api["fields"][field], form.errors
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert sum(bill_emulator.state.counters().values()) == before


def test_the_form_tells_the_page_each_methods_inputs(admin_client, bill_app):
    html = admin_client.get(ADD_URL).content.decode()
    assert "bill_integration/admin_methods.js" in html
    assert "data-bill-methods" in html
    for name in ("token_name", "sync_token", "console_token", "client_id", "client_secret"):
        assert f'name="{name}"' in html
    for secret in ("sync_token", "console_token", "client_secret", "password", "dev_key"):
        assert f'type="password" name="{secret}"' in html


def test_a_sync_token_connection_is_offered_again_under_its_own_names(
    admin_client, tenant, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind="sync_token", api_token="")
    admin_client.post(ADD_URL, {"tenant": tenant.pk, **body(AuthMethod.SYNC_TOKEN, account)})
    stored = BillConnection.objects.get(tenant=tenant)
    form = admin_client.get(change_url(stored.pk)).context["adminform"].form
    assert form.initial["auth_method"] == AuthMethod.SYNC_TOKEN
    assert form.initial["token_name"] == account.username
    assert not form.initial.get("username")

    # A blank sync token keeps the stored one; the relink is checked with BILL.
    logins = bill_emulator.state.counters()["logins"]
    data = {**body(AuthMethod.SYNC_TOKEN, account), "sync_token": "", "dev_key": "", **INLINES}
    data["api_version"] = "v2"
    response = admin_client.post(change_url(stored.pk), data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    after = BillConnection.objects.get(pk=stored.pk)
    assert after.api_version == "v2" and after.password == account.password
    assert bill_emulator.state.counters()["logins"] == logins + 1


def test_a_change_of_method_needs_the_new_methods_secrets(
    admin_client, tenant, bill_emulator, bill_app
):
    user = bill_emulator.state.add_account(api_token="")
    admin_client.post(ADD_URL, {"tenant": tenant.pk, **body(AuthMethod.USER_PASSWORD, user)})
    stored = BillConnection.objects.get(tenant=tenant)
    oauth = bill_emulator.state.add_account(kind="oauth")
    data = {**body(AuthMethod.OAUTH_CLIENT, oauth), "client_secret": "", **INLINES}
    response = admin_client.post(change_url(stored.pk), data)
    assert response.status_code == 200
    assert "client_secret" in response.context["adminform"].form.errors
    assert BillConnection.objects.get(pk=stored.pk).auth_method == AuthMethod.USER_PASSWORD

    data["client_secret"] = oauth.client_secret
    assert admin_client.post(change_url(stored.pk), data).status_code == 302
    after = BillConnection.objects.get(pk=stored.pk)
    assert after.auth_method == AuthMethod.OAUTH_CLIENT and after.password is None
