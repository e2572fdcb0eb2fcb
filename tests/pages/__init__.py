"""Tests of the pages layer."""
