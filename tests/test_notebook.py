"""examples/seed_notebook.ipynb, executed top to bottom with nbclient on tiny synthetic data: every cell runs for
real (the notebook's own code, through the Python API), in a temporary folder that holds its storage.

The notebook reads its size from one cell tagged ``parameters``; the test replaces that cell's source with tiny
values (papermill's convention, without papermill) and leaves every other cell as committed.

Its section 0 reads the committed full-size results (``results/cpu-2core-2026-11-29/studies.db``) with ``ct.load``
and trains nothing: its outputs, committed and executed, must show what that database and compare's CSVs hold.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

import cifar_tune
from cifar_tune.choices import ARCH_LABELS, COMPARE_DIFF
from cifar_tune.storage import database
from cifar_tune.views import tables
from tests.helpers.synthetic import synthetic_cifar

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "seed_notebook.ipynb"
PLOTLY = "application/vnd.plotly.v1+json"
METRICS = ["Accuracy", "Precision", "Recall", "F1 Score"]
# the parameters cell's names, all of them given (a name the notebook stops reading would go unnoticed otherwise)
PARAMETERS = ("DATA", "SUBSET", "EPOCHS", "N_TRIALS", "SEEDS", "ARCHS", "STORAGE", "PUBLISHED")
PUBLISHED = "results/cpu-2core-2026-11-29/studies.db"  # section 0's database, relative to the repository
SECTION = "## 0. The published result"
PROBE = "import sys, cifar_tune\nprint(sys.executable)\nprint(cifar_tune.__file__)"


def parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return cells[0]


def text_of(cell) -> str:
    """Everything a code cell showed: streams, and the text/plain and text/html of results and displays."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts += [out["data"].get("text/plain", ""), out["data"].get("text/html", "")]
    return "\n".join(parts)


def cell_running(nb, code: str):
    """The one code cell whose source contains ``code``."""
    found = [c for c in nb.cells if c.cell_type == "code" and code in c.source]
    assert len(found) == 1, f"{len(found)} cells run {code!r}"
    return found[0]


def figures_in(cell) -> list[dict]:
    return [out["data"][PLOTLY] for out in cell.get("outputs", []) if PLOTLY in out.get("data", {})]


