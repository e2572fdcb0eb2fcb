"""The README stays true: every setting documented, task names real, two Quick start commands."""

from __future__ import annotations

import re
from pathlib import Path

from bill_integration.conf import DEFAULTS, DEPRECATED_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_settings_table():
    missing = [key for key in DEFAULTS if f"`{key}`" not in README]
    assert missing == []


def test_every_deprecated_setting_is_named_in_the_readme_settings_section():
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    missing = [key for key in DEPRECATED_SETTINGS if f"`{key}`" not in section]
    assert missing == []
    assert "bill_integration.W002" in section and "bill_integration.constants" in section


def test_documented_task_names_are_registered():
    from celery import current_app

    import bill_integration.tasks  # noqa: F401  (registers the shared tasks)

    documented = set(re.findall(r"bill_integration\.refresh_[a-z_]+", README))
    assert "bill_integration.refresh_due_sessions" in documented
    assert documented <= set(current_app.tasks)


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", quick_start, re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"]
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()
