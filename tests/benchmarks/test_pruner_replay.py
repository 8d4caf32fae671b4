"""benchmarks/pruner_replay.py: the replay reproduces what the studies' own pruner did, its arithmetic, and
docs/benchmarks.md's replay table against the committed studies."""

from __future__ import annotations

import json

import optuna
import pytest

from benchmarks import pruner_replay
from tests.helpers.paths import REPO

RESULT = REPO / "results" / "pruner-replay-cpu2-2026-12-07"


def studies():
    results = json.loads((pruner_replay.RUN / "results.json").read_text())
    for r in results["runs"]:
        if r["tool"] == "cifar-tune":
            db = pruner_replay.RUN / "studies" / f"seed{r['seed']}-{r['arch']}.db"
            yield optuna.load_study(study_name=f"cifar10-{r['arch']}", storage=f"sqlite:///{db}")


def test_replaying_the_studys_own_pruner_gives_its_decisions():
    """Under the pruner each study ran with, every trial (the later TPE ones too: their curves are given) trains
    the epochs it trained and ends as it ended."""
    seen = 0
    for study in studies():
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        rows = pruner_replay.replay(study, "hyperband", int(study.user_attrs["epochs"]), len(trials))
        assert [(r["replayed"], r["state"]) for r in rows] == [
            (len(t.intermediate_values), t.state.name.lower()) for t in trials]
        assert {r["state"] for r in rows} == {"complete", "pruned"}
        seen += 1
    assert seen == 6


def test_the_best_is_timed_from_the_savings_before_it():
    """Time to best: the best complete trial's end less the search's start, less what the pruner saved on the
    trials before it (not on it or after it); wall time less all the savings."""
    rows = [{"number": 0, "epochs": 5, "replayed": 5, "state": "complete", "value": 2.0, "seconds_per_epoch": 2.0,
             "end": 1010.0},
            {"number": 1, "epochs": 4, "replayed": 2, "state": "pruned", "value": None, "seconds_per_epoch": 3.0,
             "end": 1022.0},
            {"number": 2, "epochs": 5, "replayed": 5, "state": "complete", "value": 1.5, "seconds_per_epoch": 1.0,
             "end": 1027.0},
            {"number": 3, "epochs": 5, "replayed": 2, "state": "pruned", "value": None, "seconds_per_epoch": 1.0,
             "end": 1033.0}]
    s = pruner_replay.summary(rows, started=993.0, wall=40.0)
    assert (s["epochs"], s["replayed_epochs"], s["training_s"], s["replayed_training_s"]) == (19, 14, 32.0, 23.0)
    assert s["wall_s"] == 31.0  # 40 less trial 1's two epochs of 3 s and trial 3's three of 1 s
    assert s["best"] == {"number": 2, "value": 1.5, "time_to_best_s": 28.0}  # 1027 - 993 - 6 (trial 1 only)


def test_a_trial_the_pruner_would_train_further_is_unknown_and_never_the_best():
    """In the MLP's seed-3 study Hyperband stopped trial 4 after 4 epochs; pruned on epoch numbers it would have
    gone on, past what was stored: it counts its 4 epochs, is ``unknown``, and cannot be the best."""
    study = next(s for s in studies() if s.study_name == "cifar10-mlp_l2" and s.user_attrs["settings"]["seed"] == 3)
    rows = pruner_replay.replay(study, "sha-1-3", 5, 10)
    assert [(r["number"], r["epochs"], r["replayed"]) for r in rows if r["state"] == "unknown"] == [(4, 4, 4)]
    rows[4]["value"] = 0.0  # even with the lowest loss of all: its end under the pruner is not known
    summary = pruner_replay.summary(rows, started=0.0, wall=0.0)
    assert summary["unknown"] == [4] and summary["best"]["number"] == 7  # the study's best of trials 0 to 9


def test_the_replay_is_what_successive_halving_then_trained():
    """cifar-tune with ``--pruner successive-halving`` on the same seeds (results/peers-sha-cpu2-2026-12-07, a real
    run a day later) trained, in trials 0 to 9 of each study, exactly the epochs the replay predicted from the
    Hyperband studies."""
    sha = REPO / "results" / "peers-sha-cpu2-2026-12-07" / "studies"
    seen = 0
    for study in studies():
        db = sha / f"seed{study.user_attrs['settings']['seed']}-{study.user_attrs['arch']}.db"
        real = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{db}")
        trials = sorted(real.get_trials(deepcopy=False), key=lambda t: t.number)
        trained = [len(t.intermediate_values) for t in trials]
        rows = pruner_replay.replay(study, "sha-2-4", int(study.user_attrs["epochs"]), 10)
        assert [r["replayed"] for r in rows] == trained[:10]
        assert real.user_attrs["settings"]["pruner"] == "successive-halving"
        seen += 1
    assert seen == 6


@pytest.mark.parametrize("where", ["docs", "committed"])
def test_the_replay_table_is_the_committed_studies(where):
    """docs/benchmarks.md's replay table and results/pruner-replay-*/ are the script's output on the committed
    studies, byte for byte."""
    result = pruner_replay.run(pruner_replay.RUN)
    if where == "committed":
        assert json.loads((RESULT / "results.json").read_text()) == json.loads(json.dumps(result))
        assert (RESULT / "table.md").read_text() == pruner_replay.markdown(result)
    else:
        text = (REPO / "docs" / "benchmarks.md").read_text()
        start, end = "<!-- pruner-replay-table -->", "<!-- /pruner-replay-table -->"
        assert text[text.index(start) + len(start):text.index(end)].strip() == pruner_replay.markdown(result).strip()
