"""MFA trust through the services, against the emulator over HTTP: payments work once trusted.

services.mfa (phones, challenge, validate, forget), BDC_1361 on a caller's request (step-up
once, else "trust needed"), trusted renewals by the sweep, v2, and what BILL's refusals do
(nothing stored changes).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection as db

from bill_integration.conf import now
from bill_integration.exceptions import (
    MfaCodeRejected,
    MfaPhoneMissing,
    MfaTextLimited,
    MfaTooManyAttempts,
    MfaTrustExpired,
    UntrustedSession,
)
from bill_integration.models import SECRET_FIELDS, AuditEvent, BillConnection, ConnectionStatus
from bill_integration.services import get_session, link, mfa, refresh_connection
from bill_integration.services.trust import describe_trust
from tests.linking_support import credentials
from tests.mfa_support import code_for, pay, wrong

pytestmark = pytest.mark.django_db

MINUTE = 60
DAY = 24 * 3600


def row(tenant) -> BillConnection:
    return BillConnection.objects.get(tenant=tenant)


def raw_secrets(pk: int) -> tuple:
    """The stored ciphertext of every secret column (what "nothing changed" compares)."""
    columns = ", ".join(SECRET_FIELDS)
    with db.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM bill_integration_billconnection WHERE id = %s", [pk])
        return cursor.fetchone()


def trust_now(emulator, tenant, account, actor=None) -> BillConnection:
    challenge_id = mfa.challenge(tenant, actor=actor)
    return mfa.validate(
        tenant, challenge_id=challenge_id, code=code_for(emulator, account), actor=actor
    )


@pytest.fixture
def trusted_v3(bill_app, bill_emulator, bill_account, tenant, owner, linked):
    trust_now(bill_emulator, tenant, bill_account, actor=owner)
    return tenant


def test_a_payment_is_refused_until_trust_is_established_then_it_is_accepted(
    bill_app, bill_emulator, bill_account, tenant, owner, mfa_sent
):
    link(tenant, actor=owner, **credentials(bill_account))
    logins = bill_emulator.state.counters(organization_id=bill_account.organization_id)["logins"]
    for _ in range(2):  # twice: "trust needed" is signalled once
        with pytest.raises(UntrustedSession) as refused:
            pay(tenant)
        assert refused.value.code == "mfa_required" and type(refused.value) is UntrustedSession
        assert "Trust this app for payments" in refused.value.for_customer()
    stored = row(tenant)
    assert stored.status == ConnectionStatus.ACTIVE and stored.mfa_trust_needed_at is not None
    assert describe_trust(stored)["state"] == "needed"
    get_session(tenant).request("GET", "/v3/vendors")  # reads keep working
    counters = bill_emulator.state.counters(organization_id=bill_account.organization_id)
    assert counters["logins"] == logins  # never a login loop

    assert mfa.phones(tenant)[0].last4digits == bill_account.mfa_phones[0]["number"][-4:]
    connection = trust_now(bill_emulator, tenant, bill_account, actor=owner)
    assert connection.session_trusted and connection.mfa_trust_needed_at is None
    assert pay(tenant)["status"] == "SCHEDULED"
    stored = row(tenant)
    assert stored.mfa_trust_expires_at - stored.mfa_trusted_at == timedelta(days=30)
    assert stored.mfa_remember_id and stored.mfa_device.endswith("(bill_integration)")
    assert describe_trust(stored)["state"] == "trusted"
    assert describe_trust(stored)["message"].startswith("Trusted for payments until ")
    assert mfa_sent == {"connection_mfa_needed": 1, "connection_mfa_trusted": 1}
    kinds = list(AuditEvent.objects.filter(connection=stored).values_list("kind", flat=True))
    assert {"mfa_needed", "mfa_trusted"} <= set(kinds)


def test_a_renewal_login_while_trust_holds_sends_the_id_and_is_trusted(
    trusted_v3, bill_app, bill_emulator, bill_account, bill_settings
):
    bill_settings(MFA_DEVICE_NAME="Acme Payables")
    tenant = trusted_v3
    stored = row(tenant)
    bill_app.advance(2 * 3600)  # the session idled out at BILL: the sweep logs in again
    assert refresh_connection(stored.pk) == "logged_in"
    last = bill_emulator.state.login_records(organization_id=bill_account.organization_id)[-1]
    assert (last["remember_me_id"], last["device"], last["trusted"]) == (
        stored.mfa_remember_id,
        stored.mfa_device,  # the name the trust was given with, not today's setting
        True,
    )
    assert row(tenant).session_trusted is True
    assert pay(tenant)["status"] == "SCHEDULED"


def test_a_relink_of_the_same_user_keeps_trust_and_one_step_up_fixes_the_session(
    trusted_v3, bill_app, bill_emulator, bill_account, owner, mfa_sent
):
    tenant = trusted_v3
    before = row(tenant).mfa_remember_id
    link(tenant, actor=owner, **credentials(bill_account))  # e.g. a new password
    stored = row(tenant)
    assert stored.mfa_remember_id == before and stored.session_trusted is False
    logins = bill_emulator.state.counters(organization_id=bill_account.organization_id)["logins"]
    assert pay(tenant)["status"] == "SCHEDULED"  # BDC_1361, step-up, replay
    assert row(tenant).session_trusted is True
    counters = bill_emulator.state.counters(organization_id=bill_account.organization_id)
    assert counters["logins"] == logins and counters["payments"] == 1
    assert mfa_sent["connection_mfa_stepped_up"] == 1
    assert AuditEvent.objects.filter(kind="mfa_stepped_up", connection=stored).count() == 1


def test_a_relink_to_another_user_clears_trust(trusted_v3, bill_app, bill_emulator, owner):
    other = bill_emulator.state.add_account(username="other@example.com", password="pw-other-1")
    link(trusted_v3, actor=owner, **credentials(other))
    stored = row(trusted_v3)
    assert stored.mfa_remember_id is None and stored.mfa_trust_expires_at is None
    assert describe_trust(stored)["state"] == "not_set_up"


def test_step_up_answered_false_means_trust_expired_with_a_clear_error(
    trusted_v3, bill_app, bill_emulator, bill_account, owner, mfa_sent
):
    tenant = trusted_v3
    link(tenant, actor=owner, **credentials(bill_account))  # an untrusted session
    # BILL forgot the trust (say MFA was reset in BILL): the emulator no longer knows the id.
    bill_emulator.state.mfa._remembered.clear()
    with pytest.raises(MfaTrustExpired) as refused:
        pay(tenant)
    assert refused.value.code == "mfa_trust_expired"
    assert "expired" in refused.value.for_customer() and "30 days" in refused.value.for_customer()
    stored = row(tenant)
    assert stored.mfa_remember_id is None and describe_trust(stored)["state"] == "expired"
    with pytest.raises(MfaTrustExpired):
        pay(tenant)
    assert mfa_sent["connection_mfa_expired"] == 1
    trust_now(bill_emulator, tenant, bill_account)  # re-trust
    assert pay(tenant)["status"] == "SCHEDULED"


def test_trust_past_30_days_by_our_clock_is_expired_without_asking_bill(
    trusted_v3, bill_app, bill_emulator, bill_account, mfa_sent
):
    tenant = trusted_v3
    bill_app.advance(30 * DAY + MINUTE)
    with pytest.raises(MfaTrustExpired):
        pay(tenant)
    last = bill_emulator.state.login_records(organization_id=bill_account.organization_id)[-1]
    assert last["remember_me_id"] is None  # an id past its 30 days is never sent
    assert mfa_sent["connection_mfa_expired"] == 1


def test_wrong_codes_then_too_many_attempts_with_a_retry_time_and_nothing_stored_changes(
    trusted_v3, bill_app, bill_emulator, bill_account
):
    tenant = trusted_v3
    before = raw_secrets(row(tenant).pk)
    challenge_id = mfa.challenge(tenant)
    code = code_for(bill_emulator, bill_account)
    for _ in range(2):
        with pytest.raises(MfaCodeRejected) as refused:
            mfa.validate(tenant, challenge_id=challenge_id, code=wrong(code))
        assert "wrong or has expired" in refused.value.for_customer()
    with pytest.raises(MfaTooManyAttempts) as locked:
        mfa.validate(tenant, challenge_id=challenge_id, code=wrong(code))
    wait = locked.value.retry_at - now()
    assert timedelta(minutes=9) < wait <= timedelta(minutes=10)
    assert "in about 10 minutes" in locked.value.for_customer(retry_after=int(wait.total_seconds()))
    assert raw_secrets(row(tenant).pk) == before
    failures = (
        AuditEvent.objects.filter(kind="mfa_failed").order_by("id").values_list("detail", flat=True)
    )
    assert [d["code"] for d in failures] == [
        "mfa_code_invalid",
        "mfa_code_invalid",
        "mfa_too_many_attempts",
    ]
    assert pay(tenant)["status"] == "SCHEDULED"  # the stored trust still works


def test_a_code_that_is_not_six_digits_is_refused_without_asking_bill(
    trusted_v3, bill_app, bill_emulator, bill_account
):
    calls = bill_emulator.state.counters(organization_id=bill_account.organization_id)["calls"]
    with pytest.raises(MfaCodeRejected):
        mfa.validate(trusted_v3, challenge_id="!aX", code="12345")
    assert (
        bill_emulator.state.counters(organization_id=bill_account.organization_id)["calls"] == calls
    )
    assert mfa.normalise_code("123 456") == mfa.normalise_code("123-456") == "123456"


def test_no_phone_says_add_a_phone_in_bill_and_changes_nothing(
    bill_app, bill_emulator, bill_account, tenant, owner
):
    link(tenant, actor=owner, **credentials(bill_account))
    bill_emulator.state.set_mfa_phones(bill_account.username, [])
    before = raw_secrets(row(tenant).pk)
    with pytest.raises(MfaPhoneMissing) as refused:
        mfa.challenge(tenant)
    assert refused.value.bill_code == "BDC_1354"
    assert "add a mobile phone" in refused.value.for_customer()
    assert raw_secrets(row(tenant).pk) == before


def test_our_text_throttle_stops_before_bills_five_a_minute(
    bill_app, bill_emulator, bill_account, tenant, owner
):
    link(tenant, actor=owner, **credentials(bill_account))
    for _ in range(mfa.TEXTS_PER_MINUTE):
        mfa.challenge(tenant)
    with pytest.raises(MfaTextLimited) as refused:
        mfa.challenge(tenant)
    assert refused.value.http_status is None  # ours: BILL was not asked
    assert (
        bill_emulator.state.counters(organization_id=bill_account.organization_id)["mfa_texts"] == 4
    )
    assert timedelta(0) < refused.value.retry_at - now() <= timedelta(minutes=1)
    bill_app.advance(MINUTE)
    mfa.challenge(tenant)


def test_bills_own_text_limit_is_a_text_limit_and_does_not_pause_the_key(
    bill_app, bill_emulator, bill_account, tenant, owner
):
    from bill_integration import limits

    link(tenant, actor=owner, **credentials(bill_account))
    bill_emulator.state.set_fault(
        "error",
        organization_id=bill_account.organization_id,
        code="BDC_1144",
        path="/mfa/challenge",
        status=429,
    )
    with pytest.raises(MfaTextLimited) as refused:
        mfa.challenge(tenant)
    assert refused.value.bill_code == "BDC_1144"
    assert limits.paused_until(row(tenant).dev_key_fingerprint) is None
    get_session(tenant).request("GET", "/v3/vendors")


def test_forget_drops_the_trust_and_payments_need_it_again(
    trusted_v3, bill_app, bill_emulator, owner, mfa_sent
):
    mfa.forget(trusted_v3, actor=owner)
    stored = row(trusted_v3)
    assert stored.mfa_remember_id is None and stored.mfa_trust_expires_at is None
    assert AuditEvent.objects.filter(kind="mfa_forgotten", actor=owner).count() == 1
    assert mfa_sent["connection_mfa_forgotten"] == 1
    bill_app.advance(2 * 3600)
    refresh_connection(stored.pk)  # a new, untrusted session
    with pytest.raises(UntrustedSession):
        pay(trusted_v3)


def test_keep_alives_record_bills_mfa_status(trusted_v3, bill_app):
    from bill_integration.services import keep_alive

    keep_alive(trusted_v3)
    stored = row(trusted_v3)
    assert (stored.mfa_status, stored.mfa_bypass) == ("COMPLETE", False)


def test_v2_trust_through_mfa_challenge_authenticate_and_status(
    bill_app, bill_emulator, bill_account, tenant, owner, mfa_sent
):
    link(tenant, actor=owner, **credentials(bill_account, api_version="v2"))
    with pytest.raises(UntrustedSession):
        pay(tenant, "v2")
    assert mfa.phones(tenant) is None  # v2 lists no phones
    trust_now(bill_emulator, tenant, bill_account)
    assert pay(tenant, "v2")["sentPay"]["count"] == 1
    stored = row(tenant)
    assert stored.mfa_remember_id.startswith("!a")

    bill_app.advance(2 * 3600)
    assert refresh_connection(stored.pk) == "logged_in"
    last = bill_emulator.state.login_records(organization_id=bill_account.organization_id)[-1]
    assert (last["api"], last["remember_me_id"], last["trusted"]) == (
        "v2",
        stored.mfa_remember_id,
        True,
    )
    assert pay(tenant, "v2")["sentPay"]["count"] == 1

    # A v2 session made without the id: MFAStatus.json confirms it, one login makes it trusted.
    link(tenant, actor=owner, **credentials(bill_account, api_version="v2"))
    assert pay(tenant, "v2")["sentPay"]["count"] == 1
    assert mfa_sent["connection_mfa_stepped_up"] == 1
    assert bill_emulator.state.login_records(organization_id=bill_account.organization_id)[-1][
        "trusted"
    ]
