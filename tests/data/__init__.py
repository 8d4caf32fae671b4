"""Tests of cifar_tune.data (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
