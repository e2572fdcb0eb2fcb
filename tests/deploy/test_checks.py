"""System checks (``bill_integration.checks``): each misconfiguration is reported by its id,
and ``manage.py check`` refuses to pass with a missing or malformed encryption key."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.checks import Error, Warning, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from bill_integration import checks

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = Fernet.generate_key().decode()


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_a_valid_configuration_has_no_bill_messages():
    messages = [m for m in run_checks(include_deployment_checks=False) if m.id.startswith("bill_")]
    assert messages == []


@pytest.mark.parametrize("value", ["__delete__", None, "", [], ()])
def test_e001_missing_key(settings, value):
    if value == "__delete__":
        del settings.FIELD_ENCRYPTION_KEY
    else:
        settings.FIELD_ENCRYPTION_KEY = value
    messages = checks.check_encryption_key()
    assert ids(messages) == [checks.E001_KEY_MISSING]
    assert isinstance(messages[0], Error) and "Fernet.generate_key()" in messages[0].hint


@pytest.mark.parametrize(
    "value,bad_positions",
    [
        ("not-a-key", [0]),
        ([GOOD_KEY, "short"], [1]),
        (["", GOOD_KEY, 42], [0, 2]),
        (GOOD_KEY[:-4], [0]),
    ],
)
def test_e002_malformed_key_names_the_entry_never_the_value(settings, value, bad_positions):
    settings.FIELD_ENCRYPTION_KEY = value
    messages = checks.check_encryption_key()
    assert ids(messages) == [checks.E002_KEY_MALFORMED] * len(bad_positions)
    for message, position in zip(messages, bad_positions):
        assert f"entry {position} is not a valid Fernet key" in message.msg
        assert "not-a-key" not in message.msg and GOOD_KEY[:-4] not in message.msg


def test_a_key_list_of_valid_keys_passes(settings):
    settings.FIELD_ENCRYPTION_KEY = [GOOD_KEY, Fernet.generate_key()]
    assert checks.check_encryption_key() == []


@pytest.mark.parametrize("value", ["tenants", "tenants.NoSuchModel", "nosuchapp.Tenant"])
def test_e003_bad_tenant_model(settings, value):
    settings.BILL_INTEGRATION_TENANT_MODEL = value
    messages = checks.check_tenant_model()
    assert ids(messages) == [checks.E003_TENANT_MODEL]
    assert "BILL_INTEGRATION_TENANT_MODEL" in messages[0].msg + messages[0].hint


def test_e005_unknown_default_environment(bill_settings):
    bill_settings(DEFAULT_ENVIRONMENT="staging")
    messages = checks.check_settings()
    assert ids(messages) == [checks.E005_DEFAULT_ENVIRONMENT]
    assert "'staging'" in messages[0].msg and "sandbox" in messages[0].msg


def test_e004_environments_shape(settings):
    settings.BILL_INTEGRATION = {"ENVIRONMENTS": {"sandbox": {"v3": "https://x"}}}
    assert ids(checks.check_settings()) == [checks.E004_ENVIRONMENTS]


@pytest.mark.parametrize(
    "value", ["no.such.module.resolve", "project.tenants.access.no_such_function", "nodots"]
)
def test_e006_resolver_path_that_does_not_import(bill_settings, value):
    bill_settings(TENANT_RESOLVER=value)
    messages = checks.check_settings()
    assert ids(messages) == [checks.E006_IMPORT_STRING]
    assert "TENANT_RESOLVER" in messages[0].msg and value in messages[0].msg


def test_e006_resolver_module_that_fails_while_importing(bill_settings, tmp_path, monkeypatch):
    (tmp_path / "broken_resolver.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bill_settings(TENANT_RESOLVER="broken_resolver.resolve")
    messages = checks.check_settings()
    assert ids(messages) == [checks.E006_IMPORT_STRING]
    assert "boom at import" in messages[0].msg


def test_e006_not_callable(bill_settings):
    bill_settings(TENANT_RESOLVER="bill_integration.checks.E001_KEY_MISSING")
    messages = checks.check_settings()
    assert ids(messages) == [checks.E006_IMPORT_STRING] and "not callable" in messages[0].msg


def test_e007_settings_must_be_a_dict(settings):
    settings.BILL_INTEGRATION = ["ENVIRONMENTS"]
    assert ids(checks.check_settings()) == [checks.E007_SETTINGS_TYPE]


def test_w001_unknown_setting(bill_settings):
    bill_settings(SESSION_TIMEOUT=10)
    messages = checks.check_settings()
    assert ids(messages) == [checks.W001_UNKNOWN_SETTING]
    assert "'SESSION_TIMEOUT'" in messages[0].msg and "SESSION_SAFETY_MARGIN" in messages[0].hint


def test_no_deprecation_warning_for_a_current_configuration(settings):
    assert checks.check_deprecated_settings() == []


def test_w002_names_each_deprecated_key_the_project_sets_and_what_to_use(bill_settings):
    bill_settings(
        SESSION_IDLE_TIMEOUT=timedelta(minutes=35),
        MAX_CONCURRENT_PER_ORGANIZATION=3,
        CLOCK="django.utils.timezone.now",
        CONNECT_TIMEOUT=5,
        READ_TIMEOUT=30.0,
    )
    messages = checks.check_deprecated_settings()
    assert ids(messages) == [checks.W002_DEPRECATED_SETTING] * 5
    assert all(isinstance(message, Warning) for message in messages)
    said = {message.msg.split("'")[1]: message.hint for message in messages}
    assert "constants.SESSION_IDLE_TIMEOUT" in said["SESSION_IDLE_TIMEOUT"]
    assert "constants.MAX_CONCURRENT_PER_ORGANIZATION" in said["MAX_CONCURRENT_PER_ORGANIZATION"]
    assert "override_clock" in said["CLOCK"]
    assert "timedelta(seconds=5)" in said["CONNECT_TIMEOUT"]
    assert "timedelta(seconds=30.0)" in said["READ_TIMEOUT"]
    # Deprecated keys are known: W002 says what to do, W001 does not call them unknown.
    assert checks.check_settings() == []
    assert ids(run_checks()).count(checks.W002_DEPRECATED_SETTING) == 5  # registered


def test_timeouts_given_as_timedeltas_raise_no_warning(bill_settings):
    bill_settings(CONNECT_TIMEOUT=timedelta(seconds=5), READ_TIMEOUT=timedelta(seconds=30))
    assert checks.check_deprecated_settings() == []


def test_e006_a_deprecated_clock_that_does_not_import(bill_settings):
    bill_settings(CLOCK="no.such.clock")
    messages = checks.check_settings()
    assert ids(messages) == [checks.E006_IMPORT_STRING] and "CLOCK" in messages[0].msg


def test_keepalive_defaults_are_derived_and_reach_the_capacity_targets(bill_settings):
    from bill_integration import conf
    from bill_integration.conf import keepalive_after_idle

    bill_settings.remove(
        "KEEPALIVE_AFTER_IDLE", "SWEEP_INTERVAL", "SESSION_SAFETY_MARGIN", "MAX_SESSION_AGE"
    )
    assert conf.bill_settings.MAX_SESSION_AGE == timedelta(days=7)
    assert conf.bill_settings.SWEEP_INTERVAL == timedelta(minutes=1)
    assert conf.bill_settings.SESSION_SAFETY_MARGIN == timedelta(minutes=3)
    assert conf.bill_settings.KEEPALIVE_AFTER_IDLE is None
    # 35 min idle timeout - 3 min margin - 1 min sweep - 30 s queue slack
    assert keepalive_after_idle() == timedelta(minutes=30, seconds=30)
    assert checks.check_keepalive_timing() == []
    # A project that sweeps every 5 minutes stays safe without touching KEEPALIVE_AFTER_IDLE.
    every_5_minutes = {"SWEEP_INTERVAL": timedelta(minutes=5)}
    bill_settings.update(every_5_minutes)
    assert keepalive_after_idle() == timedelta(minutes=26, seconds=30)
    assert checks.check_keepalive_timing() == []
    # An explicit value wins.
    bill_settings(KEEPALIVE_AFTER_IDLE=timedelta(minutes=20))
    assert keepalive_after_idle() == timedelta(minutes=20)


@pytest.mark.parametrize(
    "overrides, source",
    [
        ({"KEEPALIVE_AFTER_IDLE": 30, "SWEEP_INTERVAL": 2}, "given"),  # minutes
        ({"KEEPALIVE_AFTER_IDLE": 31, "SWEEP_INTERVAL": 1}, "given"),  # exactly no room
        ({"KEEPALIVE_AFTER_IDLE": None, "SWEEP_INTERVAL": 40}, "derived"),  # negative
    ],
)
def test_e008_keepalive_that_leaves_no_room_for_a_sweep(bill_settings, overrides, source):
    minutes = {
        key: None if value is None else timedelta(minutes=value) for key, value in overrides.items()
    }
    bill_settings(SESSION_SAFETY_MARGIN=timedelta(minutes=3), **minutes)
    messages = checks.check_keepalive_timing()
    assert ids(messages) == [checks.E008_KEEPALIVE_NO_ROOM]
    assert f"KEEPALIVE_AFTER_IDLE ({source}:" in messages[0].msg
    assert "SWEEP_INTERVAL" in messages[0].hint and "None" in messages[0].hint


def test_e008_names_the_settings_when_one_is_not_a_duration(bill_settings):
    bill_settings(SWEEP_INTERVAL=60)
    messages = checks.check_keepalive_timing()
    assert ids(messages) == [checks.E008_KEEPALIVE_NO_ROOM]
    assert "timedelta" in messages[0].msg


def test_manage_check_fails_with_a_malformed_key(settings):
    settings.FIELD_ENCRYPTION_KEY = "not-a-key"
    with pytest.raises(SystemCheckError, match=checks.E002_KEY_MALFORMED):
        call_command("check")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["", "malformed-key-value"], ids=["missing", "malformed"])
def test_manage_py_check_refuses_in_a_fresh_process(key):
    """The real command line, with the key from the environment (no test-suite settings)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_keys",
        "BILL_TEST_FIELD_KEYS": key,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    expected = checks.E001_KEY_MISSING if not key else checks.E002_KEY_MALFORMED
    assert expected in result.stderr
    assert not key or key not in result.stderr


