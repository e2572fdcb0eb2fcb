"""The reference pages, generated from the code at build time, so they never drift.

Two ways to run it:

* **As an MkDocs hook** (``hooks: [docs/gen_reference.py]`` in ``mkdocs.yml``): every page may
  hold markers such as ``<!-- reference:settings -->``; each is replaced with a section
  generated from the code of this checkout, and ``reference/openapi.yaml`` (the REST API's
  OpenAPI schema, from ``manage.py spectacular``) is added to the site. A marker naming no
  generator, a setting, signal, task, command or error without a description in the code, and
  a link out of ``docs/`` to a file the repository does not have are warnings, so
  ``mkdocs build --strict`` fails on them.
* **As a script**: ``python docs/gen_reference.py [--out DIR]`` prints (or writes to ``DIR``,
  one Markdown file per section, plus ``openapi.yaml``) what the hook would insert.

Nothing here lists names: settings come from ``conf.DEFAULTS`` (the comment above each key is
its meaning), deprecated settings from ``conf.DEPRECATED_SETTINGS``, signals from the
``Signal`` objects of ``bill_integration.signals`` (their ``#:`` comments), tasks from Celery's
registry, commands from Django's, error codes from ``api.errors.ERROR_CODES`` and the
exception classes, services from ``bill_integration.services.__all__``. A new name appears
in the docs by itself; one without a description fails the strict build.
"""

from __future__ import annotations

import argparse
import ast
import http
import inspect
import logging
import os
import re
import sys
import tempfile
import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*reference:([a-z_]+)\s*-->")
log = logging.getLogger("mkdocs.plugins.bill_reference")

#: What the REST API's own codes (``api.errors.API_ERROR_CODES``: not exception classes, so
#: without a docstring to read) mean. A code missing here still appears, with its HTTP status.
API_CODE_MEANINGS = {
    "validation_error": "A field is missing or not valid; `fields` names each one and what is "
    "wrong (for example an invisible character pasted into the API token).",
    "malformed_request": "The body is not JSON, or is nested too deeply.",
    "request_too_large": "The body is over the server's size limit "
    "(`DATA_UPLOAD_MAX_MEMORY_SIZE`), or has too many fields or files.",
    "not_found": "Not signed in, no tenant, or no access to it: the same answer for all, so "
    "nothing is revealed.",
    "permission_denied": "The user may read the connection but not change it.",
    "throttled": "Too many link attempts or forced refreshes for this tenant or user "
    "(`LINK_THROTTLE_RATES`, `REFRESH_THROTTLE_RATES`); carries `Retry-After`.",
    "method_not_allowed": "The endpoint does not answer this HTTP method.",
    "not_acceptable": "The `Accept` header asks for something other than JSON.",
    "unsupported_media_type": "The body is not `application/json`.",
}


# --- Django ---------------------------------------------------------------------------------------


def setup_django() -> None:
    """Configure Django once (the example project's test settings unless one is named)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.test")
    from django.apps import apps

    if not apps.ready:
        import django

        django.setup()


# --- text helpers ---------------------------------------------------------------------------------

_ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def inline(text: str) -> str:
    """reStructuredText inline markup (``code``, :class:`X`) as Markdown."""
    text = _ROLE.sub(_role, text)
    return re.sub(r"``(.+?)``", r"`\1`", text)


def rst_to_md(text: str) -> str:
    """A docstring as Markdown: inline markup, ``::`` literal blocks as fenced code."""
    lines = textwrap.dedent(text or "").strip("\n").splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            intro = line.rstrip()[:-2].rstrip()
            if intro:
                out.append(inline(intro) + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i][:1] in " \t"):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += [
                "",
                "```text",
                *textwrap.dedent("\n".join(block)).strip("\n").splitlines(),
                "```",
                "",
            ]
            continue
        out.append(inline(line))
        i += 1
    return "\n".join(out).strip()


def cell(text: Any) -> str:
    """Text fit for one Markdown table cell."""
    value = str(text).strip()
    value = re.sub(r"\n\s*\n", "<br><br>", value)
    return value.replace("\n", " ").replace("|", "\\|")


def first_paragraph(doc: str | None) -> str:
    return inline(re.split(r"\n\s*\n", inspect.cleandoc(doc or "").strip(), maxsplit=1)[0])


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def human_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % (size / 2) == 0:
            amount = seconds / size
            text = f"{amount:g}"
            return f"{text} day" if unit == "days" and amount == 1 else f"{text} {unit}"
    return f"{seconds:g} s"


def format_value(value: Any) -> str:
    """A default value, short, as Markdown."""
    if isinstance(value, timedelta):
        return human_duration(value)
    return f"`{value!r}`"


def source_lines(module: Any) -> tuple[list[str], ast.Module]:
    source = inspect.getsource(module)
    return source.splitlines(), ast.parse(source)


def comments_above(lines: list[str], lineno: int, prefix: str = "#") -> list[str]:
    """The comment lines (starting with ``prefix``) right above line ``lineno`` (1-based)."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith(prefix):
        found.insert(0, lines[index].strip()[len(prefix) :].strip())
        index -= 1
    return found


