"""Tests of cifar_tune.views (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
