"""Tests of the emulator layer."""
