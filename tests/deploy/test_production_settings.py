"""``project.settings.production``: from environment variables, zero ``check --deploy`` warnings,
and every process refuses to start without a valid encryption key (fail closed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

pytestmark = pytest.mark.slow  # every test starts manage.py, gunicorn or Celery

ROOT = Path(__file__).resolve().parents[2]
PYTHON_BIN = str(Path(sys.executable).parent)

DUMMY_ENV = {
    "SECRET_KEY": "dummy-Pq9v!Xr2#Lm8@Tz4$Wb6^Hn1&Kc3*Jd5(Fg7)Ys0_Ue-Ai8%Oz3+Rt5=Vy1~Nb",
    "FIELD_ENCRYPTION_KEY": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
    "DATABASE_URL": "postgres://bill:dummy-password@postgres:5432/bill",
    "CELERY_BROKER_URL": "redis://redis:6379/0",
    # As docker/compose.yml: without it check W004 recommends Redis for the limits.
    "REDIS_URL": "redis://redis:6379/1",
    "ALLOWED_HOSTS": "bill.example.com,www.bill.example.com",
}


def run(args: list[str], **overrides: str | None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{PYTHON_BIN}{os.pathsep}/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "project.settings.production",
        **DUMMY_ENV,
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def manage(*args: str, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "manage.py", *args], **overrides)


def settings_value(expression: str, **overrides: str | None) -> str:
    code = f"import django; django.setup(); from django.conf import settings; print({expression})"
    result = run([sys.executable, "-c", code], **overrides)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_check_deploy_prints_zero_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_settings_come_from_the_environment():
    assert settings_value("settings.DATABASES['default']['HOST']") == "postgres"
    assert settings_value("settings.DATABASES['default']['ENGINE']") == (
        "django.db.backends.postgresql"
    )
    assert (
        settings_value("settings.ALLOWED_HOSTS") == "['bill.example.com', 'www.bill.example.com']"
    )
    assert settings_value("len(settings.FIELD_ENCRYPTION_KEY)") == "2"
    assert settings_value("settings.CELERY_BROKER_URL") == "redis://redis:6379/0"
    assert settings_value("settings.DEBUG") == "False"
    # REDIS_URL stands in for the broker when CELERY_BROKER_URL is not set.
    assert (
        settings_value(
            "settings.CELERY_BROKER_URL", CELERY_BROKER_URL=None, REDIS_URL="redis://cache:6379/3"
        )
        == "redis://cache:6379/3"
    )
    assert "emulator" not in settings_value("list(settings.BILL_INTEGRATION['ENVIRONMENTS'])")
    # Every root handler redacts, and Celery keeps these handlers in the worker.
    assert (
        settings_value(
            "sorted({type(f).__name__ for h in __import__('logging').getLogger().handlers "
            "for f in h.filters})"
        )
        == "['RedactSecretsFilter']"
    )
    assert settings_value("settings.CELERY_WORKER_HIJACK_ROOT_LOGGER") == "False"


@pytest.mark.parametrize(
    "missing", ["SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DATABASE_URL", "ALLOWED_HOSTS"]
)
def test_a_missing_required_variable_stops_startup_and_is_named(missing):
    result = manage("check", **{missing: None})
    assert result.returncode != 0
    assert f"The environment variable {missing} is required" in result.stderr


def test_a_malformed_key_stops_startup_without_echoing_it():
    bad = "not-a-fernet-key-but-a-secret-looking-value"
    result = manage("check", FIELD_ENCRYPTION_KEY=f"{Fernet.generate_key().decode()},{bad}")
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY entry 1 is not a valid Fernet key" in result.stderr
    assert bad not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "entry_point",
    [
        # the web process (gunicorn imports project.wsgi)
        ["-c", "import project.wsgi"],
        # the worker and beat (celery -A project loads Django through its fixup)
        ["-m", "celery", "-A", "project", "worker", "--pool", "solo", "--loglevel", "INFO"],
        ["-m", "celery", "-A", "project", "beat", "--loglevel", "INFO"],
    ],
    ids=["web", "worker", "beat"],
)
def test_web_worker_and_beat_refuse_to_start_without_a_key(entry_point):
    result = run([sys.executable, *entry_point], FIELD_ENCRYPTION_KEY=None)
    assert result.returncode != 0
    assert "The environment variable FIELD_ENCRYPTION_KEY is required" in (
        result.stdout + result.stderr
    )


def test_the_web_health_check_passes_against_the_production_app(tmp_path):
    """docker/healthcheck.py web, against project.wsgi under production settings, over HTTP."""
    import socket
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve = (
        "from wsgiref.simple_server import make_server;"
        "from project.wsgi import application;"
        f"make_server('127.0.0.1', {port}, application).serve_forever()"
    )
    env_overrides = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PORT": str(port)}
    env = {
        "PATH": f"{PYTHON_BIN}{os.pathsep}/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "project.settings.production",
        **DUMMY_ENV,
        **env_overrides,
    }
    server = subprocess.Popen(
        [sys.executable, "-c", serve],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                time.sleep(0.1)
        health = run([sys.executable, "docker/healthcheck.py", "web"], **env_overrides)
        assert health.returncode == 0, health.stdout + health.stderr
        # Plain HTTP is redirected to HTTPS; behind the proxy, HSTS is sent.
        plain = urllib.request.Request(
            f"http://127.0.0.1:{port}/accounts/login/", headers={"Host": "bill.example.com"}
        )

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        with pytest.raises(urllib.error.HTTPError) as redirected:
            urllib.request.build_opener(NoRedirect).open(plain, timeout=10)
        assert redirected.value.code == 301
        assert redirected.value.headers["Location"] == "https://bill.example.com/accounts/login/"
        secure = urllib.request.Request(
            f"http://127.0.0.1:{port}/accounts/login/",
            headers={"Host": "bill.example.com", "X-Forwarded-Proto": "https"},
        )
        with urllib.request.urlopen(secure, timeout=10) as answer:
            assert answer.status == 200
            assert "max-age=31536000" in answer.headers["Strict-Transport-Security"]
            assert "csrftoken=" in answer.headers["Set-Cookie"]
            assert "Secure" in answer.headers["Set-Cookie"]  # CSRF cookie only over HTTPS
    finally:
        server.kill()
        server.wait()
