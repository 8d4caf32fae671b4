"""benchmarks/peers.py: the peers train what cifar-tune trains, on its split; the table in docs/benchmarks.md is
the committed data.

Fast: the split (cifar-tune's study records it; the peers' copy must describe the same data), the models' parameter
counts, the space each peer samples, KerasTuner's Hyperband trial count, compare's seeds, and
docs/benchmarks.md's table against ``results/peers-*/results.json``. Slow: the ``--smoke`` run of every tool.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from benchmarks.peers import common, table
from tests.helpers.paths import REPO

START, END = "<!-- peers-table -->", "<!-- /peers-table -->"


def readme_section() -> str:
    """docs/benchmarks.md, the comparison with the peers (the README links it)."""
    return (REPO / "docs" / "benchmarks.md").read_text()


def committed_results() -> Path:
    m = re.search(r"results/peers-[\w.-]+/results\.json", readme_section())
    assert m, "docs/benchmarks.md names its results.json"
    return REPO / m.group(0)


def test_split_equals_cifar_tunes(tiny_npz, tmp_path):
    """The split cifar-tune's study records (fingerprint of the subset, validation size, seed) is the peers'."""
    import cifar_tune as ct

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = ct.optimize(arch="mlp_l2", n_trials=1, epochs=1, data=str(tiny_npz), subset=200, storage=url)
    split = common.load_split(str(tiny_npz), 200)
    assert study.user_attrs["data"] == split["description"]
    assert len(split["y_train"]) == 180 and len(split["y_val"]) == 20 and len(split["y_full"]) == 200
    assert len(split["y_test"]) == round(200 * 100 / 300)


@pytest.mark.parametrize("arch", common.ARCHS)
def test_models_are_the_seeds(arch):
    model = common.build_model(arch, common.BASELINES[arch])
    assert model.count_params() == common.SEED_PARAMS[arch]


@pytest.mark.parametrize("arch", common.ARCHS)
def test_optuna_space_samples_every_parameter(arch):
    """Define-by-run (plain Optuna and Ray's OptunaSearch) samples the TOML's parameters, within their ranges."""
    from benchmarks.peers.optuna_plain import suggest

    params = common.space(arch)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = suggest(trial, arch)
        config = common.config_from_values(arch, values)
        seen |= set(values)
        for name, p in params.items():
            v = config[name]
            if "choices" in p:
                assert v in p["choices"] or v == p["baseline"]
            elif name in values:
                assert p["low"] <= v <= p["high"]
        study.tell(trial, 0.0)
    assert set(params) <= seen and "use_l2" in seen


def test_kerastuner_hyperband_trials_match_its_oracle():
    kt = pytest.importorskip("keras_tuner")
    from benchmarks.peers.kerastuner import hyperband_trials

    for max_epochs in (2, 5, 10):
        oracle = kt.oracles.HyperbandOracle(objective="val_loss", max_epochs=max_epochs, factor=3)
        expected = sum(oracle._get_size(b, r) for b in range(oracle._get_num_brackets())
                       for r in range(oracle._get_num_rounds(b)))
        assert hyperband_trials(max_epochs) == expected
    assert hyperband_trials(5) == 10


def test_compare_seeds_are_cifar_tunes():
    """The peers retrain on the seeds cifar-tune compare used in the committed run."""
    results = json.loads(committed_results().read_text())
    for run in results["runs"]:
        if run["tool"] == "cifar-tune" and "test" in run:
            assert [t["seed"] for t in run["test"]] == common.compare_seeds(len(run["test"]))


def test_readme_table_is_the_committed_results():
    """docs/benchmarks.md's table is ``table.markdown`` of the committed results.json, byte for byte, and every run
    trained on cifar-tune's split."""
    results = json.loads(committed_results().read_text())
    section = readme_section()
    shown = section[section.index(START) + len(START):section.index(END)].strip()
    assert shown == table.markdown(results).strip()
    assert (committed_results().parent / "table.md").read_text().strip() == shown
    assert all(r.get("split_matches") for r in results["runs"] if "error" not in r)


@pytest.mark.slow
def test_smoke_runs_every_tool(tmp_path):
    """``peers.py --smoke``: every tool searches and retrains at toy size (a couple of minutes on 2 cores)."""
    pytest.importorskip("keras_tuner")
    pytest.importorskip("ray")
    data = common.REPO / ".data" / "cifar10.npz"
    if not data.is_file():
        pytest.skip(f"real data not materialized at {data}")
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "peers.py"), "--smoke", "--data", str(data),
                    "--out", str(out), "--work", str(tmp_path / "work")], check=True, timeout=900, cwd=REPO)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["tool"] for r in runs} == {"cifar-tune", "kerastuner-hyperband", "kerastuner-bayes", "optuna",
                                         "ray-tune"}
    for r in runs:
        assert "error" not in r and r["split_matches"] and r["trials"] >= 1 and r["epochs"] >= r["trials"]
        assert r["peak_rss_mb"] > 0 and len(r["test"]) == 1
    assert "| cifar-tune |" in (out / "table.md").read_text()
