"""The CIFAR-10 data: the official download or a local copy read safely, checked, split for a study.

Public modules: ``cifar10`` (sources, the validation split, subsets), ``safe_files`` (reading a user's file
with bounds), ``safe_pickle`` (the official batches unpickled without code execution)."""

__all__ = ["cifar10", "safe_files", "safe_pickle"]
