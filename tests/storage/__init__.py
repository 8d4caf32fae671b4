"""Tests of cifar_tune.storage (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
