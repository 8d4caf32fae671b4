"""`cifar-tune dashboard` in a real headless Chromium: the study, its note, its figures and a trial's artifact.

The browser test is marked `browser`; the others need no browser. The screenshots are kept in tests/artifacts/
(git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import cli
from cifar_tune.choices import ARTIFACTS_ENV, FIGURE_CURVES, FIGURE_TRIALS
from cifar_tune.tuning import dashboard_updates
from cifar_tune.views import dashboard_content
from tests.helpers.paths import REPO
from tests.helpers.pg import free_port
from tests.helpers.processes import interrupt

CHROMIUM = os.environ.get("CIFAR_TUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "tests" / "artifacts"


def wait_until_serving(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:  # a busy CPU is slow
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"dashboard not serving {url} after {seconds} s")


@pytest.mark.browser
def test_dashboard_shows_the_study_its_note_figures_and_trial_artifacts(tiny_npz, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    # A small real study: the optimize flow writes the note, the figures and each trial's artifact.
    assert cli.main(["optimize", "--arch", "mlp_l2", "--data", str(tiny_npz), "--n-trials", "3", "--epochs", "2",
                     "--val-size", "100"]) == 0
    url = f"sqlite:///{tmp_path / 'storage' / 'cifar_tune.db'}"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cifar_tune", "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{base}/api/studies", proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/dashboard", wait_until="networkidle")
                page.get_by_text("cifar10-mlp_l2").first.click()  # the study list links to the study
                page.wait_for_url("**/studies/*")
                study_url = page.url
                # The study page: its name and our plotly figures (rendered as SVG by plotly.js).
                page.get_by_text("cifar10-mlp_l2").first.wait_for(state="visible")
                title = page.locator(".js-plotly-plot").filter(has_text="Learning curves: best trial vs the seed "
                                                                          "baseline")
                title.first.wait_for(state="visible", timeout=30_000)
                assert title.first.locator("svg.main-svg").count() > 0
                assert page.locator(".js-plotly-plot").filter(has_text="Validation loss of every trial").count() == 1
                page.screenshot(path=str(ARTIFACTS / "dashboard-study.png"), full_page=True)

                # The note: what the study is, its search space and results.
                page.goto(f"{study_url.rstrip('/')}/note", wait_until="networkidle")
                note = page.get_by_text("tuning around the seed baseline", exact=False)
                note.first.wait_for(state="visible", timeout=30_000)
                assert page.get_by_text("Search space", exact=False).first.is_visible()
                assert page.get_by_role("cell", name="learning_rate").first.is_visible()
                page.screenshot(path=str(ARTIFACTS / "dashboard-note.png"), full_page=True)

                # A trial's page: its learning-curve figure is an artifact the dashboard previews as an image.
                page.goto(f"{study_url.rstrip('/')}/trials", wait_until="networkidle")
                image = page.locator("img[src*='/artifacts/']")
                image.first.wait_for(state="visible", timeout=30_000)
                assert page.get_by_text("learning-curves-trial-0.svg").first.is_visible()
                page.screenshot(path=str(ARTIFACTS / "dashboard-trial.png"), full_page=True)
                src = image.first.get_attribute("src")
                with urllib.request.urlopen(base + src, timeout=10) as r:
                    assert r.read().startswith(b"<svg")
            finally:
                browser.close()
    finally:
        out, err = interrupt(proc, timeout=20)
    assert f"http://127.0.0.1:{port}/dashboard/" in out
    assert (tmp_path / "storage" / "artifacts").is_dir()


def test_dashboard_refuses_a_storage_that_is_not_there(tmp_path, capsys):
    assert cli.main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no storage at" in err
    assert not (tmp_path / "missing.db").exists()


def test_dashboard_refuses_a_busy_port(tiny_npz, tmp_path, capsys):
    import socket

    from cifar_tune.storage import database

    database.open_storage("sqlite:///storage/cifar_tune.db", with_heartbeat=False)  # an empty storage
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert cli.main(["dashboard", "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose another --port" in err


def small_study(tmp_path: Path) -> optuna.Study:
    """A study as optimize leaves it: its attrs, a completed baseline with curves, a better trial, a retry."""
    study = optuna.create_study(study_name="cifar10-cnn", storage=f"sqlite:///{tmp_path / 'n.db'}")
    study.set_user_attr("arch", "cnn")
    study.set_user_attr("epochs", 2)
    study.set_user_attr("data", "data 1234 val 100 seed 0")
    study.set_user_attr("settings", {"sampler": "tpe", "pruner": "hyperband", "preset": "default"})
    study.set_user_attr("space", {"arch": "cnn", "path": "search_spaces/cnn.toml", "params": {
        "learning_rate": {"kind": "float", "baseline": 0.001, "low": 1e-4, "high": 1e-2, "log": True},
        "l2": {"kind": "float", "baseline": 0.0, "low": 1e-6, "high": 1e-2, "log": True, "optional": True}}})
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for number, (lr, loss, attrs) in enumerate([(1e-3, 1.2, {"baseline": True}), (3e-3, 0.7, {}),
                                                (2e-3, 0.9, {"retry_of": 1})]):
        curves = {"loss": [2.0, loss + 0.1], "accuracy": [0.3, 0.6], "val_loss": [1.9, loss],
                  "val_accuracy": [0.4, 0.7]}
        study.add_trial(optuna.create_trial(params={"learning_rate": lr}, distributions=dist, value=loss,
                                            user_attrs={"curves": curves, "val_accuracy": 0.7,
                                                        "worker": f"host{number % 2}:{100 + number}", **attrs}))
    return study


def test_note_keeps_what_others_wrote_and_figures_are_stored(tmp_path):
    from optuna_dashboard import get_note, save_note

    study = small_study(tmp_path)
    save_note(study, "My own remark.\n\n## Tuned vs baseline on the test set (cifar-tune compare)\n\n| a |\n|---|\n")
    for _ in range(2):  # rewriting replaces our section, never duplicates it
        note = dashboard_updates.write_study_note(study)
    assert get_note(study) == note
    assert note.count("(cifar-tune optimize)") == 1 and note.startswith("## Simple CNN (`cnn`)")
    assert "My own remark." in note and note.count("## Tuned vs baseline on the test set") == 1
    assert "| `learning_rate` | 0.001 | 0.0001 … 0.01 (log scale) |" in note
    assert "| `l2` | 0 (off) | off (0), or 1e-06 … 0.01 (log scale) |" in note
    assert "| baseline | #0 | 1.2000 |" in note and "| best | #1 | 0.7000 |" in note
    assert "trial 1 stopped beating its heartbeat" in note and "3 worker processes on 2 machines" in note

    note = dashboard_updates.write_study_note(study, compare_table_markdown="| tuned | 0.71 |")
    assert "| tuned | 0.71 |" in note and "| a |" not in note and "My own remark." in note

    assert sorted(dashboard_updates.write_study_figures(study)) == [FIGURE_CURVES, FIGURE_TRIALS]
    fig = dashboard_content.best_vs_baseline_figure(study)
    assert {tr.name for tr in fig.data} == {"baseline (trial 0)", "best (trial 1)"}


def test_trial_curves_become_an_svg_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "art"))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    trial = study.ask()
    trial.set_user_attr("curves", {"loss": [2.0, 1.0], "val_loss": [1.9, 1.1], "accuracy": [0.2, 0.5],
                                   "val_accuracy": [0.3, float("nan")]})
    artifact_id = dashboard_updates.attach_trial_curves(trial)
    study.tell(trial, 1.1)
    assert artifact_id and (tmp_path / "art" / artifact_id).read_text().startswith("<svg")
    meta = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)
    assert meta[0].mimetype == "image/svg+xml" and meta[0].filename == "learning-curves-trial-0.svg"

    finished = study.ask()
    study.tell(finished, state=TrialState.FAIL)
    assert dashboard_updates.attach_trial_curves(finished) is None  # nothing to draw: no artifact, no error


def test_the_dashboard_on_a_results_folder_serves_the_artifacts_beside_its_database(tmp_path):
    """The README's step 0 database: `dashboard --storage sqlite:///results/.../studies.db` looked for the
    learning curves in ./storage/artifacts and answered HTTP 500 with a traceback per image; the `artifacts/`
    folder beside a SQLite file is used when $CIFAR_TUNE_ARTIFACTS is not set."""
    results = REPO / "results" / "cpu-2core-2026-11-29"
    url = f"sqlite:///{results / 'studies.db'}?mode=ro"
    study = optuna.load_study(study_name="cifar10-cnn", storage=f"sqlite:///{results / 'studies.db'}")
    trial = next(t for t in study.trials if optuna.artifacts.get_all_artifact_meta(t, storage=study._storage))
    meta = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)[0]
    env = {k: v for k, v in os.environ.items() if k != ARTIFACTS_ENV}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cifar_tune", "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{base}/api/studies", proc)
        study_id = study._study_id
        with urllib.request.urlopen(f"{base}/artifacts/{study_id}/{trial._trial_id}/{meta.artifact_id}",
                                    timeout=10) as r:
            assert r.status == 200 and r.read().startswith(b"<svg")
    finally:
        out, err = interrupt(proc, timeout=20)
    assert f"artifacts in {results / 'artifacts'}/" in out, out
    assert "Traceback" not in err, err
    assert not (tmp_path / "storage").exists()  # nothing created where it runs
