"""Tests of the scripts under benchmarks/ (the peers' smoke run, the GPU check)."""