# --- E009: a valid key that is not the data's key ------------------------------------------------

DATA_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def store_connections(count: int, *, key: str) -> None:
    """``count`` tenants with a connection whose secrets are encrypted with ``key``."""
    from django.test import override_settings

    from bill_integration.models import BillConnection
    from project.tenants.models import Tenant

    with override_settings(FIELD_ENCRYPTION_KEY=key):
        for n in range(count):
            tenant = Tenant.objects.create(name=f"Tenant {n}", slug=f"key-{key[:6]}-{n}")
            BillConnection.objects.create(
                tenant=tenant,
                environment="sandbox",
                username=f"ap{n}@example.com",
                organization_id=f"008{n:015d}",
                dev_key_fingerprint="f",
                password=f"password-{n}",
                dev_key=f"devkey-{n}",
            )


@pytest.mark.django_db
def test_e009_passes_on_an_empty_table(settings):
    settings.FIELD_ENCRYPTION_KEY = NEW_KEY
    assert checks.check_key_decrypts_stored_secrets(databases=["default"]) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "configured", [[DATA_KEY], [NEW_KEY, DATA_KEY], DATA_KEY], ids=["data-key", "new-first", "str"]
)
def test_e009_passes_when_a_configured_key_decrypts_the_data(settings, configured):
    store_connections(3, key=DATA_KEY)
    settings.FIELD_ENCRYPTION_KEY = configured
    assert checks.check_key_decrypts_stored_secrets(databases=["default"]) == []


