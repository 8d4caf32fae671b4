"""Helpers shared by the tests and the benchmarks, imported by name (``tests.helpers.synthetic``, ...): tiny
synthetic data, the official file layouts built tiny, throwaway PostgreSQL servers, a stand-in nvidia-smi, waiting
for trial states, stopping a server process. The fixtures built on them are in tests/conftest.py."""
