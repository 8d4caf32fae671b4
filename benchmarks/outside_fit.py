"""Time outside ``fit`` per trial: a tiny in-process study (synthetic data, mlp_l2, 1 epoch, no pruning) run by the
cifar-tune found on ``PYTHONPATH``; prints per trial the seconds between consecutive trial starts less the
trial's training seconds, and what a second full collection after the trial's ``clear_session`` still finds.

    PYTHONPATH=. python benchmarks/outside_fit.py [--trials 8] [--train 2000] [--out result.json]

Run it against two checkouts, interleaved, on the same machine (issue 27 item 3): only the differences mean
something on a shared CPU. The numerics check is cached beforehand (``$CIFAR_TUNE_NUMERICS_DIR``) so it is not
counted."""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_cifar(n_train: int, n_test: int):
    """tests/helpers/synthetic.py's data, loaded by path: the cifar-tune measured is PYTHONPATH's, not this
    checkout's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("synthetic", Path(__file__).resolve().parents[1] / "tests" / "helpers"
                                                  / "synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_cifar(n_train, n_test)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--out")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="outside-fit-"))
    data = work / "tiny.npz"
    x, y, xt, yt = synthetic_cifar(args.train, args.train // 5)
    np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt)
    os.chdir(work)
    import optuna

    import cifar_tune as ct
    from cifar_tune import progress
    from cifar_tune.studies.records import TrialRecord

    leftover: list[int] = []
    real_collect = gc.collect

    def probe(study, trial):  # after the trial (its clear_session ran): what would one more collection find?
        leftover.append(real_collect())

    from cifar_tune import tuning

    settings = ct.make_settings("mlp_l2", n_trials=args.trials, epochs=1, data=str(data), pruner="none",
                                sampler="random", engine="keras", storage=f"sqlite:///{work}/s.db")
    start = time.perf_counter()
    with progress.reporting(lambda event: None):
        from cifar_tune.tuning import loop

        callbacks = loop._report_trial
        loop._report_trial = lambda study, trial: (callbacks(study, trial), probe(study, trial))
        tuning.run_study(settings)
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name="cifar10-mlp_l2", storage=settings.storage).trials
    starts = [t.datetime_start.timestamp() for t in trials]
    fit = [TrialRecord.read(t).seconds for t in trials]
    # trial i's cycle (its start to the next one's) less its training
    outside = [b - a - f for a, b, f in zip(starts, starts[1:], fit, strict=False)]
    result = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "trials": len(trials), "wall_s": wall,
              "outside_fit_s": outside, "median_outside_fit_s": statistics.median(outside[1:]),
              "fit_s": fit, "second_collection_found": leftover}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
