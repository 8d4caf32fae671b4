"""`cifar-tune archs` and `cifar-tune baseline` end to end on tiny data, and every bad input ending in one line on
stderr with exit status 2 (in-process, through `python -m cifar_tune`, and through the console script)."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cifar_tune import cli
from tests.helpers.data_files import write_batches_dir, write_tarball
from tests.helpers.synthetic import synthetic_cifar

COLUMNS = ["Model", "Accuracy", "Precision", "Recall", "F1 Score"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, expected: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cifar-tune") and "error:" in lines[0], err
    assert expected in lines[0], err
    assert "Traceback" not in err


def check_report_html(path: Path, labels: list[str]) -> None:
    html = path.read_text(encoding="utf-8")
    assert len(html) > 1_000_000  # plotly.js itself is inside
    assert html.count("plotly.js v") == 1  # embedded once, at the first figure
    assert re.findall(r"<script[^>]*\bsrc\s*=", html) == []  # no external scripts: opens offline
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']https?:", html)
    assert html.count("Plotly.newPlot(") == 2  # metric bars and learning curves
    for label in labels:  # subplot titles (plotly writes the dash as \u2014 in its JSON)
        assert re.search(rf"{label} (—|\\u2014) accuracy", html) and re.search(rf"{label} (—|\\u2014) loss", html)


# --- archs ---------------------------------------------------------------------------------------------------


def test_archs_lists_key_label_and_parameter_count(capsys):
    status, out, _ = run_cli(capsys, "archs")
    assert status == 0
    rows = {line.split()[0]: line for line in out.strip().splitlines()[1:]}
    assert list(rows) == ["mlp_bn", "mlp_l2", "cnn", "cnn_da", "resnet"]
    for key, label, params in (("mlp_bn", "MLP with BatchNorm", "1,710,346"), ("mlp_l2", "MLP with L2", "1,578,506"),
                               ("cnn", "Simple CNN", "167,562"), ("cnn_da", "CNN with DA and Dropout", "315,722"),
                               ("resnet", "ResNet", "437,674")):
        assert label in rows[key] and rows[key].rstrip().endswith(params)


# --- baseline end to end -------------------------------------------------------------------------------------


def test_baseline_seed_protocol_end_to_end(capsys, tiny_npz, tmp_path):
    out_dir = tmp_path / "out"
    status, out, err = run_cli(capsys, "baseline", "--archs", "cnn,mlp_l2", "--epochs", "2", "--data", tiny_npz,
                               "--out", out_dir)
    assert status == 0, err
    assert "Protocol: seed (as the notebook did" in out
    assert "train 300, validation 100, test 100" in out  # validation = the test set
    for tag in ("cnn", "mlp_l2"):
        assert len(re.findall(rf"^\[{tag}\] epoch \d/2 loss [\d.]+ acc [\d.]+ val_loss [\d.]+ val_acc [\d.]+",
                              out, re.M)) == 2
    assert re.search(r"Model\s+Accuracy\s+Precision\s+Recall\s+F1 Score", out)
    assert f"Wrote {out_dir}/metrics.csv" in out

    table = pd.read_csv(out_dir / "metrics.csv")
    assert list(table.columns) == COLUMNS
    assert list(table["Model"]) == ["Simple CNN", "MLP with L2"]
    assert table[COLUMNS[1:]].apply(lambda c: c.between(0, 1)).all().all()
    assert table.loc[0, "Accuracy"] >= 0.5  # the stripes are learnable: far above chance (0.1)
    md = (out_dir / "metrics.md").read_text().splitlines()
    assert [c.strip() for c in md[0].strip("|").split("|")] == COLUMNS
    assert md[2].startswith("| Simple CNN") and len(md) == 4
    history = pd.read_csv(out_dir / "history.csv")
    assert len(history) == 4 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    check_report_html(out_dir / "report.html", ["Simple CNN", "MLP with L2"])


def test_baseline_holdout_from_the_environment_into_a_new_report_folder(capsys, tiny_npz, monkeypatch):
    monkeypatch.setenv("CIFAR_TUNE_DATA", str(tiny_npz))
    status, out, err = run_cli(capsys, "baseline", "--archs", "mlp_bn,cnn", "--epochs", "2", "--protocol",
                               "holdout", "--val-size", "60", "--subset", "200", "--verbose")
    assert status == 0, err
    assert "Protocol: holdout" in out
    assert "train 140, validation 60, test 67" in out  # subset 200 of 300: test scaled alike (100 * 200/300)
    assert "Epoch 2/2" in out and "val_accuracy: " in out  # Keras's own progress bar instead of our lines
    assert "[cnn] epoch" not in out
    folders = list(Path("storage/reports").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("baseline-")
    assert sorted(p.name for p in folders[0].iterdir()) == ["history.csv", "metrics.csv", "metrics.md",
                                                           "report.html"]
    table = pd.read_csv(folders[0] / "metrics.csv")
    assert list(table.columns) == COLUMNS and list(table["Model"]) == ["MLP with BatchNorm", "Simple CNN"]
    check_report_html(folders[0] / "report.html", ["MLP with BatchNorm", "Simple CNN"])


# --- bad input: one line, status 2, nothing written ----------------------------------------------------------


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _npz(tmp_path: Path, name: str, **arrays) -> Path:
    base = dict(zip(("x_train", "y_train", "x_test", "y_test"), synthetic_cifar(), strict=True))
    np.savez(tmp_path / name, **{**base, **arrays})
    return tmp_path / name


def _hostile_dir(tmp_path: Path) -> Path:
    d = write_batches_dir(tmp_path / "evil")
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": _Hostile(tmp_path / "pwned"), b"labels": [1]}))
    return tmp_path / "evil"


def _fake_tarball(tmp_path: Path) -> Path:
    write_tarball(tmp_path / "cifar-10-python.tar.gz", write_batches_dir(tmp_path / "b"))
    return tmp_path / "cifar-10-python.tar.gz"


def _garbage(tmp_path: Path) -> Path:
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated zip")
    return tmp_path / "broken.npz"


BAD_INPUTS = {
    "unknown arch": (lambda t: ["--archs", "cnn,vgg"], "unknown architecture 'vgg'"),
    "missing data path": (lambda t: ["--data", t / "missing.npz"], "data path not found"),
    "unreadable data file": (lambda t: ["--data", _garbage(t)], "cannot read"),
    "wrong shapes": (lambda t: ["--data", _npz(t, "s.npz", x_train=np.zeros((300, 32, 32), np.uint8))],
                     "x_train has shape (300, 32, 32), expected (N, 32, 32, 3)"),
    "wrong dtype": (lambda t: ["--data", _npz(t, "d.npz", x_test=np.zeros((100, 32, 32, 3), np.float32))],
                    "x_test has dtype float32"),
    "labels out of range": (lambda t: ["--data", _npz(t, "l.npz", y_train=np.arange(300) % 10 + 1)],
                            "y_train has labels in 1..10, expected 0..9"),
    "not the CIFAR-10 tarball": (lambda t: ["--data", _fake_tarball(t)], "is not the official cifar-10-python"),
    "hostile pickle": (lambda t: ["--data", _hostile_dir(t)], "refusing to unpickle posix.system"),
    "subset too small": (lambda t: ["--subset", "5"], "--subset: must be an integer in 20..10000000"),
    "holdout larger than train": (lambda t: ["--protocol", "holdout", "--val-size", "5000"],
                                  "validation size 5000 does not fit 300"),
    "zero epochs": (lambda t: ["--epochs", "0"], "argument --epochs: must be an integer in 1..10000, got '0'"),
    "unknown protocol": (lambda t: ["--protocol", "notebook"], "invalid choice: 'notebook'"),
    "output is a file": (lambda t: ["--out", t / "tiny.npz"], "exists and is not a folder"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_status_2_and_writes_nothing(capsys, tmp_path, tiny_npz, case):
    make_args, expected = BAD_INPUTS[case]
    args = make_args(tmp_path)
    data_args = [] if "--data" in args else ["--data", tiny_npz]
    before = sorted(tmp_path.rglob("*"))
    status, out, err = run_cli(capsys, "baseline", "--epochs", "1", *data_args, *args)
    assert_one_line_error(status, err, expected)
    assert not (tmp_path / "pwned").exists()
    assert sorted(tmp_path.rglob("*")) == before  # no storage/, no report folder, nothing else
    assert "epoch" not in out  # nothing was trained


def test_missing_path_from_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUNE_DATA", str(tmp_path / "nowhere"))
    status, _, err = run_cli(capsys, "baseline", "--archs", "cnn")
    assert_one_line_error(status, err, f"data path not found: {tmp_path / 'nowhere'}")


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CIFAR_TUNE_DATA", "CIFAR_TUNE_NATIVE_LOGS")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command must keep TensorFlow quiet by itself
    return env


def test_python_m_refuses_a_hostile_pickle_in_one_line_and_runs_nothing(tmp_path):
    evil = _hostile_dir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "cifar_tune", "baseline", "--archs", "cnn", "--data", str(evil)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_subprocess_env(),
                          timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, "refusing to unpickle posix.system")
    assert proc.stdout == ""
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "storage").exists()


def test_console_script_reports_an_unknown_arch_in_one_line(tmp_path):
    script = Path(sys.executable).parent / "cifar-tune"
    script = str(script) if script.exists() else shutil.which("cifar-tune")
    assert script, "the cifar-tune console script is not installed beside this Python"
    proc = subprocess.run([script, "baseline", "--archs", "cnn,resnet50"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=_subprocess_env(), timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, "unknown architecture 'resnet50'")
    assert proc.stdout == ""
