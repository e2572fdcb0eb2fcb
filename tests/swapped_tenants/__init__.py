"""A second tenant model, swapped in by ``tests/settings_swapped.py`` to prove migrations are pluggable."""
