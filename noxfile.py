"""The version matrix: Django 5.2 and 6.0 on each Python they support, on PostgreSQL and SQLite.

``python3 dev.py matrix`` runs every session tagged ``matrix`` (what CI runs after the full
suite); ``nox -l`` lists them all, ``nox -s "tests(py3.13-django6.0-sqlite)"`` runs one.

* The main combination (Python 3.11, Django 5.2, PostgreSQL) is the one ``python3 dev.py
  test`` runs in ``.venv`` with the whole suite; here it is the session tagged ``full``, for
  running the whole suite in a clean environment (``nox -t full``).
* The sessions tagged ``matrix`` (``CI_MATRIX``: every Python, both Django series, each
  database with each series) run the quick layers (``QUICK_PATHS``, without ``slow`` tests and
  the schema fuzzing): the services and the REST API, where a Django or database difference
  would show. The remaining combinations are sessions too, tagged ``more``.
* The SQLite sessions set ``DJANGO_SETTINGS_MODULE=project.settings.test_sqlite``; tests
  marked ``postgresql`` (row locks, concurrent writers) skip there, saying why.

Each session installs ``requirements/test.txt`` with its own Django pin in place of
``requirements/base.txt``'s, then this package. pip's cache is shared by all sessions, so only
the first one downloads anything. PostgreSQL and Redis must answer on localhost, as for
``python3 dev.py test``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

#: Django series -> (the pin, the Pythons it supports that we test).
DJANGO = {
    "5.2": (None, ("3.11", "3.12", "3.13")),  # None: base.txt's own pin
    "6.0": ("Django==6.0.10", ("3.12", "3.13")),
}
DATABASES = ("postgresql", "sqlite")
#: What ``python3 dev.py test`` runs in .venv: the whole suite.
MAIN = ("3.11", "5.2", "postgresql")
#: What ``python3 dev.py matrix`` (and so CI) runs besides the main combination: every Python
#: and both Django series, each database with each series, in as few sessions as that takes
#: (CI must finish within 30 minutes on 2 cores). The other combinations are still sessions
#: (``nox -s "tests(py3.13-django5.2-sqlite)"``), tagged ``more``.
CI_MATRIX = {
    ("3.12", "5.2", "postgresql"),
    ("3.11", "5.2", "sqlite"),
    ("3.13", "6.0", "postgresql"),
    ("3.13", "6.0", "sqlite"),
}
#: The quick layers every other combination runs, without ``slow`` tests: where Django, DRF
#: and the database meet the app (the services' locks and fenced writes, the REST API).
QUICK_PATHS = ("tests/services", "tests/api")
#: Left out of the quick layers: Schemathesis's fuzzing of the API schema takes the longest
#: and tests the schema, not Django or the database; the full suite runs it.
QUICK_IGNORE = ("tests/api/test_schema.py",)
SETTINGS = {"postgresql": "project.settings.test", "sqlite": "project.settings.test_sqlite"}

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


def _pyenv_on_path() -> None:
    """Let nox find pyenv's Pythons that pyenv's shims would refuse (not ``pyenv global``)."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for series in sorted({python for _, pythons in DJANGO.values() for python in pythons}):
        candidates = sorted(
            versions.glob(f"{series}.*/bin/python{series}"),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
        )
        if candidates:
            found.append(str(candidates[-1].parent))
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_pyenv_on_path()


def _combinations():
    for django, (_, pythons) in DJANGO.items():
        for python in pythons:
            for db in DATABASES:
                combination = (python, django, db)
                tag = (
                    "full"
                    if combination == MAIN
                    else "matrix"
                    if combination in CI_MATRIX
                    else "more"
                )
                yield nox.param(
                    python, django, db, id=f"py{python}-django{django}-{db}", tags=[tag]
                )


def _requirements(django: str, folder: Path) -> Path:
    """requirements/test.txt, flattened, with this session's Django pin."""
    pin, _ = DJANGO[django]
    lines: list[str] = []

    def read(path: Path) -> None:
        for line in path.read_text().splitlines():
            if line.startswith("-r "):
                read(path.parent / line[3:].strip())
            elif pin and re.match(r"(?i)django==", line):
                lines.append(pin)
            else:
                lines.append(line)

    read(ROOT / "requirements" / "test.txt")
    target = folder / "requirements.txt"
    target.write_text("\n".join(lines) + "\n")
    return target


@nox.session
@nox.parametrize("python,django,db", list(_combinations()))
def tests(session: nox.Session, django: str, db: str) -> None:
    session.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    requirements = _requirements(django, Path(session.create_tmp()))
    session.install("-q", "-r", str(requirements))
    session.install("-q", "--no-deps", "-e", ".")
    session.run("python", "-c", "import django; print('Django', django.get_version())")
    session.env["DJANGO_SETTINGS_MODULE"] = SETTINGS[db]
    if (session.python, django, db) == MAIN:
        arguments = []
    else:
        ignored = [f"--ignore={path}" for path in QUICK_IGNORE]
        arguments = [*QUICK_PATHS, *ignored, "-m", "not slow", "-p", "no:cacheprovider"]
    session.run("python", "-m", "pytest", "-q", *arguments, *session.posargs)