def doc_comments(module: Any) -> dict[str, list[str]]:
    """``name -> lines`` of the ``#:`` comments above each module-level assignment."""
    lines, tree = source_lines(module)
    docs: dict[str, list[str]] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                docs[target.id] = comments_above(lines, node.lineno, "#:")
    return docs


def prose(comment_lines: list[str]) -> str:
    """``#:`` comment lines as text; lines that are only a URL become links."""
    words = [line for line in comment_lines if not line.startswith("http")]
    links = [f"<{line}>" for line in comment_lines if line.startswith("http")]
    text = inline(" ".join(words))
    return f"{text} ({', '.join(links)})" if links else text


def missing(what: str) -> str:
    log.warning("gen_reference: %s", what)
    return f"*(not documented: {what})*"


# --- settings -------------------------------------------------------------------------------------


def settings_defaults() -> list[tuple[str, Any, str]]:
    """``(key, default, meaning)`` for every key of ``conf.DEFAULTS``, in the code's order."""
    from bill_integration import conf

    lines, tree = source_lines(conf)
    meanings: dict[str, str] = {}
    for node in tree.body:
        value = getattr(node, "value", None)
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "DEFAULTS" and isinstance(value, ast.Dict):
            for key in value.keys:
                if isinstance(key, ast.Constant):
                    meanings[key.value] = inline(" ".join(comments_above(lines, key.lineno)))
    return [(key, default, meanings.get(key, "")) for key, default in conf.DEFAULTS.items()]


def gen_settings() -> str:
    from bill_integration import conf

    imported = set(getattr(conf, "IMPORT_STRINGS", ()))
    rows, long_values = [], []
    for key, default, meaning in settings_defaults():
        shown = format_value(default)
        if len(shown) > 60:
            long_values.append((key, default))
            shown = f"see [below](#default-{key.lower().replace('_', '-')})"
        if key in imported:
            meaning += " A dotted path (imported on first use) or the object itself."
        rows.append(
            [
                f"`{key}`",
                shown,
                meaning or missing(f"setting {key} has no comment in conf.DEFAULTS"),
            ]
        )
    parts = [table(["key", "default", "meaning"], rows)]
    for key, default in long_values:
        import pprint

        parts += [
            f"\n#### Default of `{key}` {{ #default-{key.lower().replace('_', '-')} }}\n",
            "```python\n" + pprint.pformat(default, width=88, sort_dicts=False) + "\n```",
        ]
    return "\n".join(parts)


def gen_deprecated_settings() -> str:
    from bill_integration import conf

    rows = [[f"`{key}`", inline(advice)] for key, advice in conf.DEPRECATED_SETTINGS.items()]
    rows += [
        [
            f"`{key}` as a number of seconds",
            "Give a `datetime.timedelta` (a number is converted, until the next release).",
        ]
        for key in getattr(conf, "SECONDS_SETTINGS", ())
    ]
    return table(["key", "what to do instead"], rows)


def gen_checks() -> str:
    from bill_integration import checks

    rows = []
    for name, value in vars(checks).items():
        if re.fullmatch(r"[CEWI]\d{3}_[A-Z0-9_]+", name) and isinstance(value, str):
            words = name.split("_", 1)[1].replace("_", " ").lower()
            rows.append([f"`{value}`", words])
    return table(["id", "about"], sorted(rows))


