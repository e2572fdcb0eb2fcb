"""docs/benchmarks.md names the code it measured: those figures must be of the code as it is.

Every section says ``Code measured: git <commit> + working tree (sha256: services <digest>, ...)``.
When a change to the measured code lands without the benchmarks being run again, the figures
describe code that no longer exists; this test says which section to re-run.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.common import code_digests

ROOT = Path(__file__).resolve().parents[2]
SECTION = re.compile(r"<!-- bench:(?P<name>\w+):start -->(?P<body>.*?)<!-- bench:\w+:end -->", re.S)
DIGESTS = re.compile(r"\(sha256: (?P<digests>[^)]*)\)")


def named_digests(body: str) -> dict[str, str]:
    match = DIGESTS.search(body)
    assert match, "a benchmark section without its 'Code measured' line"
    pairs = (item.strip().rsplit(" ", 1) for item in match["digests"].split(","))
    return {name: digest for name, digest in pairs}


def test_every_benchmark_section_names_the_current_code():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    sections = list(SECTION.finditer(text))
    assert len(sections) >= 8
    current = code_digests()
    stale = {
        section["name"]: named
        for section in sections
        if (named := named_digests(section["body"])) != current
    }
    assert stale == {}, (
        f"Re-run these benchmarks on the current code (python bench/run.py NAME): "
        f"{sorted(stale)}; current code digests: {current}"
    )


def test_a_changed_module_changes_the_digests(tmp_path, monkeypatch):
    """The check can fail: the digest follows the measured code's bytes."""
    import bench.common as common

    before = code_digests()
    package = tmp_path / "bill_integration"
    (package / "services").mkdir(parents=True)
    (package / "limits").mkdir()
    (package / "client").mkdir()
    for name in ("services/a.py", "limits/a.py", "client/base.py"):
        (package / name).write_text("x = 1\n")
    monkeypatch.setattr(common, "ROOT", tmp_path)
    first = code_digests()
    (package / "services" / "a.py").write_text("x = 2\n")
    second = code_digests()
    assert first != second and first["limits"] == second["limits"]
    assert first != before
