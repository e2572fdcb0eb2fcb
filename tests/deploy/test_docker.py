"""``docker/``: the compose file validates with Debian's docker-compose, and the image and
services keep the promises the README makes (slim base, non-root, gunicorn, health checks,
every variable documented in ``.env.example``).

``docker-compose config`` needs no Docker engine. When docker-compose is missing the test
skips, unless ``BILL_REQUIRE_COMPOSE=1`` (then it fails); ``.ci/run`` installs it from Debian.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
APP_SERVICES = {"web", "worker", "beat"}
ALL_SERVICES = APP_SERVICES | {"postgres", "redis", "emulator"}


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("BILL_REQUIRE_COMPOSE") == "1":
            pytest.fail("docker-compose is not on PATH (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed; set BILL_REQUIRE_COMPOSE=1 to require it")
    # An empty environment for interpolation: the file must validate with nothing set.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict:
    result = compose("--profile", "emulator", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.slow
def test_compose_file_validates_with_docker_compose():
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr and "Invalid" not in result.stderr


@pytest.mark.slow
def test_default_services_and_emulator_profile(resolved):
    listed = compose("config", "--services")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == ALL_SERVICES
    # docker-compose 1.29 lists profiled services too: the profile itself is what counts.
    assert resolved["services"]["emulator"]["profiles"] == ["emulator"]
    for name in ALL_SERVICES - {"emulator"}:
        assert "profiles" not in resolved["services"][name], name


@pytest.mark.slow
def test_every_service_has_a_health_check(resolved):
    for name in ALL_SERVICES:
        service = resolved["services"][name]
        assert service["healthcheck"]["test"], name
        assert service.get("restart") == "unless-stopped", name


@pytest.mark.slow
def test_app_services_wait_for_healthy_postgres_and_redis(resolved):
    for name in APP_SERVICES:
        service = resolved["services"][name]
        assert service["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
        env = service["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "project.settings.production"
        assert (
            env["DATABASE_URL"].startswith("postgres://")
            and "@postgres:5432/" in env["DATABASE_URL"]
        )
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        # Nothing secret has a default baked into the compose file.
        assert env["SECRET_KEY"] == "" and env["FIELD_ENCRYPTION_KEY"] == ""
    assert resolved["services"]["web"]["command"] == ["web"]
    assert resolved["services"]["worker"]["command"] == ["worker"]
    assert resolved["services"]["beat"]["command"] == ["beat"]


@pytest.mark.slow
def test_the_worker_s_threads_are_set_in_env(resolved):
    """One worker container per core with a share of the threads (docs/how-to/celery.md)
    needs the thread count settable from docker/.env; 16 when it is not set."""
    assert resolved["services"]["worker"]["environment"]["WORKER_CONCURRENCY"] == "16"
    for name in APP_SERVICES - {"worker"}:
        assert "WORKER_CONCURRENCY" not in resolved["services"][name]["environment"], name
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    assert '--concurrency "${WORKER_CONCURRENCY:-16}"' in entrypoint


def test_every_compose_variable_is_documented_in_env_example():
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    documented = set(
        re.findall(r"^([A-Z_][A-Z0-9_]*)=", (DOCKER / ".env.example").read_text(), re.MULTILINE)
    )
    assert used, "compose.yml reads nothing from docker/.env?"
    assert used - documented == set()


def test_env_example_lists_the_required_production_variables_empty():
    text = (DOCKER / ".env.example").read_text()
    for name in ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "POSTGRES_PASSWORD"):
        assert re.search(rf"^{name}=$", text, re.MULTILINE), f"{name} must be listed, with no value"


def test_dockerfile_slim_base_non_root_gunicorn():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "requirements/production.txt" in text and "collectstatic" in text
    assert "gunicorn" in (ROOT / "requirements" / "production.txt").read_text()
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    assert "exec gunicorn project.wsgi:application" in entrypoint
    # Every role runs the system checks first: a bad key stops the container (fail closed).
    for role in ("web", "worker", "beat"):
        block = entrypoint.split(f"    {role})", 1)[1].split(";;", 1)[0]
        assert "checks" in block, role


@pytest.mark.slow
def test_entrypoint_and_healthcheck_scripts_parse():
    sh = subprocess.run(
        ["sh", "-n", str(DOCKER / "entrypoint.sh")], capture_output=True, text=True, check=False
    )
    assert sh.returncode == 0, sh.stderr
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)
    compile((DOCKER / "healthcheck.py").read_text(), "healthcheck.py", "exec")