def gen_constants() -> str:
    from bill_integration import constants

    docs = doc_comments(constants)
    rows = []
    for name, value in vars(constants).items():
        if name.isupper() and not name.startswith("_"):
            rows.append(
                [
                    f"`{name}`",
                    format_value(value),
                    prose(docs.get(name, [])) or missing(f"constant {name} has no #: comment"),
                ]
            )
    return table(["constant", "value", "what BILL says"], rows)


# --- signals --------------------------------------------------------------------------------------


def signal_objects() -> dict[str, Any]:
    from django.dispatch import Signal

    from bill_integration import signals

    return {
        name: obj
        for name, obj in vars(signals).items()
        if isinstance(obj, Signal) and not name.startswith("_")
    }


def gen_signals() -> str:
    from bill_integration import signals

    docs = doc_comments(signals)
    rows = []
    for name in signal_objects():
        text = " ".join(docs.get(name, []))
        match = re.search(r"\bkwargs:\s*(.+?)\.?\s*$", text)
        kwargs = ", ".join(f"`{arg.strip()}`" for arg in match.group(1).split(",")) if match else ""
        when = inline(text[: match.start()].strip() if match else text)
        rows.append(
            [
                f"`{name}`",
                when or missing(f"signal {name} has no #: comment"),
                kwargs or missing(f"signal {name} names no kwargs in its #: comment"),
            ]
        )
    out = table(["signal", "sent when", "keyword arguments"], rows)
    renamed = getattr(signals, "_RENAMED", {})
    if renamed:
        out += (
            "\n\nOld names, still importable (reading one warns with a `DeprecationWarning`):\n\n"
        )
        out += table(
            ["old name", "the same signal as"],
            [[f"`{old}`", f"`{new}`"] for old, new in renamed.items()],
        )
    return out


# --- Celery tasks ---------------------------------------------------------------------------------


def app_tasks() -> dict[str, Any]:
    """Every Celery task the app registers, by name."""
    from celery import current_app

    import bill_integration.tasks  # noqa: F401  (registers the shared tasks)

    return {
        name: task
        for name, task in sorted(current_app.tasks.items())
        if name.startswith("bill_integration.")
        or str(getattr(task, "__module__", "")).startswith("bill_integration")
    }