@pytest.mark.django_db
def test_e009_refuses_a_key_that_decrypts_none_of_the_sampled_secrets(settings):
    store_connections(checks.KEY_SAMPLE_ROWS + 5, key=DATA_KEY)
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY]
    messages = checks.check_key_decrypts_stored_secrets(databases=["default"])
    assert ids(messages) == [checks.E009_KEY_DECRYPTS_NOTHING]
    sampled = checks.KEY_SAMPLE_ROWS * len(checks.KEY_SAMPLE_FIELDS)  # 20 rows, 2 secrets each
    assert messages[0].msg.startswith(
        f"FIELD_ENCRYPTION_KEY decrypts none of the {sampled} sampled stored secrets"
    )
    assert "not the key the data was encrypted with" in messages[0].msg
    assert "first, or after a new key" in messages[0].hint
    assert NEW_KEY not in messages[0].msg + messages[0].hint


@pytest.mark.django_db
def test_e009_passes_when_some_sampled_secrets_decrypt(settings):
    """Only "none decrypt" means a wrong key; a few lost rows are the fail-closed path's job."""
    store_connections(3, key=DATA_KEY)
    store_connections(1, key=NEW_KEY)  # the most recently written row
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY]
    assert checks.check_key_decrypts_stored_secrets(databases=["default"]) == []


@pytest.mark.django_db
def test_e009_passes_before_migrate_when_the_table_does_not_exist(settings):
    from django.db import connection

    from bill_integration.models import BillConnection

    store_connections(2, key=DATA_KEY)
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY]
    table = BillConnection._meta.db_table
    with connection.cursor() as cursor:  # transactional DDL: the test's rollback restores it
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_not_yet")
    assert checks.check_key_decrypts_stored_secrets(databases=["default"]) == []
    assert checks.check_key_decrypts_stored_secrets_on_deploy() == []


@pytest.mark.django_db
def test_e009_runs_only_when_django_names_databases_or_on_deploy(settings):
    store_connections(1, key=DATA_KEY)
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY]
    # Plain `check` (and every management command): database checks are not run.
    assert checks.check_key_decrypts_stored_secrets(databases=None) == []
    assert [m for m in run_checks() if m.id.startswith("bill_")] == []
    # `check --database default`, `migrate`: the database-tagged check.
    assert ids(run_checks(databases=["default"])).count(checks.E009_KEY_DECRYPTS_NOTHING) == 1
    # `check --deploy` without --database: the deploy check, on the database it reads from.
    deploy = run_checks(include_deployment_checks=True)
    assert ids(deploy).count(checks.E009_KEY_DECRYPTS_NOTHING) == 1
    both = run_checks(include_deployment_checks=True, databases=["default"])
    assert ids(both).count(checks.E009_KEY_DECRYPTS_NOTHING) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options", [{"databases": ["default"]}, {"deploy": True}], ids=["--database", "--deploy"]
)
def test_manage_check_fails_with_the_wrong_key(settings, options):
    store_connections(1, key=DATA_KEY)
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY]
    with pytest.raises(SystemCheckError, match=checks.E009_KEY_DECRYPTS_NOTHING):
        call_command("check", **options)


@pytest.mark.django_db
def test_e009_is_silent_when_the_key_itself_is_malformed(settings):
    store_connections(1, key=DATA_KEY)
    settings.FIELD_ENCRYPTION_KEY = "not-a-key"
    assert checks.check_key_decrypts_stored_secrets(databases=["default"]) == []
