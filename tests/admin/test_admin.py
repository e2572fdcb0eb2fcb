"""Django admin: the list, the linking form (through the service), actions, the audit trail."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection as db_connection
from django.urls import reverse

from bill_integration.models import AuditEvent, BillConnection
from tests.linking_support import credentials

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:bill_integration_billconnection_changelist")
ADD_URL = reverse("admin:bill_integration_billconnection_add")


def change_url(pk):
    return reverse("admin:bill_integration_billconnection_change", args=[pk])


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    client.user = user
    return client


def secrets_of(connection_pk) -> list[str]:
    stored = BillConnection.objects.get(pk=connection_pk)
    return [s for s in (stored.password, stored.dev_key, stored.api_token, stored.session_id) if s]


def assert_no_secrets(html: str, connection_pk) -> None:
    for secret in secrets_of(connection_pk):
        assert secret not in html


def test_list_shows_tenant_org_environment_badge_refresh_and_error(
    admin_client, linked, tenant, bill_account
):
    BillConnection.objects.filter(pk=linked.pk).update(
        status="needs_relink", last_error_code="invalid_credentials"
    )
    response = admin_client.get(LIST_URL)
    html = response.content.decode()
    assert response.status_code == 200
    assert tenant.name in html and bill_account.organization_id in html and "emulator" in html
    assert 'class="bill-status bill-status-needs_relink"' in html and "Needs relink" in html
    assert "sandbox credentials used against production" in html
    assert_no_secrets(html, linked.pk)


def test_list_never_decrypts(admin_client, linked, bill_account):
    # A secret no key can read: the list must still render (it never loads secrets).
    with db_connection.cursor() as cursor:
        cursor.execute(
            "UPDATE bill_integration_billconnection SET password = 'garbage' WHERE id = %s",
            [linked.pk],
        )
    response = admin_client.get(LIST_URL)
    assert response.status_code == 200
    assert bill_account.organization_id in response.content.decode()
    assert admin_client.get(change_url(linked.pk)).status_code == 200


def test_list_search_and_filters(admin_client, linked, bill_account):
    found = admin_client.get(LIST_URL, {"q": bill_account.organization_id}).content.decode()
    assert change_url(linked.pk) in found
    missing = admin_client.get(LIST_URL, {"q": "00899NOPE"}).content.decode()
    assert change_url(linked.pk) not in missing
    for query in (
        {"status__exact": "active"},
        {"environment__exact": "emulator"},
        {"api_version__exact": "v3"},
    ):
        assert change_url(linked.pk) in admin_client.get(LIST_URL, query).content.decode()
    assert (
        change_url(linked.pk)
        not in admin_client.get(LIST_URL, {"status__exact": "disabled"}).content.decode()
    )


def test_add_form_links_through_the_service(admin_client, tenant, bill_account, bill_environment):
    form_html = admin_client.get(ADD_URL).content.decode()
    assert 'type="password" name="password"' in form_html
    assert 'type="password" name="dev_key"' in form_html
    response = admin_client.post(ADD_URL, {"tenant": tenant.pk, **credentials(bill_account)})
    assert response.status_code == 302, response.content.decode()[:3000]
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.password == bill_account.password and stored.session_id
    event = AuditEvent.objects.get(kind="linked")
    assert event.actor == admin_client.user


def test_add_form_shows_bills_refusal_and_stores_nothing(
    admin_client, tenant, bill_account, bill_environment
):
    response = admin_client.post(
        ADD_URL, {"tenant": tenant.pk, **credentials(bill_account, password="wrong-one")}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "sandbox credentials used against production" in html
    assert "wrong-one" not in html and bill_account.dev_key not in html
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert AuditEvent.objects.get(kind="link_failed").actor == admin_client.user


def test_add_form_validates_before_calling_bill(
    admin_client, tenant, bill_emulator, bill_account, bill_environment
):
    response = admin_client.post(
        ADD_URL,
        {
            "tenant": tenant.pk,
            **credentials(bill_account, organization_id="12345", password="x\x00y"),
        },
    )
    html = response.content.decode()
    assert response.status_code == 200 and "starts with 008" in html
    assert "control character" in html
    assert bill_emulator.state.counters()["logins"] == 0


def test_add_for_an_already_linked_tenant_is_refused_without_calling_bill(
    admin_client, linked, tenant, bill_emulator, bill_account
):
    logins = bill_emulator.state.counters()["logins"]
    response = admin_client.post(ADD_URL, {"tenant": tenant.pk, **credentials(bill_account)})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert bill_emulator.state.counters()["logins"] == logins


def test_change_form_never_renders_a_secret(admin_client, tenant, bill_account, bill_environment):
    from bill_integration import services

    connection = services.link(
        tenant, **credentials(bill_account, api_token=bill_account.api_token)
    )
    response = admin_client.get(change_url(connection.pk))
    html = response.content.decode()
    assert response.status_code == 200
    assert_no_secrets(html, connection.pk)
    assert 'name="password"' in html and 'value="' + bill_account.password not in html
    assert "Leave blank to keep the stored value." in html
    # The audit trail shows inline, read-only.
    assert "Audit events" in html and "Linked" in html


def test_change_with_blank_secrets_keeps_them_and_relinks(
    admin_client, linked, tenant, bill_account, bill_emulator
):
    before = BillConnection.objects.get(pk=linked.pk)
    logins = bill_emulator.state.counters()["logins"]
    data = {
        **credentials(bill_account, password="", dev_key="", api_token="", api_version="v2"),
        "audit_events-TOTAL_FORMS": "0",
        "audit_events-INITIAL_FORMS": "0",
    }
    response = admin_client.post(change_url(linked.pk), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    after = BillConnection.objects.get(pk=linked.pk)
    assert (after.password, after.dev_key) == (before.password, before.dev_key)
    assert after.api_version == "v2"
    assert after.version == before.version + 1
    assert AuditEvent.objects.filter(kind="relinked").count() == 1
    assert bill_emulator.state.counters()["logins"] == logins + 1


def _unchanged_form(account, **extra):
    return {
        **credentials(account, password="", dev_key="", api_token=""),
        "audit_events-TOTAL_FORMS": "0",
        "audit_events-INITIAL_FORMS": "0",
        **extra,
    }


def test_saving_an_unchanged_form_calls_nothing(admin_client, linked, bill_emulator, bill_account):
    from django.contrib.admin.models import LogEntry

    before = BillConnection.objects.get(pk=linked.pk)
    logins = bill_emulator.state.counters()["logins"]
    events = AuditEvent.objects.count()
    response = admin_client.post(change_url(linked.pk), _unchanged_form(bill_account))
    assert response.status_code == 302
    assert response.url == LIST_URL
    page = admin_client.get(response.url).content.decode()
    assert "No changes." in page and "was changed successfully" not in page
    assert bill_emulator.state.counters()["logins"] == logins
    after = BillConnection.objects.get(pk=linked.pk)
    assert (after.version, after.session_id, after.updated_at) == (
        before.version,
        before.session_id,
        before.updated_at,
    )
    assert AuditEvent.objects.count() == events
    assert not LogEntry.objects.exists()  # the history records no change either


def test_saving_an_unchanged_form_and_continuing_stays_on_the_page(
    admin_client, linked, bill_emulator, bill_account
):
    logins = bill_emulator.state.counters()["logins"]
    response = admin_client.post(
        change_url(linked.pk), _unchanged_form(bill_account, _continue="1"), follow=True
    )
    assert response.redirect_chain[-1][0] == change_url(linked.pk)
    assert "No changes." in response.content.decode()
    assert bill_emulator.state.counters()["logins"] == logins


def test_a_typed_secret_is_a_change_even_when_it_equals_the_stored_one(
    admin_client, linked, bill_emulator, bill_account
):
    logins = bill_emulator.state.counters()["logins"]
    data = _unchanged_form(bill_account, password=bill_account.password)
    assert admin_client.post(change_url(linked.pk), data).status_code == 302
    assert bill_emulator.state.counters()["logins"] == logins + 1
    assert AuditEvent.objects.filter(kind="relinked").count() == 1


def test_change_refused_by_bill_keeps_everything(admin_client, linked, tenant, bill_account):
    before = BillConnection.objects.get(pk=linked.pk)
    data = {
        **credentials(bill_account, password="not-it", dev_key=""),
        "audit_events-TOTAL_FORMS": "0",
        "audit_events-INITIAL_FORMS": "0",
    }
    response = admin_client.post(change_url(linked.pk), data)
    assert response.status_code == 200
    assert "did not accept" in response.content.decode()
    after = BillConnection.objects.get(pk=linked.pk)
    assert (after.version, after.password, after.session_id) == (
        before.version,
        before.password,
        before.session_id,
    )


def test_change_can_clear_the_api_token(admin_client, tenant, bill_account, bill_environment):
    from bill_integration import services

    connection = services.link(
        tenant, **credentials(bill_account, api_token=bill_account.api_token)
    )
    data = {
        **credentials(bill_account, password="", dev_key="", api_token=""),
        "clear_api_token": "on",
        "audit_events-TOTAL_FORMS": "0",
        "audit_events-INITIAL_FORMS": "0",
    }
    assert admin_client.post(change_url(connection.pk), data).status_code == 302
    assert BillConnection.objects.get(pk=connection.pk).api_token is None


def _action(admin_client, name, pk):
    return admin_client.post(LIST_URL, {"action": name, "_selected_action": [pk]}, follow=True)


@pytest.fixture
def worker(monkeypatch):
    """Queued tasks run at once, as a worker would; each ``apply_async`` call is recorded.

    ``worker.sent`` lists ``(task name, args, kwargs)``; ``worker.results`` the outcomes.
    """
    from celery import current_app
    from celery.app.task import Task

    original = Task.apply_async
    recorder = SimpleNamespace(sent=[], results=[])

    def apply_async(self, args=None, kwargs=None, **options):
        recorder.sent.append((self.name, args, kwargs))
        result = original(self, args, kwargs, **options)
        recorder.results.append(result.get())
        return result

    monkeypatch.setattr(Task, "apply_async", apply_async)
    conf = current_app.conf
    saved = (conf.task_always_eager, conf.task_eager_propagates)
    conf.task_always_eager, conf.task_eager_propagates = True, True
    yield recorder
    conf.task_always_eager, conf.task_eager_propagates = saved


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_action_refresh_session_now_queues_one_task_per_row(admin_client, linked, worker):
    old = BillConnection.objects.get(pk=linked.pk).session_id
    response = _action(admin_client, "refresh_now", linked.pk)
    assert worker.sent == [("bill_integration.force_refresh_session", (linked.pk,), None)]
    assert worker.results == ["refreshed"]
    assert any(m.startswith("1 queued") for m in _messages(response))
    assert BillConnection.objects.get(pk=linked.pk).session_id != old


def test_action_verify_credentials_queues_one_task_per_row(
    admin_client, linked, bill_emulator, bill_account, worker
):
    response = _action(admin_client, "verify_credentials", linked.pk)
    assert worker.sent == [("bill_integration.verify_connection", (linked.pk,), None)]
    assert worker.results == ["verified"]
    assert any(m.startswith("1 queued") for m in _messages(response))
    bill_emulator.state.change_password(bill_account.username, "new-at-bill")
    _action(admin_client, "verify_credentials", linked.pk)
    assert worker.results == ["verified", "failed:invalid_credentials"]


def test_actions_log_in_only_in_the_task(admin_client, linked, bill_emulator, monkeypatch):
    # Without a worker, nothing reaches BILL during the request: the task is only sent.
    from celery.app.task import Task

    sent = []

    def apply_async(self, args=None, kwargs=None, **options):
        sent.append((self.name, args, kwargs, options))

    monkeypatch.setattr(Task, "apply_async", apply_async)
    logins = bill_emulator.state.counters()["logins"]
    _action(admin_client, "refresh_now", linked.pk)
    _action(admin_client, "verify_credentials", linked.pk)
    assert bill_emulator.state.counters()["logins"] == logins
    assert [(name, args, kwargs) for name, args, kwargs, _ in sent] == [
        ("bill_integration.force_refresh_session", (linked.pk,), None),
        ("bill_integration.verify_connection", (linked.pk,), None),
    ]
    assert all(options["expires"] > 0 for *_, options in sent)


def test_actions_queue_several_rows(admin_client, linked, make_connection, worker):
    others = [make_connection(), make_connection()]
    pks = sorted([linked.pk, *(c.pk for c in others)])
    response = admin_client.post(
        LIST_URL, {"action": "refresh_now", "_selected_action": pks}, follow=True
    )
    assert [args for _, args, _ in worker.sent] == [(pk,) for pk in pks]
    assert worker.results == ["refreshed"] * 3
    assert any(m.startswith("3 queued") for m in _messages(response))


def _rates(bill_settings, **rates):
    bill_settings(REFRESH_THROTTLE_RATES=rates)


def test_actions_skip_rows_over_their_tenants_refresh_rate(
    admin_client, bill_settings, linked, make_connection, worker
):
    _rates(bill_settings, tenant="2/hour", user="100/hour")
    other = make_connection()
    _action(admin_client, "refresh_now", linked.pk)
    _action(admin_client, "verify_credentials", linked.pk)  # the same allowance
    response = admin_client.post(
        LIST_URL, {"action": "refresh_now", "_selected_action": [linked.pk, other.pk]}, follow=True
    )
    assert [args for _, args, _ in worker.sent] == [(linked.pk,), (linked.pk,), (other.pk,)]
    messages = _messages(response)
    assert any(m.startswith("1 queued") for m in messages)
    assert "1 skipped: its tenant reached the refresh limit (2/hour)." in messages


def test_the_tenant_rate_is_shared_with_the_rest_endpoint(
    admin_client, bill_settings, linked, owner_api, worker
):
    from tests.linking_support import REFRESH_URL

    _rates(bill_settings, tenant="1/hour", user="100/hour")
    assert owner_api.post(REFRESH_URL).status_code == 200
    response = _action(admin_client, "verify_credentials", linked.pk)
    assert worker.sent == []
    assert "1 skipped: its tenant reached the refresh limit (1/hour)." in _messages(response)


def test_actions_skip_rows_over_the_users_refresh_rate_without_counting_them(
    admin_client, bill_settings, linked, make_connection, worker
):
    _rates(bill_settings, tenant="1/hour", user="2/hour")
    rows = sorted([linked.pk, make_connection().pk, make_connection().pk])
    response = admin_client.post(
        LIST_URL, {"action": "refresh_now", "_selected_action": rows}, follow=True
    )
    assert [args for _, args, _ in worker.sent] == [(rows[0],), (rows[1],)]
    assert "1 skipped: you reached your refresh limit (2/hour)." in _messages(response)
    # The skipped row did not use up its tenant's single refresh.
    _rates(bill_settings, tenant="1/hour", user="100/hour")
    _action(admin_client, "refresh_now", rows[2])
    assert [args for _, args, _ in worker.sent][-1] == (rows[2],)


def test_action_unlink(admin_client, linked, tenant, bill_emulator, bill_account):
    response = _action(admin_client, "unlink_selected", linked.pk)
    assert "unlinked" in response.content.decode()
    assert not BillConnection.objects.filter(pk=linked.pk).exists()
    assert (
        bill_emulator.state.counters(organization_id=bill_account.organization_id)["logouts"] == 1
    )
    assert AuditEvent.objects.get(kind="unlinked").actor == admin_client.user


def test_no_direct_delete(admin_client, linked):
    url = reverse("admin:bill_integration_billconnection_delete", args=[linked.pk])
    assert admin_client.get(url).status_code == 403
    assert "delete_selected" not in admin_client.get(LIST_URL).content.decode()


def test_audit_events_are_read_only(admin_client, linked):
    event = AuditEvent.objects.get(kind="linked")
    list_url = reverse("admin:bill_integration_auditevent_changelist")
    html = admin_client.get(list_url).content.decode()
    assert "Linked" in html
    change = admin_client.get(
        reverse("admin:bill_integration_auditevent_change", args=[event.pk])
    ).content.decode()
    assert 'name="_save"' not in change
    assert admin_client.get(reverse("admin:bill_integration_auditevent_add")).status_code == 403
    delete = reverse("admin:bill_integration_auditevent_delete", args=[event.pk])
    assert admin_client.get(delete).status_code == 403
    before = AuditEvent.objects.count()
    admin_client.post(
        reverse("admin:bill_integration_auditevent_change", args=[event.pk]), {"kind": "unlinked"}
    )
    assert AuditEvent.objects.get(pk=event.pk).kind == "linked"
    assert AuditEvent.objects.count() == before
    assert_no_secrets(html + change, linked.pk)


# --- relinking after the encryption key was lost --------------------------------------------


@pytest.fixture
def key_lost(admin_client, linked, settings):
    """``linked``'s secrets were encrypted under a key that is no longer configured."""
    from cryptography.fernet import Fernet

    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    return linked


