"""Benchmarks of bill_integration: ``python bench/run.py NAME`` (see ``bench/README.md``)."""
