"""The README's demo, run as a new user would: the real Procfile stack on SQLite and a file broker.

``bill_demo_setup`` prints a login and BILL credentials; with them, the admin answers at the
printed URL, the emulator accepts a BILL login, a link through the REST API succeeds, and the
worker's beat keeps the session alive (a BILL keep-alive call, no new login).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bill_integration.client import BillClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def free_port(*, other_than: int = 0) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != other_than:
            return port


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def printed(label: str, text: str) -> str:
    match = re.search(rf"^\s*{label}\s+(\S+)", text, re.MULTILINE)
    assert match, f"{label!r} not printed in:\n{text}"
    return match.group(1)


@pytest.fixture
def demo(tmp_path):
    web_port = free_port()
    emulator_port = free_port(other_than=web_port)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings.dev",
        "BILL_DEMO_STATE_DIR": str(tmp_path),
        "BILL_DEMO_PORT": str(web_port),
        "BILL_EMULATOR_PORT": str(emulator_port),
        "BILL_DEMO_SWEEP_SECONDS": "1",
        "BILL_DEMO_KEEPALIVE_SECONDS": "2",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("BILL_TEST_DB", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    setup = subprocess.run(
        [*manage, "bill_demo_setup"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = open(tmp_path / "honcho.log", "w")
    stack = subprocess.Popen(
        [str(BIN / "honcho"), "-f", "Procfile", "start"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(web_port)
        wait_for_port(emulator_port)
        yield {
            "output": setup.stdout,
            "web": f"http://127.0.0.1:{web_port}",
            "emulator": f"http://127.0.0.1:{emulator_port}",
            "log": tmp_path / "honcho.log",
        }
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        try:
            stack.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
        log.close()


def sign_in(web: str, username: str, password: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(f"{web}/accounts/login/", timeout=10)
    assert page.status_code == 200
    answer = browser.post(
        f"{web}/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": f"{web}/accounts/login/"},
        timeout=10,
    )
    assert answer.status_code == 200 and "sessionid" in browser.cookies, answer.text[:500]
    return browser


def test_demo_serves_admin_links_the_demo_account_and_keeps_it_alive(demo):
    output, web = demo["output"], demo["web"]
    login_line = re.search(r"user '([^']+)', password '([^']+)'", output)
    assert login_line, output
    username, password = login_line.groups()
    bill = {
        "username": printed("User Name", output),
        "password": printed("Password", output),
        "organization_id": printed("Organization ID", output),
        "dev_key": printed("Developer Key", output),
    }
    assert f"{web}/admin/" in output and f"{web}/connect/bill/" in output

    # The emulator accepts a BILL login with the printed demo credentials.
    result = BillClient(f"{demo['emulator']}/connect", "v3").login(**bill)
    assert result.organization_id == bill["organization_id"]
    assert result.user_id.startswith("006")

    # The admin is served at the printed URL, to the printed login.
    browser = sign_in(web, username, password)
    admin = browser.get(f"{web}/admin/", timeout=10)
    assert admin.status_code == 200 and "Site administration" in admin.text
    assert browser.get(f"{web}/connect/bill/", timeout=10).status_code == 200

    # Link through the API the linking page uses, in the emulator environment.
    linked = browser.put(
        f"{web}/api/bill/connection/",
        json={**bill, "environment": "emulator"},
        headers={"X-CSRFToken": browser.cookies["csrftoken"], "Referer": f"{web}/connect/bill/"},
        timeout=30,
    )
    assert linked.status_code in (200, 201), linked.text
    assert linked.json()["status"] == "active"
    for secret in (bill["password"], bill["dev_key"]):
        assert secret not in linked.text

    # The beat (1 s here) keeps the session alive once it idles (2 s here): a keep-alive call
    # at BILL, and no second login.
    control = f"{demo['emulator']}/_emulator/counters"
    deadline = time.monotonic() + 45
    counters = {}
    while time.monotonic() < deadline:
        counters = requests.get(
            control, params={"organization_id": bill["organization_id"]}, timeout=5
        ).json()
        if counters.get("session_info", 0) >= 1:
            break
        time.sleep(1)
    assert counters.get("session_info", 0) >= 1, (counters, demo["log"].read_text()[-3000:])
    assert counters["logins"] == 2  # the direct check above, and the link
    status = browser.get(f"{web}/api/bill/connection/", timeout=10).json()
    assert status["status"] == "active" and status["last_refresh_at"], status

    # The worker prints each keep-alive once (one handler: not the app's and Celery's both).
    pattern = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*?(bill keep_alive .*)")
    deadline = time.monotonic() + 10
    while not (lines := pattern.findall(demo["log"].read_text())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lines and len(lines) == len(set(lines)), demo["log"].read_text()[-3000:]
