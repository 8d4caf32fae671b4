"""Replay the peers run's cifar-tune studies through harder Optuna pruners (issue 27: could a pruner bring cifar-tune's
wall time and time to best down to KerasTuner-Hyperband's, and keep its best model?).

    PYTHONPATH=. python benchmarks/pruner_replay.py [--run results/peers-seeds-cpu2-2026-12-06] [--out DIR]

Only each study's first ``--replayed`` trials are replayed (default 10: the enqueued baseline and TPE's random
start-up draws, ``n_startup_trials``). Their configurations do not depend on earlier trials' outcomes (cifar-tune's
sampler draws each trial from the study seed and the trial number) and their training is seeded by the study seed,
so their stored validation-loss curves are what these trials train under any pruner, up to the CPU's numerical
noise. Later trials are TPE's, chosen from which trials were pruned, so they cannot be replayed.

Each trial is asked of an in-memory study of the same name under the pruner replayed, reports its stored
validation losses epoch by epoch (``Trial.report``, ``Trial.should_prune``, as cifar-tune's pruning callback does)
and is told pruned or complete: the pruners are Optuna's own, not copies of their rules. A trial the pruner would
have trained past the epochs stored (the study's own pruner stopped it sooner) is ``unknown``: its stored epochs
count, and it cannot be the best.

Figures (from the study database, ``studies/seed{S}-{arch}.db``, and the run's ``results.json``):
- training s: epochs x the trial's ``seconds_per_epoch`` (its mean over the epochs it trained, the first epoch's
  tracing included, so what a harder pruner saves is if anything overstated);
- time to best: the best finished replayed trial's end as the run measured it (s since the search process
  started), less the training seconds the pruner saves on the trials before it.
The ``hyperband`` rows replay the study's own pruner, a check on the replay: they reproduce the study's epochs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import optuna

from cifar_tune.studies.records import TrialRecord

RUN = Path(__file__).resolve().parents[1] / "results" / "peers-seeds-cpu2-2026-12-06"

# name -> (pruner for a study of ``epochs`` epochs, step of the first epoch, what it does)
PRUNERS = {
    "hyperband": (lambda epochs: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                                                 reduction_factor=3), 0,
                  "the study's own: HyperbandPruner(1, epochs, 3), steps = epoch indexes"),
    "sha-2-4": (lambda epochs: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), 0,
                "SuccessiveHalvingPruner(1, 3), one bracket: rungs after epochs 2 and 4 (steps = epoch indexes)"),
    "sha-1-3": (lambda epochs: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), 1,
                "SuccessiveHalvingPruner(1, 3) on epoch numbers (step = index + 1): rungs after epochs 1 and 3"),
}


def replay(study: optuna.Study, name: str, epochs: int, n: int) -> list[dict]:
    """The first ``n`` trials of ``study`` under pruner ``name``: per trial {number, epochs (as trained in the
    study), replayed (epochs under the pruner), state ("complete", "pruned" or "unknown"), value (the final
    validation loss if complete), seconds_per_epoch, end (wall-clock s, a timestamp)}."""
    make, first_step, _ = PRUNERS[name]
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)[:n]
    replayed = optuna.create_study(study_name=study.study_name, direction="minimize", pruner=make(epochs))
    rows = []
    for t in trials:
        curve = [t.intermediate_values[step] for step in sorted(t.intermediate_values)]
        live, state = replayed.ask(), "complete"
        for i, loss in enumerate(curve):
            live.report(loss, i + first_step)
            if live.should_prune():
                state, curve = "pruned", curve[:i + 1]
                break
        else:
            if len(curve) < epochs:
                state = "unknown"
        replayed.tell(live, curve[-1] if state == "complete" else None,
                      state=optuna.trial.TrialState.COMPLETE if state == "complete" else optuna.trial.TrialState.PRUNED)
        rows.append({"number": t.number, "epochs": len(t.intermediate_values), "replayed": len(curve),
                     "state": state, "value": curve[-1] if state == "complete" else None,
                     "seconds_per_epoch": TrialRecord.from_attrs(t.user_attrs).seconds_per_epoch,
                     "end": t.datetime_complete.timestamp()})
    return rows


def _saved(rows: list[dict]) -> float:
    """Training seconds the pruner saves on ``rows``."""
    return sum((r["epochs"] - r["replayed"]) * r["seconds_per_epoch"] for r in rows)


def summary(rows: list[dict], started: float, wall: float) -> dict:
    """Epochs and training seconds of the replayed trials (as the study trained them, and under the pruner), the
    search's wall time less what the pruner saves on them (``wall``: the run's; the later trials as they ran), the
    unknown trials, the best complete trial and the time to it (``started``: when the search process started, a
    timestamp)."""
    best = min((r for r in rows if r["state"] == "complete"), key=lambda r: r["value"], default=None)
    return {"epochs": sum(r["epochs"] for r in rows), "replayed_epochs": sum(r["replayed"] for r in rows),
            "training_s": round(sum(r["epochs"] * r["seconds_per_epoch"] for r in rows), 1),
            "replayed_training_s": round(sum(r["replayed"] * r["seconds_per_epoch"] for r in rows), 1),
            "wall_s": round(wall - _saved(rows), 1),
            "unknown": [r["number"] for r in rows if r["state"] == "unknown"],
            "best": best and {"number": best["number"], "value": round(best["value"], 4),
                              "time_to_best_s": round(best["end"] - started - _saved(
                                  [r for r in rows if r["number"] < best["number"]]), 1)}}


def run(folder: Path, replayed: int = 10) -> dict:
    """Every cifar-tune study of the peers run in ``folder`` under every pruner: {"runs": [{arch, seed, pruner,
    **summary}], "meta": {...}}."""
    results = json.loads((folder / "results.json").read_text())
    out = []
    for r in (r for r in results["runs"] if r["tool"] == "cifar-tune" and "error" not in r):
        db = folder / "studies" / f"seed{r.get('seed', 0)}-{r['arch']}.db"
        storage = f"sqlite:///{db}"
        study = optuna.load_study(study_name=f"cifar10-{r['arch']}", storage=storage)
        epochs = int(study.user_attrs["epochs"])
        # the run measured its time to best from the search process's start to the best trial's end
        started = study.best_trial.datetime_complete.timestamp() - r["time_to_best_s"]
        for name in PRUNERS:
            out.append({"arch": r["arch"], "seed": r.get("seed", 0), "pruner": name,
                        **summary(replay(study, name, epochs, replayed), started, r["wall_s"])})
    return {"runs": out, "meta": {"run": folder.name, "replayed_trials": replayed,
                                  "pruners": {k: v[2] for k, v in PRUNERS.items()}}}


def _median(rows: list[dict], key: str, sub: str | None = None) -> float:
    return statistics.median(r[key] if sub is None else (r[key] or {}).get(sub, float("nan")) for r in rows)


def markdown(result: dict) -> str:
    """One table: per architecture and pruner, each study seed's row and their median."""
    n = result["meta"]["replayed_trials"]
    lines = [f"Trials 0 to {n - 1} of each cifar-tune study in `results/{result['meta']['run']}` "
             "(the baseline and TPE's random start-up draws); wall s: the search's, less what the pruner saves on them",
             "", "| arch | seed | pruner | epochs | training s | wall s | best finished: trial, val loss | "
             "time to it s | unknown |", "|---|---|---|---|---|---|---|---|---|"]
    for arch in dict.fromkeys(r["arch"] for r in result["runs"]):
        for pruner in PRUNERS:
            rows = [r for r in result["runs"] if r["arch"] == arch and r["pruner"] == pruner]
            for r in rows:
                best = r["best"] or {}
                lines.append(f"| {arch} | {r['seed']} | {pruner} | {r['replayed_epochs']} | "
                             f"{r['replayed_training_s']:.0f} | {r['wall_s']:.0f} | {best.get('number', '-')}, "
                             f"{best.get('value', float('nan')):.3f} | {best.get('time_to_best_s', float('nan')):.0f} "
                             f"| {', '.join(map(str, r['unknown'])) or '-'} |")
            lines.append(f"| {arch} | median | {pruner} | {_median(rows, 'replayed_epochs'):.0f} | "
                         f"{_median(rows, 'replayed_training_s'):.0f} | {_median(rows, 'wall_s'):.0f} | "
                         f"{_median(rows, 'best', 'value'):.3f} | {_median(rows, 'best', 'time_to_best_s'):.0f} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=RUN, help="a peers results folder with results.json and studies/")
    p.add_argument("--replayed", type=int, default=10, help="trials replayed from each study's start")
    p.add_argument("--out", type=Path, help="write results.json and table.md here")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = run(args.run, args.replayed)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "table.md").write_text(text)


if __name__ == "__main__":
    main()
