"""Tests of cifar_tune.runtime (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
