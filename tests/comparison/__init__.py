"""Tests of cifar_tune.comparison (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
