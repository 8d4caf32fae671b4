"""The peers of ``benchmarks/peers.py``: one study definition run through cifar-tune and the tools users pick instead.

- ``common``: the data split (cifar-tune's exact indices), the two models (copied from the seed's definitions), the
  optimizer, the search space read from ``search_spaces/<arch>.toml``, the per-epoch log every peer writes, and
  the retraining on fresh seeds that scores each tool's best configuration on the test set;
- ``cifartune``: cifar-tune through its command line (``optimize``, then ``compare --seeds N``);
- ``kerastuner``: KerasTuner 1.4 (``Hyperband`` and ``BayesianOptimization``);
- ``optuna_plain``: a plain Optuna script with ``optuna_integration.KerasPruningCallback``;
- ``raytune``: Ray Tune with ``OptunaSearch`` and ``ASHAScheduler`` on a local CPU cluster;
- ``runner``: one tool's search or retraining in its own process; ``measure``: its wall time, memory and disk;
- ``bench``: the loop over repetitions, architectures and tools; ``table``: medians, ranges, pairs, Markdown.
"""
