"""Trials per minute with 1, 2 and 3 local workers on one study in PostgreSQL, and the dead-worker drill.

    .venv/bin/python -m benchmarks.workers                 # a throwaway PostgreSQL under /tmp (tests/helpers/pg.py)
    .venv/bin/python -m benchmarks.workers --storage postgresql+psycopg://user:pass@host/db --workers 1,2,4

For each worker count: a fresh database (or a fresh study name with --storage), then
`cifar-tune optimize --jobs N` on synthetic CIFAR-shaped data (tests/helpers/synthetic.py's, learnable), random
sampler, no pruning, so every trial does the same work. Throughput counts the trials finished between the first trial's
start and the last one's end (process start-up, i.e. importing TensorFlow, is reported apart).

The drill (--kill, on by default): `--jobs 3` with a 1 s heartbeat and a 4 s grace period, one worker killed with
SIGKILL in the middle of a trial; reports when its trial was failed and when the retry started and ended.
Run by hand; the numbers depend on the machine (name it when you quote them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from tests.helpers.pg import new_database, throwaway_cluster
from tests.helpers.synthetic import synthetic_cifar

REPO = Path(__file__).resolve().parents[1]



def optimize(url: str, data: Path, study: str, jobs: int, args, extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "cifar_tune", "optimize", "--arch", args.arch, "--storage", url, "--study-name",
            study, "--data", str(data), "--val-size", str(args.val_size), "--epochs", str(args.epochs),
            "--n-trials", str(args.trials), "--jobs", str(jobs), "--sampler", "random", "--pruner", "none",
            "--trials-per-process", str(max(args.trials, 1)), *extra]


def load(url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=url)


def throughput(url: str, data: Path, jobs: int, args, study: str) -> dict:
    t0 = time.time()
    proc = subprocess.run(optimize(url, data, study, jobs, args), capture_output=True, text=True, cwd=args.workdir)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"--jobs {jobs} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    trials = load(url, study).get_trials()
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    span = (last - first).total_seconds()
    return {"workers": jobs, "trials": len(trials), "span_s": span, "per_min": 60 * len(trials) / span,
            "wall_s": wall, "startup_s": wall - span, "mean_trial_s": np.mean([t.duration.total_seconds()
                                                                               for t in trials])}


def drill(url: str, data: Path, args) -> str:
    import optuna
    from optuna.trial import TrialState

    study = f"drill-{int(time.time())}"
    cmd = optimize(url, data, study, 3, argparse.Namespace(**{**vars(args), "trials": 6, "epochs": args.kill_epochs}),
                   ["--heartbeat-interval", "1", "--grace-period", "4"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=args.workdir,
                            start_new_session=True)
    try:
        victim = None
        while victim is None and proc.poll() is None:
            time.sleep(0.3)
            with contextlib.suppress(KeyError):
                running = optuna.load_study(study_name=study, storage=url).get_trials(states=(TrialState.RUNNING,))
                victim = next((t for t in running if t.intermediate_values and "worker" in t.user_attrs), None)
        if victim is None:
            raise SystemExit("the drill saw no running trial")
        os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        killed = datetime.now()
        out, err = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    trials = load(url, study).get_trials()
    dead = trials[victim.number]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    return (f"trial {victim.number} killed after epoch {len(victim.intermediate_values)} of {args.kill_epochs}: "
            f"marked {dead.state.name} {(dead.datetime_complete - killed).total_seconds():.1f} s after the kill "
            f"(heartbeat 1 s, grace 4 s); retry = trial {retry.number} (retry_of={retry.user_attrs.get('retry_of')},"
            f" same params: {retry.params == dead.params}), started "
            f"{(retry.datetime_start - killed).total_seconds():.1f} s after the kill, {retry.state.name} "
            f"{(retry.datetime_complete - killed).total_seconds():.1f} s after it; study: {done} complete of 6 "
            f"requested, {len(trials)} trials in all; command exit {proc.returncode}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", help="a PostgreSQL URL (default: a throwaway server under /tmp)")
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--arch", default="mlp_l2")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--val-size", type=int, default=200)
    ap.add_argument("--kill-epochs", type=int, default=6)
    ap.add_argument("--no-kill", dest="kill", action="store_false")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cifar-tune-bench-") as tmp, contextlib.ExitStack() as stack:
        args.workdir = tmp
        data = Path(tmp) / "tiny.npz"
        x_train, y_train, x_test, y_test = synthetic_cifar(n_train=args.n_train, n_test=200)
        np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        cluster = None if args.storage else stack.enter_context(throwaway_cluster())
        stamp = int(time.time())

        def url_for(name: str) -> str:
            return args.storage or new_database(cluster, name)

        print(f"machine: {platform.node()}, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
              f"; load before: {os.getloadavg()[0]:.1f}")
        print(f"data: synthetic {args.n_train} train images ({args.val_size} for validation); {args.arch}, "
              f"{args.trials} trials x {args.epochs} epochs, random sampler, no pruning\n")
        rows = [throughput(url_for(f"w{n}_{stamp}"), data, n, args, f"bench-{n}-{stamp}")
                for n in (int(w) for w in args.workers.split(","))]
        print(f"{'workers':>7} {'trials':>6} {'trials/min':>10} {'speed-up':>8} {'mean trial s':>12} "
              f"{'span s':>7} {'start-up s':>10}")
        for r in rows:
            print(f"{r['workers']:>7} {r['trials']:>6} {r['per_min']:>10.1f} {r['per_min'] / rows[0]['per_min']:>8.2f} "
                  f"{r['mean_trial_s']:>12.1f} {r['span_s']:>7.1f} {r['startup_s']:>10.1f}")
        if args.kill:
            print("\nkill drill (--jobs 3):", drill(url_for(f"drill_{stamp}"), data, args))


if __name__ == "__main__":
    main()
