"""One tool's search or retraining in its own process, so each is measured alone (its imports, its workers).

    python -m benchmarks.peers.runner search TOOL BUDGET_JSON WORKDIR    # -> WORKDIR/search.json
    python -m benchmarks.peers.runner retrain TOOL BUDGET_JSON WORKDIR   # -> WORKDIR/retrain.json

Every peer logs each finished epoch to WORKDIR/epochs.jsonl (``common.epoch_logger``); search.json gets the tool's
own answer (best config, validation loss and accuracy, trials, versions) plus epochs, trial ends and the time the
best validation loss was first reached, from that log. Retraining reads search.json's best config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import cifartune, common

TOOLS = ("cifar-tune", "kerastuner-hyperband", "kerastuner-bayes", "optuna", "ray-tune")
# what --tools may name: the peers and cifar-tune, and cifar-tune with another pruner (not run unless named)
CHOICES = (*TOOLS, *(t for t in cifartune.PRUNERS if t not in TOOLS))


def run_search(tool: str, budget: common.Budget, workdir: Path) -> dict:
    """The tool's search on the budget (cifar-tune loads its own data; the peers get cifar-tune's split)."""
    log = workdir / "epochs.jsonl"
    if tool in cifartune.PRUNERS:
        result = cifartune.search(budget, None, workdir, log, cifartune.PRUNERS[tool])
        result["split_peers"] = common.load_split(budget.data, budget.subset, budget.seed)["description"]
        return result
    split = common.load_split(budget.data, budget.subset, budget.seed)
    if tool.startswith("kerastuner-"):
        from . import kerastuner

        result = kerastuner.search(tool.split("-")[1], budget, split, workdir, log)
    elif tool == "optuna":
        from . import optuna_plain

        result = optuna_plain.search(budget, split, workdir, log)
    elif tool == "ray-tune":
        from . import raytune

        result = raytune.search(budget, split, workdir, log)
    else:
        raise SystemExit(f"unknown tool {tool!r}; choose from {', '.join(CHOICES)}")
    summary = common.summarize_log(common.read_epochs(log), result["best_val_loss"])
    if result.get("best_val_accuracy") is None:
        result["best_val_accuracy"] = summary["best_val_accuracy_logged"]
    result.update({k: summary[k] for k in ("epochs", "trial_ends", "best_time", "anytime")},
                  split=split["description"])
    return result


def run_retrain(tool: str, budget: common.Budget, workdir: Path) -> list[dict]:
    """Test accuracy of the tool's best config retrained on compare's fresh seeds (cifar-tune: ``compare``)."""
    if tool in cifartune.PRUNERS:
        return cifartune.retrain(budget, workdir)
    config = json.loads((workdir / "search.json").read_text())["best_config"]
    split = common.load_split(budget.data, budget.subset, budget.seed)
    return [common.retrain_and_test(budget.arch, config, split, budget.epochs, s)
            for s in common.compare_seeds(budget.seeds, budget.seed)]


def main(argv: list[str]) -> int:
    phase, tool, budget_json, workdir = argv
    budget, workdir = common.Budget.from_json(budget_json), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if phase == "search":
        result = run_search(tool, budget, workdir)
    else:
        result = {"runs": run_retrain(tool, budget, workdir)}
    (workdir / f"{phase}.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