def _decorator_options(function: Callable[..., Any]) -> str:
    """The keyword arguments of the ``@shared_task(...)`` decorating ``function``, but ``name``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return ""
    node = tree.body[0]
    for decorator in getattr(node, "decorator_list", []):
        if isinstance(decorator, ast.Call):
            return ", ".join(
                f"`{kw.arg}={ast.unparse(kw.value)}`"
                for kw in decorator.keywords
                if kw.arg != "name"
            )
    return ""


def _module_doc_entry(module_doc: str, name: str) -> str:
    """The indented paragraph under ````name```` in a module docstring (a definition list)."""
    lines = inspect.cleandoc(module_doc or "").splitlines()
    for index, line in enumerate(lines):
        if line.strip() == f"``{name}``":
            body = []
            for following in lines[index + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break
                body.append(following)
            return inline(" ".join(part.strip() for part in body if part.strip()))
    return ""


def gen_tasks() -> str:
    parts = []
    for name, task in app_tasks().items():
        function = task.run
        module = sys.modules.get(function.__module__)
        signature = _signature(function, name)
        summary = first_paragraph(function.__doc__)
        details = _module_doc_entry(getattr(module, "__doc__", ""), name)
        options = _decorator_options(function)
        parts += [
            f"### `{name}`\n",
            f"```python\n{signature}\n```\n",
            summary or missing(f"task {name} has no docstring"),
            "",
        ]
        if details:
            parts += [details, ""]
        parts += [
            f"Defined as `{function.__module__}.{function.__name__}`"
            + (f"; options {options}." if options else "."),
            "",
        ]
    return "\n".join(parts)


# --- management commands --------------------------------------------------------------------------


def app_commands() -> dict[str, Any]:
    """``name -> Command`` for every management command of the app."""
    from django.core.management import get_commands, load_command_class

    return {
        name: load_command_class(app, name)
        for name, app in sorted(get_commands().items())
        if app == "bill_integration"
    }


def gen_commands() -> str:
    from django.core.management.base import BaseCommand

    base_dests = {action.dest for action in BaseCommand().create_parser("manage.py", "x")._actions}
    parts = []
    for name, command in app_commands().items():
        parser = command.create_parser("manage.py", name)
        formatter = parser._get_formatter()
        rows, synopsis = [], []
        for action in parser._actions:
            if action.dest in base_dests:
                continue
            label = ", ".join(f"`{opt}`" for opt in action.option_strings) or f"`{action.dest}`"
            metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else "")
            if action.option_strings and action.nargs != 0:
                label += f" `{metavar}`"
            default = action.default
            shown_default = "" if default in (None, False, argparse.SUPPRESS) else f"`{default}`"
            help_text = formatter._expand_help(action) if action.help else ""
            rows.append(
                [
                    label,
                    shown_default,
                    inline(help_text) or missing(f"option {label} of {name} has no help"),
                ]
            )
            synopsis.append(
                f"[{action.option_strings[0]}{' ' + metavar if action.nargs != 0 else ''}]"
                if action.option_strings
                else metavar or action.dest
            )
        help_text = inline(str(command.help or "")) or missing(f"command {name} has no help")
        parts += [
            f"### `{name}`\n",
            f"```\npython manage.py {name} {' '.join(synopsis)}\n```\n",
            help_text,
            "",
        ]
        if rows:
            parts += [table(["option", "default", "what it does"], rows), ""]
        for group in parser._mutually_exclusive_groups:
            names = ", ".join(f"`{a.option_strings[0]}`" for a in group._group_actions)
            parts += [f"Give at most one of {names}.", ""]
        module = sys.modules.get(type(command).__module__)
        doc = inspect.cleandoc(getattr(module, "__doc__", "") or "")
        body = doc.split("\n\n", 1)[1] if "\n\n" in doc else ""
        if body.strip():
            parts += [rst_to_md(body), ""]
        parts += [
            "Django's own options (`--verbosity`, `--settings`, `--traceback`, ...) apply too.",
            "",
        ]
    return "\n".join(parts)


# --- services -------------------------------------------------------------------------------------


def _error_names() -> dict[str, Any]:
    from bill_integration import exceptions

    return {
        name: obj
        for name, obj in vars(exceptions).items()
        if isinstance(obj, type) and issubclass(obj, exceptions.BillIntegrationError)
    }


def _raises(doc: str) -> str:
    errors = _error_names()
    found = []
    for name in re.findall(r":(?:class|exc):`~?(?:[\w.]*\.)?(\w+)`", doc or ""):
        if name in errors and name not in found:
            found.append(name)
    return ", ".join(f"[`{name}`](errors.md) (`{errors[name].code}`)" for name in found)


def _signature(obj: Any, name: str, *, method: bool = False) -> str:
    try:
        found = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    if method:  # drop self
        found = found.replace(parameters=list(found.parameters.values())[1:])
    if inspect.isclass(obj):
        found = found.replace(return_annotation=inspect.Signature.empty)
    signature = str(found)
    # Annotations are strings (``from __future__ import annotations``): drop their quotes.
    signature = re.sub(r"(: |-> )'([^']*)'", r"\1\2", signature)
    return _wrap(f"{name}{signature}")


def _wrap(signature: str, width: int = 88) -> str:
    """A long ``name(a, b) -> c`` with one parameter per line, as black would write it."""
    if len(signature) <= width:
        return signature
    opening = signature.index("(")
    depth, start, params, close = 0, opening + 1, [], len(signature)
    for index in range(opening, len(signature)):
        char = signature[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                close = index
                break
        elif char == "," and depth == 1:
            params.append(signature[start:index].strip())
            start = index + 1
    params.append(signature[start:close].strip())
    body = "".join(f"    {param},\n" for param in params if param)
    return f"{signature[:opening]}(\n{body}){signature[close + 1 :]}"


def gen_services() -> str:
    from bill_integration import services

    parts = []
    for name in services.__all__:
        obj = getattr(services, name)
        kind = "class" if inspect.isclass(obj) else "function"
        doc = inspect.getdoc(obj) or ""
        parts += [
            f"### `{name}`\n",
            f"```python\n{kind if kind == 'class' else 'def'} {_signature(obj, name)}\n```\n",
            rst_to_md(doc) or missing(f"services.{name} has no docstring"),
            "",
        ]
        raises = _raises(doc)
        if raises:
            parts += [f"**Raises:** {raises}.", ""]
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member):
                    continue
                parts += [
                    f"#### `{name}.{attr}`\n",
                    f"```python\ndef {_signature(member, attr, method=True)}\n```\n",
                    rst_to_md(inspect.getdoc(member) or ""),
                    "",
                ]
                raises = _raises(inspect.getdoc(member) or "")
                if raises:
                    parts += [f"**Raises:** {raises}.", ""]
    return "\n".join(parts)


# --- error codes ----------------------------------------------------------------------------------


def gen_errors() -> str:
    from django.utils import translation

    from bill_integration import exceptions
    from bill_integration.api import errors as api_errors

    api_rows, class_rows = [], []
    with translation.override("en"):
        for code in dict.fromkeys(api_errors.ERROR_CODES):
            cls = exceptions.error_class_for(code)
            if code in api_errors.API_ERROR_CODES and (cls is None or cls.code != code):
                status = api_errors.API_ERROR_CODES[code]
                meaning = API_CODE_MEANINGS.get(code) or http.HTTPStatus(status).phrase + "."
                api_rows.append([f"`{code}`", status, meaning])
                continue
            if cls is None:
                class_rows.append([f"`{code}`", "", "", missing(f"error code {code} has no class")])
                continue
            parent = next(
                (
                    base.__name__
                    for base in cls.__mro__[1:]
                    if issubclass(base, exceptions.BillIntegrationError)
                ),
                "",
            )
            raised = f"`{cls.__name__}`" + (f"<br>(a kind of `{parent}`)" if parent else "")
            meaning = first_paragraph(cls.__doc__) or missing(f"{cls.__name__} has no docstring")
            customer = cls.for_customer()  # without customer_text: the developer's message
            class_rows.append(
                [f"`{code}`", cls.api_status, raised, f"{meaning}<br><br>*Message:* {customer}"]
            )
    out = [
        "## Errors of the app and of BILL\n",
        "Raised by the services (catch them in Python), recorded as a connection's "
        "`last_error.code`, and answered by the REST API with the HTTP status and the message "
        "shown.\n",
        table(["code", "HTTP status", "exception", "meaning"], class_rows),
        "\n## The REST API's own codes\n",
        "Answered only by the REST API, for what happens before a service is called.\n",
        table(["code", "HTTP status", "meaning"], api_rows),
    ]
    try:
        from bill_integration.client.errors import BILL_ERROR_CODES
    except ImportError:  # pragma: no cover
        return "\n".join(out)
    bill_rows = [
        [f"`{bdc}`", f"`{cls.__name__}`", f"`{cls.code}`"] for bdc, cls in BILL_ERROR_CODES.items()
    ]
    out += [
        "\n## BILL's codes\n",
        "What the client raises for each `BDC_xxxx` code BILL answers with "
        "(`bill_integration.client.errors.BILL_ERROR_CODES`); any other code is "
        "`UnexpectedResponse`, whatever the HTTP status.\n",
        table(["BILL code", "exception", "code"], bill_rows),
    ]
    return "\n".join(out)


# --- the REST API ---------------------------------------------------------------------------------

_SCHEMA_CACHE: dict[str, Any] = {}


def openapi_yaml() -> str:
    """The OpenAPI schema of the example project's URLs (``manage.py spectacular``)."""
    if "yaml" not in _SCHEMA_CACHE:
        from django.core.management import call_command

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "openapi.yaml"
            # Not --fail-on-warn: a schema warning of a new endpoint is the schema tests' business.
            call_command("spectacular", "--file", str(path))
            _SCHEMA_CACHE["yaml"] = path.read_text()
    return _SCHEMA_CACHE["yaml"]


