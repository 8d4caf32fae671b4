"""Tests of cifar_tune.engines (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