def published_section(nb) -> list:
    """Section 0's cells: from its heading to the next heading of that level."""
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## ")]
    start = next(i for i in heads if nb.cells[i].source.startswith(SECTION))
    end = next((i for i in heads if i > start), len(nb.cells))
    return nb.cells[start:end]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def html_rows(html: str) -> list[list[str]]:
    """The data cells of each row of a DataFrame's HTML (what a reader sees; its text repr may wrap)."""
    return [re.findall(r"<td>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
            if "<td>" in row]


def check_published_section(nb, db: Path) -> None:
    """Section 0 shows what ``db`` and the CSVs compare wrote beside it hold: per study its trials and its
    comparison's budget, the tuned-against-baseline table (baseline and tuned test accuracy as mean ± std, the
    paired difference's 95% interval, the verdict) and the figures."""
    storage = database.storage_for_reading(f"sqlite:///{db}")
    compared = {r["arch"]: r for r in tables.compared_rows(storage)}
    studies = {r["study"]: r for r in tables.study_rows(storage)}
    assert set(compared) == set(ARCH_LABELS), "the committed database holds a comparison of every architecture"

    budget = cell_running(nb, "published.records")
    html = next(o["data"]["text/html"] for o in budget.outputs if "text/html" in o.get("data", {}))
    shown = {cells[0]: cells[1:] for cells in html_rows(html)}
    assert set(shown) == set(compared)
    for arch, r in compared.items():
        s = studies[r["study"]]
        assert shown[arch] == [str(v) for v in (s["trials"], s["complete"], s["pruned"], r["best_trial"],
                                                r["epochs"], r["train_images"], r["test_images"], r["seeds"])], arch

    table = text_of(cell_running(nb, "published.display"))
    for arch, r in compared.items():
        for quoted in (ARCH_LABELS[arch], f"{r['baseline_acc']:.4f} ± {r['baseline_std']:.4f}",
                       f"{r['tuned_acc']:.4f} ± {r['tuned_std']:.4f}",
                       f"{r['difference']:+.4f}", f"[{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]", r["verdict"]):
            assert quoted in table, (arch, quoted)
    csvs = sorted(db.parent.glob("compare-*/compare.csv"))
    assert len(csvs) == len(compared)
    for path in csvs:  # compare's own files: the mean accuracy of baseline and tuned, and the interval's bounds
        rows = {(row["Variant"], row["Seed"]): row for row in csv.DictReader(path.open())}
        for key in (("baseline", "mean"), ("tuned", "mean"), (COMPARE_DIFF, "ci95_low"), (COMPARE_DIFF, "ci95_high")):
            value = float(rows[key]["Accuracy"])
            assert (f"{value:+.4f}" if key[0] == COMPARE_DIFF else f"{value:.4f}") in table, (path, key)

    figures = figures_in(cell_running(nb, "published.figures()"))
    assert len(figures) == 3 and all(f["data"] for f in figures)  # bars, confusion matrices, the ResNet's history


def kernel_environment(monkeypatch) -> None:
    """ipykernel's python3 spec, whose argv[0] "python" jupyter_client replaces by this interpreter; the kernel
    imports the cifar_tune this test imported (this tree, or the installed package)."""
    assert "python3" in KernelSpecManager().find_kernel_specs()
    package_root = str(Path(cifar_tune.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("CIFAR_TUNE_DATA", raising=False)


def test_the_committed_notebook_has_one_parameters_cell_with_full_size_comments_and_its_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    source = parameters_cell(nb).source
    for name in PARAMETERS:
        assert f"\n{name} = " in f"\n{source}", name
    assert "10: the seed's epochs" in source  # the full size stays written beside the run's values
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("outputs") for c in code[1:]), "the committed copy carries the outputs of a real run"
    assert not [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert NOTEBOOK.stat().st_size < 2_000_000


def test_the_committed_notebook_shows_the_published_result_as_the_committed_database_holds_it():
    """Section 0's saved outputs are the committed results (its figures, the table), near the top, before the
    live run's first training."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert f'\nPUBLISHED = "{PUBLISHED}"' in parameters_cell(nb).source
    section = published_section(nb)
    assert nb.cells.index(section[0]) < nb.cells.index(cell_running(nb, "ct.baseline("))
    check_published_section(nb, REPO / PUBLISHED)


def test_section_0_run_from_examples_reads_the_committed_database_and_writes_nothing(monkeypatch):
    """Section 0 alone (with the parameters and setup cells it needs), executed where Jupyter starts the notebook
    (examples/): it finds the committed database above it, shows what it holds, and changes no byte and adds no
    file, there or in examples/."""
    db = REPO / PUBLISHED
    before = sha256(db), sorted(db.parent.rglob("*")), sorted((REPO / "examples").rglob("*"))
    full = nbformat.read(NOTEBOOK, as_version=4)
    nb = nbformat.v4.new_notebook(metadata=full.metadata, cells=[
        parameters_cell(full), cell_running(full, "import cifar_tune as ct"), *published_section(full)])
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    kernel_environment(monkeypatch)
    NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=False,
                   resources={"metadata": {"path": str(REPO / "examples")}}).execute()
    check_published_section(nb, db)
    assert (sha256(db), sorted(db.parent.rglob("*")), sorted((REPO / "examples").rglob("*"))) == before


@pytest.mark.slow  # 63 CPU-s: a Jupyter kernel and its workers (CI's second step, beside the kernel memory test)
def test_the_notebook_runs_top_to_bottom_on_tiny_data(tmp_path, monkeypatch):
    data = tmp_path / "tiny.npz"
    x_train, y_train, x_test, y_test = synthetic_cifar()  # 300 training / 100 test images
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    archs = ["mlp_l2", "cnn"]  # two of the five keep it near a minute on 2 CPU cores
    small = {"DATA": str(data), "SUBSET": None, "EPOCHS": 1, "N_TRIALS": 2, "SEEDS": 2, "ARCHS": archs,
             "STORAGE": "sqlite:///storage/notebook.db", "PUBLISHED": PUBLISHED}
    assert tuple(small) == PARAMETERS
    # section 0 reads the committed results, relative to the repository: run from a copy's root (tmp_path), the
    # notebook finds them in the folder it runs in (the test above runs it from examples/, one folder below)
    published = tmp_path / PUBLISHED
    published.parent.mkdir(parents=True)
    for path in (REPO / PUBLISHED).parent.glob("compare-*/compare.csv"):
        (published.parent / path.parent.name).mkdir()
        shutil.copyfile(path, published.parent / path.parent.name / path.name)
    shutil.copyfile(REPO / PUBLISHED, published)
    copied = sha256(published)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters_cell(nb).source = "\n".join(f"{name} = {value!r}" for name, value in small.items())
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    for cell in nb.cells:  # start from a clean copy: every output checked below comes from this run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None

    kernel_environment(monkeypatch)  # the kernel runs in tmp_path
    client = NotebookClient(nb, kernel_name="python3", timeout=900, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (the cell and its traceback) if any cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every code cell ran"
    assert not [o for c in code for o in c.outputs if o["output_type"] == "error"]
    executable, module = text_of(nb.cells[0]).split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(module).resolve() == Path(cifar_tune.__file__).resolve()

    check_published_section(nb, published)  # the committed results, whatever the live run's size
    assert sha256(published) == copied

    labels = [ARCH_LABELS[a] for a in archs]
    table = text_of(cell_running(nb, "baseline.table"))  # the seed's fixed-baseline table
    assert all(m in table for m in METRICS) and all(label in table for label in labels)
    assert len(figures_in(cell_running(nb, "baseline.figures()"))) == 2  # metric bars, learning curves

    summary = text_of(cell_running(nb, "pd.DataFrame([summary("))
    assert all(a in summary for a in archs) and "best val_acc" in summary
    assert len(figures_in(cell_running(nb, "plot_optimization_history(study)"))) == len(archs) + 1

    compared = text_of(cell_running(nb, "comparison.display"))  # the comparison table with its intervals
    assert COMPARE_DIFF in compared and "±" in compared and "[" in compared and "Verdict" in compared
    assert all(label in compared for label in labels)
    assert "Accuracy low" in text_of(cell_running(nb, '"Accuracy low"'))
    figures = figures_in(cell_running(nb, "comparison.figures()"))
    assert len(figures) == 2 and all(f["data"] for f in figures)  # bars with error bars, confusion matrices

    # the bars are widgets (issue 30, item 3: with ipywidgets, which the `notebook` extra and the `test` extra
    # bring, tqdm.auto draws them; without it tqdm warned "IProgress not found" and drew text)
    outputs = [o for c in code for o in c.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if "IProgress not found" in o.get("text", "")]

    loaded = text_of(cell_running(nb, "ct.load(STORAGE)"))
    assert "studies: " + str(dict.fromkeys(archs, 2)) in loaded and "cifar10-cnn" in loaded
    assert (tmp_path / "storage" / "notebook.db").is_file()
    assert not (REPO / "examples" / "storage").exists()
    json.dumps(nb)  # the executed notebook is plain JSON (what nbformat.write would save)