def _form(account, **overrides):
    return {
        **credentials(account, **overrides),
        "audit_events-TOTAL_FORMS": "0",
        "audit_events-INITIAL_FORMS": "0",
    }


def test_change_with_every_secret_relinks_after_the_key_was_lost(
    admin_client, key_lost, tenant, bill_account
):
    before_version = BillConnection.objects.filter(pk=key_lost.pk).values_list(
        "version", flat=True
    )[0]
    data = _form(bill_account, api_token=bill_account.api_token)
    response = admin_client.post(change_url(key_lost.pk), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    after = BillConnection.objects.get(pk=key_lost.pk)  # readable under the current key
    assert (after.password, after.dev_key) == (bill_account.password, bill_account.dev_key)
    assert after.api_token == bill_account.api_token
    assert after.status == "active" and after.session_id
    assert after.version == before_version + 1
    assert AuditEvent.objects.filter(kind="relinked").count() == 1


def test_change_with_blank_secrets_after_the_key_was_lost_is_a_form_error(
    admin_client, key_lost, tenant, bill_account
):
    stored = BillConnection.objects.filter(pk=key_lost.pk).values_list("version", flat=True)[0]
    response = admin_client.post(change_url(key_lost.pk), _form(bill_account, password=""))
    assert response.status_code == 200
    html = response.content.decode()
    assert "The stored secrets cannot be decrypted" in html
    assert bill_account.password not in html
    assert BillConnection.objects.filter(pk=key_lost.pk).values_list("version", flat=True)[0] == (
        stored
    )
    assert not AuditEvent.objects.filter(kind="relinked").exists()


# --- the tasks behind the actions ------------------------------------------------------------


def test_manual_tasks_are_registered_under_their_stable_names():
    from celery import current_app

    from bill_integration import tasks

    assert current_app.tasks["bill_integration.force_refresh_session"] is (
        tasks.force_refresh_session._get_current_object()
    )
    assert current_app.tasks["bill_integration.verify_connection"] is (
        tasks.verify_connection._get_current_object()
    )


def test_manual_tasks_report_a_connection_unlinked_since_it_was_queued(linked):
    from bill_integration import services, tasks

    services.unlink(linked.tenant)
    assert tasks.force_refresh_session.apply(args=(linked.pk,)).get() == "failed:not_linked"
    assert tasks.verify_connection.apply(args=(linked.pk,)).get() == "failed:not_linked"


def test_force_refresh_task_reports_bills_refusal_by_code(linked, bill_emulator, bill_account):
    from bill_integration import tasks

    bill_emulator.state.change_password(bill_account.username, "new-at-bill")
    outcome = tasks.force_refresh_session.apply(args=(linked.pk,)).get()
    assert outcome == "failed:invalid_credentials"
    assert BillConnection.objects.get(pk=linked.pk).status == "needs_relink"


# --- the list fits a 1280-pixel screen -------------------------------------------------------


def test_list_columns_are_few_and_short(admin_client, linked, bill_account):
    import re

    from django.contrib import admin as django_admin

    model_admin = django_admin.site._registry[BillConnection]
    assert model_admin.list_display == (
        "tenant",
        "organization",
        "status_badge",
        "session",
        "last_error",
    )
    BillConnection.objects.filter(pk=linked.pk).update(
        status="needs_relink", last_error_code="invalid_credentials"
    )
    html = admin_client.get(LIST_URL).content.decode()
    headings = re.findall(r'<th scope="col" class="[^"]*column-([a-z_]+)[^"]*">', html)
    assert headings == ["tenant", "organization", "status_badge", "session", "last_error"]
    # Organization and environment share a cell; the two session times share another.
    cell = re.search(r'<td class="field-organization">(.*?)</td>', html, re.S).group(1)
    assert bill_account.organization_id in cell and "emulator" in cell
    session = re.search(r'<td class="field-session">(.*?)</td>', html, re.S).group(1)
    assert "used 0\xa0minutes ago" in session and "refreshed 0\xa0minutes ago" in session
    # The error shows its first words; the whole text is the cell's tooltip.
    error = re.search(r'<td class="field-last_error"><span title="([^"]*)">([^<]*)</span>', html)
    assert len(error.group(2)) <= 48 and error.group(2).endswith("…")
    assert "sandbox credentials used against production" in error.group(1)
