"""The README's "Install it in your project", followed literally in a brand-new project.

What a new user does, in a temporary folder:

1. build the wheel (``pip wheel --no-deps``) and install it with the README's own ``pip
   install`` line (the checkout's path replaced by the wheel's) into a **clean venv**;
2. ``django-admin startproject yourproject`` and ``manage.py startapp accounts``, a tenant app
   of the project's own: organizations, memberships with roles (written here, not the
   example project's);
3. add every README snippet marked ``<!-- install:NAME -->`` … ``<!-- /install:NAME -->`` to
   the file its first line names (settings, urls, the Celery app, the login template, the
   tenant resolver, the emulator environment);
4. run the README's commands: ``migrate``, ``check --deploy`` (under production-like settings:
   the project's own deploy hygiene only, nothing about bill_integration), ``runserver``, a
   Celery worker and a Celery beat on Redis, and ``bill_emulator`` in the fresh project;
5. sign in, open the Connect page for one of two organizations, link a BILL account through
   the REST API, call ``get_session(...).request(...)``, move the emulator's clock (the app's
   follows it through ``BILL_EMULATOR_URL``) and wait until the beat's sweep keeps the
   session alive.

So the test fails when a README snippet stops working. The venv is clean (no
``--system-site-packages``): the dependencies come from PyPI through pip's cache, held to the
versions pinned in ``requirements/base.txt`` (``-c``) so a new upstream release cannot fail
this test on its own; that takes about 20 seconds with a warm cache. The beat's first sweep
comes 60 seconds after it starts (the README's schedule), so it starts right after
``migrate``, before the other steps.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

# The checkout (whichever folder of tests/ this file is in).
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROJECT = "yourproject"  # the README's placeholder, used as the project's name
REDIS_URL = os.environ.get("BILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/10")

pytestmark = pytest.mark.slow

#: Where each README snippet goes; its first line must name the same file.
SNIPPET_FILES = {
    "settings": f"{PROJECT}/settings.py",
    "emulator-settings": f"{PROJECT}/settings.py",
    "urls": f"{PROJECT}/urls.py",
    "celery": f"{PROJECT}/celery.py",
    "celery-init": f"{PROJECT}/__init__.py",
    "login-template": "accounts/templates/registration/login.html",
    "resolver": "accounts/bill.py",
}

#: The tenant app's models: the project's own, as a SaaS has them.
TENANT_MODELS = """
from django.conf import settings
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=200)

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="one_membership"),
        ]
"""

#: The project's own production hygiene for ``check --deploy`` (nothing about bill_integration).
DEPLOY_SETTINGS = f"""
import os

from {PROJECT}.settings import *  # noqa: F403

