"""`cifar-tune report`: one self-contained HTML page with every promised figure, before and after `compare`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cifar_tune import cli
from cifar_tune.views import figures, study_report

FIG_TITLES = {  # the section title we write and the title Optuna gives its own figure
    "optimization history": "Optimization History Plot",
    "intermediate values": "Intermediate Values Plot",
    "hyperparameter importances": "Hyperparameter Importances",
    "parallel coordinates": "Parallel Coordinate Plot",
}


def sections(page: str) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", page)


def plot_count(page: str) -> int:
    return page.count('class="plotly-graph-div"')


def test_report_before_and_after_compare(tiny_npz, capsys):
    tiny = ["--data", str(tiny_npz), "--epochs", "1", "--val-size", "100"]
    # cnn: four completed trials (no pruner), enough for importances; mlp_l2: the baseline trial only.
    assert cli.main(["optimize", "--arch", "cnn", "--n-trials", "4", "--pruner", "none", *tiny]) == 0
    assert cli.main(["optimize", "--arch", "mlp_l2", "--n-trials", "1", *tiny]) == 0
    capsys.readouterr()

    assert cli.main(["report"]) == 0
    path = Path("storage/reports/study-report.html")
    assert f"Wrote {path}" in capsys.readouterr().out
    page = path.read_text()
    titles = sections(page)
    cnn = [t for t in titles if t.startswith("cnn (study cifar10-cnn)")]
    for ours, optunas in FIG_TITLES.items():
        assert any(ours in t for t in cnn), (ours, cnn)
        assert optunas in page
    assert any("learning curves of the baseline and the best trial" in t for t in cnn)
    assert "baseline (trial 0)" in page or "best = baseline (trial 0)" in page
    mlp = [t for t in titles if t.startswith("mlp_l2 (study cifar10-mlp_l2)")]
    assert not any("hyperparameter importances" in t for t in mlp)
    assert "hyperparameter importances skipped: needs at least 4 completed trials (1 so far)" in page
    missing = re.search(r"Compare has not run yet</strong> for ([^:]*):", page).group(1)
    assert sorted(missing.split(", ")) == ["cifar10-cnn", "cifar10-mlp_l2"]
    assert not any(t.startswith(("Test metrics", "Confusion matrices")) for t in titles)
    # self-contained: plotly.js inline exactly once, no script fetched from anywhere
    assert page.count("* plotly.js v") == 1
    assert not re.search(r"<script[^>]+src=", page)
    figures_before = plot_count(page)

    assert cli.main(["compare", "--archs", "cnn", "--seeds", "1", "--data", str(tiny_npz)]) == 0
    capsys.readouterr()
    out = Path("elsewhere")
    out.mkdir()
    assert cli.main(["report", "--out", str(out)]) == 0  # a folder: the file goes inside
    page = (out / "study-report.html").read_text()
    titles = sections(page)
    assert "Test metrics, baseline vs tuned (mean over seeds; error bars: std)" in titles
    assert "Confusion matrices of the tuned models (test set)" in titles
    dash = r"(—|\\u2014)"  # plotly's JSON may escape the dash
    assert re.search(rf"Simple CNN {dash} tuned \(trial #\d+\), 1 seed summed", page)
    assert re.search(rf"Simple CNN {dash} baseline", page)  # a bar group per model and variant
    assert "Compare has not run yet</strong> for cifar10-mlp_l2" in page  # the other study still lacks it
    assert "tuned - baseline" in page and "±" in page
    assert plot_count(page) == figures_before + 2
    assert page.count("* plotly.js") == 1


def test_report_path_choices(tmp_path):
    assert study_report.study_report_path(None) == Path("storage/reports/study-report.html")
    other = study_report.study_report_path(None, f"sqlite:///{tmp_path}/other.db")  # another storage: its own file
    assert other.parent == Path("storage/reports") and other.name.startswith("study-report-other-")
    assert study_report.study_report_path("x/r.html") == Path("x/r.html")
    assert study_report.study_report_path(tmp_path) == tmp_path / "study-report.html"
    assert study_report.study_report_path("new-folder") == Path("new-folder/study-report.html")


def test_report_without_storage_exits_2(capsys):
    assert cli.main(["report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no storage" in err
    assert not Path("storage").exists()


def test_confusion_figure_rows_are_true_classes():
    fig = figures.confusion_figure({"m": [[1 if i == j else 0 for j in range(10)] for i in range(10)]},
                                  [str(i) for i in range(10)])
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    assert fig.layout.yaxis.title.text == "true" and fig.layout.xaxis.title.text == "predicted"


@pytest.mark.parametrize("n", [2, 3])
def test_confusion_figure_lays_out_several_models(n):
    fig = figures.confusion_figure({f"m{i}": [[0] * 10] * 10 for i in range(n)}, [str(i) for i in range(10)])
    assert len(fig.data) == n
