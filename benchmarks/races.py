"""Duplicated and lost trials when several `cifar-tune optimize` commands start together on one new storage.

    .venv/bin/python -m benchmarks.races                          # 3 rounds of 3 commands x 2 trials, SQLite
    .venv/bin/python -m benchmarks.races --postgres --rounds 5    # a new database per round in a throwaway server

Each round: a new storage (a SQLite file nobody opened yet, or a new PostgreSQL database), then ``--commands``
copies of the same `cifar-tune optimize --arch mlp_l2 --n-trials K` started at the same moment (the README's
several-machines recipe on one machine), on tiny synthetic data (tests/helpers/synthetic.py), 1 epoch, no pruning.
Counted per round: commands that failed, finished trials against the ``commands x K`` asked for (lost), and trials whose
parameters equal an earlier trial's (duplicated; a retry and the trial it replaces do not count). To measure the
code before a change, put its checkout first: ``PYTHONPATH=/path/to/old/checkout python -m benchmarks.races``.
Run by hand; name the machine when you quote the figures. Prints a table and writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.helpers.pg import new_database, throwaway_cluster
from tests.helpers.synthetic import synthetic_cifar

REPO = Path(__file__).resolve().parents[1]



def one_round(storage: str, data: Path, args, cwd: Path) -> dict:
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "mlp_l2", "--storage", storage, "--data",
           str(data), "--val-size", "100", "--epochs", "1", "--pruner", "none", "--n-trials", str(args.n_trials)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}) for _ in range(args.commands)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    failed = [e.strip().splitlines()[-1][:160] if e.strip() else ""
              for p, e in zip(procs, errors, strict=True) if p.returncode]
    import optuna

    try:
        trials = optuna.load_study(study_name="cifar10-mlp_l2", storage=storage).get_trials()
    except KeyError:
        trials = []
    finished = [t for t in trials if t.state.is_finished() and t.state.name != "FAIL"]
    retry_of = {t.number: t.user_attrs.get("retry_of") for t in trials}
    seen, duplicated = {}, 0
    for t in finished:
        key = repr(sorted(t.params.items()))
        if key in seen and retry_of.get(t.number) != seen[key] and retry_of.get(seen[key]) != t.number:
            duplicated += 1
        seen.setdefault(key, t.number)
    asked = args.commands * args.n_trials
    return {"commands_failed": len(failed), "failures": failed, "asked": asked, "finished": len(finished),
            "lost": max(0, asked - len(finished)), "duplicated": duplicated}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commands", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=2)
    parser.add_argument("--postgres", action="store_true", help="a new database per round in a throwaway server")
    parser.add_argument("--json", help="write the rounds here")
    args = parser.parse_args()
    import cifar_tune

    print(f"cifar_tune from {Path(cifar_tune.__file__).parent}; {args.rounds} rounds of {args.commands} commands "
          f"x {args.n_trials} trials on {'PostgreSQL' if args.postgres else 'SQLite'}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, \
            (throwaway_cluster() if args.postgres else contextlib.nullcontext()) as cluster:
        tmp = Path(tmp)
        data = tmp / "tiny.npz"
        x_train, y_train, x_test, y_test = synthetic_cifar()
        np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        rounds = []
        for i in range(args.rounds):
            storage = new_database(cluster) if cluster else f"sqlite:///{tmp / f'round{i}' / 'studies.db'}"
            rounds.append(one_round(storage, data, args, tmp))
            r = rounds[-1]
            print(f"round {i + 1}: {r['commands_failed']} command(s) failed, {r['finished']}/{r['asked']} trials "
                  f"finished, {r['lost']} lost, {r['duplicated']} duplicated"
                  + (f"  [{'; '.join(r['failures'])}]" if r["failures"] else ""), flush=True)
    total = {k: sum(r[k] for r in rounds) for k in ("commands_failed", "asked", "finished", "lost", "duplicated")}
    print(f"all rounds: {total['commands_failed']} failed commands, {total['lost']} of {total['asked']} trials lost, "
          f"{total['duplicated']} duplicated")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rounds, "total": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
