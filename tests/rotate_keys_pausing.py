"""Test-only: run ``manage.py bill_rotate_keys`` and hold still after N rows, to be SIGKILLed there.

The kill test in ``tests/services/test_rotation.py`` must kill the command at an exact point (30% and
70% of the rows). Polling the database from the test and racing the command is fragile on a
loaded machine (the command may finish before the test process is scheduled again), so the
child stops itself instead::

    BILL_TEST_PAUSE_AFTER_ROWS=300 BILL_TEST_PAUSE_MARKER=/tmp/x \\
        python -m tests.rotate_keys_pausing --batch-size 25

runs the real command (same argument parsing, checks and ``rotation.rotate_all``) with one
difference: after the N-th row has been handled (its UPDATE committed), it writes the marker
file and sleeps until it is killed. Nothing in ``bill_integration`` knows about this: the hook
is this wrapper around ``rotation.rotate_all``'s ``on_row`` callback, and it lives in
``tests/`` only. If nobody kills it, it exits with status 3 after ``MAX_PAUSE_SECONDS`` so a
crashed test leaves no process behind.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_PAUSE_SECONDS = 300


def _pausing(rotate_all: Callable[..., Any], pause_after: int, marker: Path) -> Callable[..., Any]:
    def rotate_all_then_pause(*args: Any, on_row: Callable[[str], None] | None = None, **kw: Any):
        handled = 0

        def counting(outcome: str) -> None:
            nonlocal handled
            if on_row is not None:
                on_row(outcome)
            handled += 1
            if handled == pause_after:
                marker.write_text(f"{handled}\n")
                time.sleep(MAX_PAUSE_SECONDS)  # the test SIGKILLs us here
                os._exit(3)

        return rotate_all(*args, on_row=counting, **kw)

    return rotate_all_then_pause


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_keys")
    import django

    django.setup()
    from django.core.management import execute_from_command_line

    from bill_integration import key_rotation as rotation

    rotation.rotate_all = _pausing(  # type: ignore[assignment]
        rotation.rotate_all,
        int(os.environ["BILL_TEST_PAUSE_AFTER_ROWS"]),
        Path(os.environ["BILL_TEST_PAUSE_MARKER"]),
    )
    execute_from_command_line(["manage.py", "bill_rotate_keys", *sys.argv[1:]])


if __name__ == "__main__":
    main()
