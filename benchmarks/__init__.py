"""Measurements of cifar-tune, run as scripts (``python benchmarks/NAME.py``); ``gpu_check`` is a package."""
