"""Tests of cifar_tune.studies (shared helpers: tests.helpers; fixtures: tests/conftest.py)."""
