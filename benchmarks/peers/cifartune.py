"""cifar-tune, driven only through its command line: ``cifar-tune optimize`` (multivariate grouped TPE, pruning
over epochs with the tool's pruner, ``PRUNERS``: Hyperband as users run it, the seed's config enqueued as trial 0,
the trials where cifar-tune's defaults put them for one worker), then ``cifar-tune compare --seeds N`` (the best
trial and the baseline retrained on fresh seeds, tested once).

Results are read from the stored study (``optuna.load_study`` on its SQLite file: trial values, the user attributes
``epochs_run``, ``val_accuracy``, ``config``, the study's ``data``) and from compare's ``compare.csv``; never from
printed output. Both commands run with the working folder as their current directory, so everything cifar-tune
leaves on disk (the database, models, reports) lands there and is counted.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from . import common

# tool name -> the pruner its ``optimize`` runs with: cifar-tune as its users run it, and with Optuna's
# SuccessiveHalvingPruner (issue 27: a harder pruner, measured beside the peers; docs/benchmarks.md)
PRUNERS = {"cifar-tune": "hyperband", "cifar-tune-sha": "successive-halving"}


def _cli() -> str:
    return str(Path(sys.executable).with_name("cifar-tune"))


def storage_url(workdir) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'study.db'}"


def search(budget: common.Budget, split: dict | None, workdir, log, pruner: str = "hyperband") -> dict:
    """``cifar-tune optimize --pruner PRUNER`` on the budget; returns the best trial's config, validation loss (its
    final epoch's), validation accuracy, trial count, epochs (sum of ``epochs_run``), trial ends and the best
    trial's end (wall-clock seconds), the anytime curve (``common.anytime``), the split the study recorded, and its
    per-trial resident memory (the worker's, MB)."""
    import optuna

    cmd = [_cli(), "optimize", "--arch", budget.arch, "--n-trials", str(budget.n_trials), "--epochs",
           str(budget.epochs), "--data", str(Path(budget.data).resolve()), "--subset", str(budget.subset),
           "--seed", str(budget.seed), "--sampler", "tpe", "--pruner", pruner, "--storage", storage_url(workdir)]
    with open(Path(workdir) / "cifar-tune.log", "w") as out:
        subprocess.run(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, check=True)
    study = optuna.load_study(study_name=f"cifar10-{budget.arch}", storage=storage_url(workdir))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.datetime_complete is not None]
    best = study.best_trial
    return {"best_config": common.full_config(budget.arch, best.user_attrs["config"]),
            "best_val_loss": best.value, "best_val_accuracy": best.user_attrs.get("val_accuracy"),
            "trials": len(trials), "epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials),
            "trial_ends": sorted(t.datetime_complete.timestamp() for t in done),
            "best_time": best.datetime_complete.timestamp(), "split": study.user_attrs.get("data"),
            # the same trial-granular anytime curve as the peers' (their epoch logs): a trial's epochs are its
            # intermediate values (validation loss per epoch)
            "anytime": common.anytime([(t.datetime_complete.timestamp(), min(t.intermediate_values.values()))
                                       for t in done if t.intermediate_values]),
            "trial_rss_mb": [t.user_attrs.get("rss_mb") for t in sorted(done, key=lambda t: t.number)],
            "versions": {"cifar-tune": _version()},
            "notes": f"optimize --sampler tpe --pruner {pruner} (baseline enqueued as trial 0)"}


def retrain(budget: common.Budget, workdir) -> list[dict]:
    """``cifar-tune compare --seeds N`` on the study; the tuned variant's test accuracy per seed from compare.csv."""
    out = Path(workdir) / "compare"
    cmd = [_cli(), "compare", "--seeds", str(budget.seeds), "--storage", storage_url(workdir), "--data",
           str(Path(budget.data).resolve()), "--out", str(out)]
    with open(Path(workdir) / "cifar-tune-compare.log", "w") as log:
        subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, check=True)
    with open(out / "compare.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Variant"] == "tuned" and r["Seed"].isdigit()]
    return [{"seed": int(r["Seed"]), "accuracy": float(r["Accuracy"]), "seconds": float(r["Seconds"] or 0)}
            for r in rows]


def _version() -> str:
    from importlib.metadata import version

    return version("cifar-tune")
