"""Tests of cifar_tune.cli (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
