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


def test_a_harder_pruner_trains_no_more_and_its_best_is_timed_from_the_savings():
    rows = [{"number": 0, "epochs": 5, "replayed": 5, "state": "complete", "value": 2.0, "seconds_per_epoch": 2.0,
             "end": 10.0},
            {"number": 1, "epochs": 4, "replayed": 2, "state": "pruned", "value": None, "seconds_per_epoch": 3.0,
             "end": 22.0},
            {"number": 2, "epochs": 5, "replayed": 5, "state": "complete", "value": 1.5, "seconds_per_epoch": 1.0,
             "end": 27.0}]
    s = pruner_replay.summary(rows, offset=7.0, wall=40.0)
    assert (s["epochs"], s["replayed_epochs"], s["training_s"], s["replayed_training_s"]) == (14, 12, 27.0, 21.0)
    assert s["wall_s"] == 34.0  # 40 less trial 1's two epochs of 3 s
    assert s["best"] == {"number": 2, "value": 1.5, "time_to_best_s": 28.0}  # 7 + 27 - 6
    for study in studies():
        epochs = int(study.user_attrs["epochs"])
        for name in ("sha-2-4", "sha-1-3"):
            for r in pruner_replay.replay(study, name, epochs, 10):
                assert r["replayed"] <= r["epochs"]


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
