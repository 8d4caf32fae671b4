"""Tests of cifar_tune.models (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
