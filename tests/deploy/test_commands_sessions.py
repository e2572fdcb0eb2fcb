"""bill_refresh_sessions (the sweep for cron users) and bill_status (statuses, budgets)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from bill_integration.models import BillConnection, ConnectionStatus
from tests.session_support import counters, stored

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("classic_cadence")]


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_refresh_command_handles_due_connections_only(make_connection, bill_emulator, bill_app):
    due, fresh = make_connection(), make_connection(idle=-15 * 60)
    bill_app.advance(25 * 60)
    out, _ = run("bill_refresh_sessions", "--no-progress")
    assert "1 connection(s) handled" in out and "kept_alive: 1" in out
    assert counters(bill_emulator, due)["session_info"] == 1
    assert counters(bill_emulator, fresh)["session_info"] == 0
    out, _ = run("bill_refresh_sessions", "--no-progress")
    assert "0 connection(s) handled" in out


def test_refresh_command_dry_run_calls_nothing(make_connection, bill_emulator, bill_app):
    connection = make_connection()
    bill_app.advance(40 * 60)
    before = bill_emulator.state.counters()
    out, _ = run("bill_refresh_sessions", "--dry-run")
    assert f"connection {connection.pk} " in out and "would login" in out
    assert "Dry run: 1 connection(s). login: 1" in out
    assert bill_emulator.state.counters() == before
    assert stored(connection).version == connection.version


def test_refresh_command_all_and_one_tenant(make_connection, bill_emulator, bill_app):
    first, second = make_connection(), make_connection()
    out, _ = run("bill_refresh_sessions", "--all", "--no-progress")
    assert "2 connection(s) handled" in out
    assert counters(bill_emulator, first)["session_info"] == 1
    out, _ = run("bill_refresh_sessions", "--tenant", str(second.tenant_id), "--no-progress")
    assert "1 connection(s) handled" in out
    assert counters(bill_emulator, second)["session_info"] == 2
    assert counters(bill_emulator, first)["session_info"] == 1
    with pytest.raises(CommandError, match="No tenant with id '999999'"):
        run("bill_refresh_sessions", "--tenant", "999999")


def test_refresh_command_reports_failures(make_connection, bill_emulator, bill_app):
    connection = make_connection()
    bill_app.advance(25 * 60)
    bill_emulator.state.set_fault("status", organization_id=connection.organization_id, status=503)
    out, err = run("bill_refresh_sessions", "--no-progress")
    assert "failed:" in out
    assert "1 refresh(es) failed" in err and "bill_status" in err


def test_status_shows_statuses_budget_and_attention_without_secrets(
    make_connection, bill_emulator, bill_app
):
    healthy = make_connection()
    broken = make_connection(dev_key=healthy.account.dev_key)
    BillConnection.objects.filter(pk=broken.pk).update(
        status=ConnectionStatus.NEEDS_RELINK, last_error_code="BDC_1101"
    )
    bill_app.advance(40 * 60)
    run("bill_refresh_sessions", "--no-progress")  # one login for the healthy tenant
    out, _ = run("bill_status", "--json")
    facts = json.loads(out)
    assert facts["by_status"]["active"] == 1 and facts["by_status"]["needs_relink"] == 1
    [key] = facts["dev_keys"]
    assert key["connections"] == 2 and key["logins_last_hour"] == 1
    assert key["login_budget"] == 150 and key["paused_until"] is None
    assert facts["attention"][0]["last_error_code"] == "BDC_1101"
    tables, _ = run("bill_status")
    assert "needs_relink" in tables and "1 / 150" in tables and "BDC_1101" in tables
    row = stored(healthy)
    for secret in (row.password, row.dev_key, row.session_id, healthy.account.password):
        assert secret not in out and secret not in tables
