"""How many programs the fast engine compiles for a study's trials, before and after the program key left out the
batch size: counted from the configs a stored study's trials trained, not timed.

    python -m benchmarks.compiles results/cpu-2core-2026-11-29/studies.db

Before, a program was keyed by every structure-changing value including the batch size, and each key compiled
three executables (train_steps, evaluate, shuffle). Now a program is keyed by the structure alone: evaluation
compiles once per structure, the training step and the shuffle once per (structure, batch size). Assumes the
traced-values path (dropout and L2 injected), which every built-in architecture takes; one process runs every
trial (on JAX a worker is no longer recycled). Prints one Markdown row per study.
"""

from __future__ import annotations

import argparse

import optuna

from cifar_tune.engines.jax_program import VALUE_PARAMS, program_key
from cifar_tune.studies import catalog
from cifar_tune.studies.records import TrialRecord


def counts(study: optuna.Study, precision: str = "float32") -> dict[str, int]:
    """Executables compiled for the study's trials: before (3 per old key) and now."""
    configs = [(TrialRecord.read(t).config, t) for t in study.get_trials(deepcopy=False)]
    configs = [c for c, _ in configs if isinstance(c, dict)]
    arch = study.user_attrs.get("arch")
    old = {(arch, precision, tuple(sorted((k, v) for k, v in c.items() if k not in VALUE_PARAMS)),
            c.get("dropout", 0) > 0, c.get("l2", 0) > 0) for c in configs}
    new = {program_key(arch, c, precision, True) for c in configs}
    shaped = {(program_key(arch, c, precision, True), c["batch_size"]) for c in configs}
    return {"trials": len(configs), "before": 3 * len(old), "now": len(new) + 2 * len(shaped),
            "structures": len(new), "structure_batch_pairs": len(shaped)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="an SQLite file of cifar-tune studies")
    url = f"sqlite:///{parser.parse_args(argv).db}"
    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)
    print("| study | trials | structures | (structure, batch) | executables before | now |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in catalog.find_studies(storage).values():
        c = counts(optuna.load_study(study_name=name, storage=storage))
        print(f"| {name} | {c['trials']} | {c['structures']} | {c['structure_batch_pairs']} | {c['before']} | "
              f"{c['now']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