def openapi() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(openapi_yaml())


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[`{name}`](#{_anchor(name)})"
    if "allOf" in schema:
        text = " & ".join(_type(part) for part in schema["allOf"])
    elif "oneOf" in schema or "anyOf" in schema:
        text = " or ".join(_type(part) for part in schema.get("oneOf", schema.get("anyOf", [])))
    elif schema.get("type") == "array":
        text = f"array of {_type(schema.get('items', {}))}"
    elif schema.get("type") == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        text = "object of " + (_type(extra) if isinstance(extra, dict) else "any")
    else:
        text = f"`{schema.get('type', 'any')}`"
        if "format" in schema:
            text += f" ({schema['format']})"
    if schema.get("enum"):
        text += ": " + ", ".join(
            f"`{value}`" for value in schema["enum"] if value not in ("", None)
        )
    if schema.get("nullable"):
        text += " or `null`"
    return text


def _description(text: str | None) -> str:
    """A schema description without drf-spectacular's enum bullet list (the type says it)."""
    kept = [line for line in (text or "").splitlines() if not line.lstrip().startswith("* `")]
    return inline("\n".join(kept).strip())


def gen_rest_api() -> str:
    schema = openapi()
    overview = [
        [
            f"[`{method.upper()} {path}`](#op-{operation.get('operationId')})",
            operation.get("summary", ""),
        ]
        for path, operations in schema.get("paths", {}).items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "responses" in operation
    ]
    parts = ["## Operations\n", table(["operation", "what it does"], overview), ""]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            title = f"{method.upper()} {path}"
            parts += [
                f"### {title} {{ #op-{operation.get('operationId')} }}\n",
                f"**{operation.get('summary', '')}** (`{operation.get('operationId')}`)\n",
                _description(operation.get("description")),
                "",
            ]
            security = [name for item in operation.get("security", []) for name in item]
            if security:
                parts += [
                    "Authentication: " + ", ".join(f"`{name}`" for name in security) + ".",
                    "",
                ]
            params = operation.get("parameters", [])
            if params:
                parts += [
                    table(
                        ["parameter", "in", "required", "type", "description"],
                        [
                            [
                                f"`{p['name']}`",
                                p.get("in", ""),
                                "yes" if p.get("required") else "no",
                                _type(p.get("schema", {})),
                                _description(p.get("description")),
                            ]
                            for p in params
                        ],
                    ),
                    "",
                ]
            body = operation.get("requestBody")
            if body:
                content = body.get("content", {})
                types = ", ".join(f"`{media}`" for media in content)
                first = next(iter(content.values()), {})
                parts += [
                    f"Request body ({'required' if body.get('required') else 'optional'}):"
                    f" {_type(first.get('schema', {}))}, as {types}.",
                    "",
                ]
            rows = []
            for status, response in sorted(operation.get("responses", {}).items()):
                media = response.get("content", {})
                first = next(iter(media.values()), {})
                rows.append(
                    [
                        f"`{status}`",
                        _type(first["schema"]) if "schema" in first else "none",
                        _description(response.get("description")),
                    ]
                )
            parts += [table(["status", "body", "when"], rows), ""]
    parts += ["## Schemas\n"]
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        parts += [
            f"### {name} {{ #{_anchor(name)} }}\n",
            _description(component.get("description")),
            "",
        ]
        properties = component.get("properties")
        if properties:
            required = set(component.get("required", []))
            rows = []
            for prop, spec in properties.items():
                flags = [
                    flag
                    for flag, on in (
                        ("required", prop in required),
                        ("read-only", spec.get("readOnly")),
                        ("write-only", spec.get("writeOnly")),
                    )
                    if on
                ]
                rows.append(
                    [
                        f"`{prop}`",
                        _type(spec),
                        ", ".join(flags),
                        _description(spec.get("description")),
                    ]
                )
            parts += [table(["field", "type", "", "description"], rows), ""]
        elif component.get("enum"):
            parts += ["One of " + ", ".join(f"`{value}`" for value in component["enum"]) + ".", ""]
    schemes = schema.get("components", {}).get("securitySchemes", {})
    if schemes:
        parts += [
            "### Authentication schemes\n",
            table(
                ["name", "type", "where"],
                [
                    [
                        f"`{name}`",
                        spec.get("type", ""),
                        f"{spec.get('in', '')} `{spec.get('name', '')}`",
                    ]
                    for name, spec in schemes.items()
                ],
            ),
            "",
        ]
    return "\n".join(parts)


# --- the emulator's pytest plugin -----------------------------------------------------------------


def gen_fixtures() -> str:
    from bill_integration.emulator import pytest_plugin

    module_doc = inspect.cleandoc(pytest_plugin.__doc__ or "")
    rows = []
    for name, obj in vars(pytest_plugin).items():
        marker = getattr(obj, "_fixture_function_marker", None)
        if marker is None:
            continue
        fixture_name = marker.name or getattr(obj, "name", name)
        bullet = re.search(
            rf"^\* ``{re.escape(fixture_name)}`` [—-]+ (.+?)(?=^\* |\Z)",
            module_doc,
            re.MULTILINE | re.DOTALL,
        )
        text = bullet.group(1) if bullet else (obj.__doc__ or "")
        text = " ".join(text.split())
        rows.append(
            [
                f"`{fixture_name}`",
                marker.scope,
                inline(text[:1].upper() + text[1:])
                or missing(f"fixture {fixture_name} has no docstring"),
            ]
        )
    return table(["fixture", "scope", "what it gives"], rows)


def gen_emulator_faults() -> str:
    from bill_integration.emulator import state

    rows = [[f"`{kind}`", inline(text)] for kind, text in state.FAULT_KINDS.items()]
    out = table(["fault kind", "what a matching request gets"], rows)
    limits = ", ".join(f"`{name}` ({value})" for name, value in state.DEFAULT_LIMITS.items())
    counters = ", ".join(f"`{name}`" for name in state.COUNTER_NAMES)
    return (
        out + f"\n\nLimits (`set_limits(...)`, until the next `reset()`): {limits}.\n\n"
        f"Counters (`counters(organization_id=..., dev_key=...)`): {counters}."
    )


# --- the hook -------------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[[], str]] = {
    "settings": gen_settings,
    "deprecated_settings": gen_deprecated_settings,
    "checks": gen_checks,
    "constants": gen_constants,
    "signals": gen_signals,
    "tasks": gen_tasks,
    "commands": gen_commands,
    "services": gen_services,
    "errors": gen_errors,
    "rest_api": gen_rest_api,
    "fixtures": gen_fixtures,
    "emulator_faults": gen_emulator_faults,
}