DEBUG = False
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
ALLOWED_HOSTS = ["saas.example.com"]
SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
"""


def readme_snippets() -> dict[str, str]:
    found = re.findall(
        r"<!-- install:([\w-]+) -->\s*```[\w]*\n(.*?)```\s*<!-- /install:\1 -->", README, re.S
    )
    return dict(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()[-3000:]}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


class FreshProject:
    """The new user's project: its venv, its folder, its environment, its processes."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.venv = base / "venv"
        self.bin = self.venv / "bin"
        self.dir = base / "saas"
        self.logs = base / "logs"
        self.logs.mkdir()
        self.processes: list[tuple[subprocess.Popen, Path]] = []
        self.emulator_port = free_port()
        self.web_port = free_port()
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}/usr/bin:/bin",
            "HOME": os.environ.get("HOME", str(base)),
            "LANG": "C.UTF-8",
            "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "REDIS_URL": REDIS_URL,
            "BILL_EMULATOR_URL": f"http://127.0.0.1:{self.emulator_port}",
            # The test's own: a Celery queue of its own on the shared Redis.
            "FRESH_PROJECT_QUEUE": f"fresh-project-{secrets.token_hex(6)}",
            "PYTHONUNBUFFERED": "1",
        }

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=self.dir,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def manage(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return self.run(self.bin / "python", "manage.py", *args, **kwargs)

    def start(self, name: str, *args: str | Path) -> subprocess.Popen:
        log = self.logs / f"{name}.log"
        process = subprocess.Popen(
            [str(a) for a in args],
            cwd=self.dir,
            env=self.env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append((process, log))
        return process

    def stop_all(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def logs_tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for _, log in self.processes)


def build_wheel(out: Path) -> Path:
    """The wheel of this checkout, built from a copy (no build/ or egg-info left in it)."""
    source = out / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            ".demo",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".*cache*",
            "node_modules",
            "staticfiles",
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("django_bill_integration-*.whl")
    return wheel


def install_command(snippets: dict[str, str], wheel: Path) -> list[str]:
    """The README's ``pip install`` line, the checkout's path replaced by the wheel's."""
    (line,) = [ln for ln in snippets["pip"].splitlines() if ln.startswith("pip install ")]
    args = shlex.split(line)[2:]
    assert any(a.startswith("/path/to/checkout") for a in args), line
    return [a.replace("/path/to/checkout", str(wheel)) for a in args]


def apply_snippets(project: FreshProject, snippets: dict[str, str]) -> None:
    for name, relative in SNIPPET_FILES.items():
        text = snippets[name]
        first = text.splitlines()[0]
        assert relative in first, f"README snippet {name!r} should say it goes in {relative}"
        path = project.dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        before = path.read_text() if path.exists() else ""
        path.write_text(before + ("\n\n" if before else "") + text.replace("yourproject", PROJECT))


def run_lines(snippets: dict[str, str]) -> dict[str, list[str]]:
    """The README's commands, by what they start: migrate, check, runserver, worker, beat."""
    lines = [shlex.split(ln) for ln in snippets["run"].splitlines() if ln.strip()]
    found = {}
    for words in lines:
        key = words[2] if words[0] == "python" else words[3]
        found[key] = words
    assert set(found) >= {"migrate", "check", "runserver", "worker", "beat"}, found
    return found


@pytest.fixture
def fresh_project(tmp_path):
    project = FreshProject(tmp_path)
    try:
        yield project
    finally:
        project.stop_all()


def test_the_readme_install_snippets_make_a_working_fresh_project(fresh_project, tmp_path):
    project = fresh_project
    snippets = readme_snippets()
    assert set(SNIPPET_FILES) | {"pip", "run"} <= set(snippets), sorted(snippets)

    # 1. The wheel, installed by the README's pip line into a clean venv.
    wheel = build_wheel(tmp_path / "dist")
    subprocess.run([sys.executable, "-m", "venv", str(project.venv)], check=True, timeout=120)
    pip = subprocess.run(
        [
            project.bin / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-c",
            ROOT / "requirements" / "base.txt",
            *install_command(snippets, wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=project.env,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr

    # 2. A brand-new project with a tenant app of its own.
    project.dir.mkdir()
    subprocess.run(
        [project.bin / "django-admin", "startproject", PROJECT, project.dir],
        check=True,
        env=project.env,
        timeout=60,
    )
    project.manage("startapp", "accounts")
    (project.dir / "accounts" / "models.py").write_text(TENANT_MODELS)
    settings_py = project.dir / PROJECT / "settings.py"
    settings_py.write_text(settings_py.read_text() + '\nINSTALLED_APPS += ["accounts"]\n')

    # 3. The README's snippets, each where its first line says.
    apply_snippets(project, snippets)
    settings_py.write_text(
        settings_py.read_text()
        + "\n\n# The test's own (not from the README): a Celery queue of its own on the shared"
        + "\n# Redis.\nCELERY_TASK_DEFAULT_QUEUE = os.environ['FRESH_PROJECT_QUEUE']\n"
    )
    (project.dir / PROJECT / "deploy_settings.py").write_text(DEPLOY_SETTINGS)

    # 4. The README's commands.
    commands = run_lines(snippets)
    project.manage("makemigrations", "accounts")
    project.run(project.bin / "python", *commands["migrate"][1:])
    worker = project.start("worker", project.bin / "celery", *commands["worker"][1:])
    beat = project.start("beat", project.bin / "celery", *commands["beat"][1:])

    deploy_env = {
        **project.env,
        "DJANGO_SETTINGS_MODULE": f"{PROJECT}.deploy_settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    }
    deploy_env.pop("BILL_EMULATOR_URL")  # production offers BILL's own environments only
    checked = project.run(project.bin / "python", *commands["check"][1:], env=deploy_env)
    assert "System check identified no issues" in checked.stdout, checked.stdout + checked.stderr
    project.run(
        project.bin / "python",
        "-c",
        "import django; django.setup(); from bill_integration.conf import bill_settings;"
        "assert bill_settings.environment_names() == ['sandbox', 'production']",
        env=deploy_env,
    )

    # The emulator, with an accounts file in the documented format (the rest is generated).
    (project.dir / "accounts.json").write_text(
        json.dumps(
            {"accounts": [{"username": "ap@fresh.example", "password": "fresh-bill-password"}]}
        )
    )
    emulator = project.start(
        "emulator",
        project.bin / "python",
        "manage.py",
        "bill_emulator",
        "--port",
        str(project.emulator_port),
        "--accounts",
        "accounts.json",
    )
    web = project.start(
        "web",
        project.bin / "python",
        *commands["runserver"][1:],
        f"127.0.0.1:{project.web_port}",
        "--noreload",
    )
    wait_for_port(project.emulator_port, emulator, project.logs / "emulator.log")
    wait_for_port(project.web_port, web, project.logs / "web.log")
    emulator_url = project.env["BILL_EMULATOR_URL"]
    (account,) = requests.get(f"{emulator_url}/_emulator/accounts", timeout=10).json()["accounts"]

    created = project.manage(
        "shell",
        "-c",
        (
            "from django.contrib.auth import get_user_model\n"
            "from accounts.models import Membership, Organization\n"
            "user = get_user_model().objects.create_user('owner', password='owner-password-1')\n"
            "acme = Organization.objects.create(name='Acme')\n"
            "beta = Organization.objects.create(name='Beta')\n"
            "Membership.objects.create(user=user, organization=acme, role='owner')\n"
            "Membership.objects.create(user=user, organization=beta, role='member')\n"
            "print(acme.pk, beta.pk)\n"
        ),
    )
    acme, beta = created.stdout.strip().splitlines()[-1].split()

    # 5. Sign in (LOGIN_URL, Django's login view and the README's template) and land on the
    # Connect page of one of the two organizations.
    site = f"http://127.0.0.1:{project.web_port}"
    browser = requests.Session()
    page = browser.get(f"{site}/connect/bill/?tenant={acme}", timeout=10)
    assert page.url.startswith(f"{site}/accounts/login/"), page.url  # sent to LOGIN_URL
    signed_in = browser.post(
        page.url,
        data={
            "username": "owner",
            "password": "owner-password-1",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            "next": f"/connect/bill/?tenant={acme}",
        },
        timeout=10,
    )
    assert signed_in.status_code == 200 and signed_in.url.endswith(f"/connect/bill/?tenant={acme}")
    assert "Connect your BILL account" in signed_in.text

    # Link Acme's BILL account through the API the page uses, naming the tenant by header.
    api = f"{site}/api/bill/connection/"
    headers = {"X-CSRFToken": browser.cookies["csrftoken"], "X-Tenant-ID": acme}
    linked = browser.put(
        api,
        headers=headers,
        timeout=30,
        json={
            "username": account["username"],
            "password": account["password"],
            "organization_id": account["organization_id"],
            "dev_key": account["dev_key"],
            "environment": "emulator",
        },
    )
    assert linked.status_code in (200, 201), linked.text
    assert linked.json()["status"] == "active"
    other = browser.get(api, headers={"X-Tenant-ID": beta}, timeout=10).json()
    assert other["status"] == "not_linked"  # the header chose the tenant; Beta has nothing

    docs = browser.get(f"{site}/api/docs/", timeout=10)
    assert docs.status_code == 200 and "drf_spectacular_sidecar/swagger-ui-dist" in docs.text
    assert browser.get(f"{site}/api/schema/", timeout=10).status_code == 200

    # get_session(...).request(...) from the project's own code.
    called = project.manage(
        "shell",
        "-c",
        (
            "import json\n"
            "from accounts.models import Organization\n"
            "from bill_integration.services import get_session\n"
            f"session = get_session(Organization.objects.get(pk={acme}))\n"
            "print(json.dumps(session.request('GET', '/v3/vendors', params={'max': 20})))\n"
        ),
    )
    json.loads(called.stdout.strip().splitlines()[-1])

    def counters() -> dict:
        return requests.get(
            f"{emulator_url}/_emulator/counters",
            timeout=10,
            params={"organization_id": account["organization_id"]},
        ).json()

    logins = counters()["logins"]
    assert logins == 1 and counters().get("session_info", 0) == 0

    # 31 minutes pass for BILL and for the app: the next sweep keeps the session alive.
    requests.post(f"{emulator_url}/_emulator/clock", json={"advance": 31 * 60}, timeout=10)
    deadline = time.monotonic() + 150
    while counters().get("session_info", 0) == 0 and time.monotonic() < deadline:
        assert worker.poll() is None and beat.poll() is None, project.logs_tail()
        time.sleep(1)
    assert counters().get("session_info", 0) >= 1, project.logs_tail()
    assert counters()["logins"] == logins  # kept alive, not a new login
    status = browser.get(api, headers={"X-Tenant-ID": acme}, timeout=10).json()
    assert status["status"] == "active" and status["last_refresh_at"], status
