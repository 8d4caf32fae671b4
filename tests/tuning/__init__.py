"""Tests of cifar_tune.tuning (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
