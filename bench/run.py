"""Run the benchmarks: ``.venv/bin/python bench/run.py efficiency|capacity|sweep|hotpath|stampede|limiter|fleet|methods|all``.

Each benchmark creates the PostgreSQL database ``bench_bill_integration`` (dropped at the
end, ``--keep-db`` keeps it), uses Redis db 5 for the shared limits, prints its figures and
rewrites its own section of ``docs/benchmarks.md`` (``--no-write`` only prints).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

BENCHMARKS = (
    "efficiency",
    "capacity",
    "sweep",
    "hotpath",
    "stampede",
    "limiter",
    "fleet",
    "methods",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave the doc")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database")
    args, extra = parser.parse_known_args(argv)
    options = {}
    for item in extra:  # --tenants=100 style overrides, for quick trial runs
        key, _, value = item.lstrip("-").partition("=")
        options[key.replace("-", "_")] = int(value) if value.isdigit() else value
    common.setup_django()
    names = BENCHMARKS if args.name == "all" else (args.name,)
    try:
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            command = f".venv/bin/python bench/run.py {name}"
            if options:
                command += " " + " ".join(
                    f"--{k.replace('_', '-')}={v}" for k, v in options.items()
                )
            print(f"== {name} ==", flush=True)
            common.fresh_database()
            started = time.perf_counter()
            outcome = module.run(**options)
            seconds = time.perf_counter() - started
            facts = common.machine_facts()
            text = module.report(outcome, command, facts, seconds)
            print(text, flush=True)
            if not args.no_write:
                common.write_section(name, text)
                print(f"(written to {common.DOC.relative_to(common.ROOT)})", flush=True)
    finally:
        from bill_integration import limits

        limits.get_limiter().reset()  # leave Redis db 5 as we found it
        if not args.keep_db:
            common.drop_database()
    return 0


if __name__ == "__main__":
    sys.exit(main())