_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s]+)\)")


def _outside_links(markdown: str, page_path: Path, docs_dir: Path) -> str:
    """Links from a page to repository files outside ``docs/`` (they work on GitHub, not in the
    site): written as the file's path in the repository; a missing file is a warning."""

    def replace(match: re.Match[str]) -> str:
        text, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        file_part = target.split("#", 1)[0]
        resolved = (page_path.parent / file_part).resolve()
        if resolved.is_relative_to(docs_dir.resolve()):
            return match.group(0)
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            log.warning(
                "gen_reference: %s links to %s, which is not in the repository",
                page_path.relative_to(docs_dir),
                target,
            )
            return match.group(0)
        relative = resolved.relative_to(ROOT).as_posix()
        return f"{text} (`{relative}` in the repository)" if f"`{relative}`" != text else text

    return _LINK.sub(replace, markdown)


def on_config(config: Any) -> Any:
    setup_django()
    _SCHEMA_CACHE.clear()
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/openapi.yaml", content=openapi_yaml()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"])

    def replace(match: re.Match[str]) -> str:
        generator = GENERATORS.get(match.group(1))
        if generator is None:
            log.warning(
                "gen_reference: %s has an unknown marker %r", page.file.src_uri, match.group(0)
            )
            return match.group(0)
        return generator()

    markdown = MARKER.sub(replace, markdown)
    return _outside_links(markdown, docs_dir / page.file.src_uri, docs_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, help="write one .md per section (and openapi.yaml) here"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    setup_django()
    for name, generator in GENERATORS.items():
        text = generator()
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.md").write_text(text + "\n")
        else:
            print(f"<!-- reference:{name} -->\n{text}\n")
    if args.out:
        (args.out / "openapi.yaml").write_text(openapi_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
