"""The seed notebook's fixed comparison: each architecture at its seed config, one run, the macro-metric table.

``run`` trains every requested architecture with the seed's config (Adam 1e-3, batch 32, 10 epochs unless
told otherwise), evaluates it on the test set and writes ``metrics.csv``, ``metrics.md``, ``history.csv`` and a
self-contained ``report.html`` (learning curves, metric bars) into one output folder.

The ``baseline`` command's library (named ``seed_baseline``: ``cifar_tune.baseline`` is the Python API's
function, and a submodule of that name would replace it on the package once imported).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import keras
import pandas as pd

from cifar_tune import engines, runtime
from cifar_tune.data import cifar10 as data
from cifar_tune.errors import UserError
from cifar_tune.models import architectures, metrics
from cifar_tune.progress import epoch_callback, info
from cifar_tune.results import BaselineResult
from cifar_tune.studies import validate
from cifar_tune.views import figures as report

PROTOCOLS = {
    "seed": "seed (as the notebook did: train on all training images, validation = the test set, which the "
            "final metrics also use)",
    "holdout": "holdout (validation = a stratified, seeded split carved from the training images; the test set "
               "is untouched until the final metrics)",
}
TABLE_COLUMNS = ("Model", *metrics.COLUMNS)
KEPT = "kept-runs.json"  # in the output folder: the architectures an interrupted baseline finished (see run)


def protocol_split(ds: data.Dataset, protocol: str, val_size: int | None = None, seed: int = 0) -> data.Split:
    """The training/validation arrays of ``protocol`` (``seed``: validate on test; ``holdout``: split of train)."""
    if protocol == "seed":
        return data.test_as_validation(ds)
    if protocol == "holdout":
        return data.split_validation(ds, val_size, seed)
    raise UserError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def load_data(source: str | None, subset: int | None, *, protocol: str = "seed", val_size: int | None = None,
              seed: int = 0) -> data.Dataset:
    """The checks the ``baseline`` command makes before it trains (a split only for ``holdout``, one that fits
    the subset), then the data (``data.load_for_run``). Raises ``UserError`` (``DataError`` for the data)."""
    validate.check_choice("protocol", protocol, PROTOCOLS)
    if val_size is not None and protocol != "holdout":
        raise UserError("--val-size applies to --protocol holdout (the seed protocol validates on the test set)")
    validate.check_val_size(val_size, subset, "--val-size", "--subset")
    return data.load_for_run(source, subset, seed)


def run(ds: data.Dataset, archs: list[str], *, epochs: int = 10, batch_size: int = 32, protocol: str = "seed",
        val_size: int | None = None, out_dir: str | Path | None = None, seed: int = 0, verbose: int = 0,
        engine: str = "auto", precision: str = "float32", progress: dict | None = None) -> BaselineResult:
    """Train each arch at its seed config, evaluate on test; write the table and report; return them (the table,
    the per-epoch histories, the folder: see ``results.BaselineResult``). Raises ``UserError`` before anything is
    written for a bad argument.

    Each finished architecture is also kept in ``kept-runs.json`` in the output folder, under what determines
    it (epochs, batch size, protocol, split, seed, data, engine, precision): the same command with ``--out``
    that folder, after Ctrl-C or SIGTERM, reuses them and trains the rest; the file goes once the outputs are
    written. ``progress`` (if given) learns the folder (``out``) and the architectures finished (``done``)."""
    validate.check_args(archs=archs, epochs=epochs, batch_size=batch_size, val_size=val_size, seed=seed)  # as the CLI
    validate.check_choice("engine", engine, engines.ENGINES)
    validate.check_choice("precision", precision, engines.PRECISIONS)
    specs = [architectures.get(a) for a in archs]  # unknown keys fail here, before anything is written
    if not specs:
        raise UserError("no architectures given")
    split = protocol_split(ds, protocol, val_size, seed)
    out = report.make_out_dir(out_dir, "baseline")

    fingerprint = ds.fingerprint()
    info(engines.describe(engine, precision))
    info(f"Protocol: {PROTOCOLS[protocol]}")
    info(f"Data: {ds.source} [{fingerprint}]: train {len(split.y_train):,}, validation "
                  f"{len(split.y_val):,}, test {len(ds.y_test):,}")
    rows, histories, runs = [], {}, []
    progress = {} if progress is None else progress
    progress.update(out=out, done=[])
    ledger = {"key": {"epochs": epochs, "batch_size": batch_size, "protocol": protocol, "val": len(split.y_val),
                      "seed": seed, "data": fingerprint, "engine": engines.resolve_engine(engine),
                      "precision": precision}, "archs": {}}
    kept = _read_kept(out / KEPT, ledger["key"])
    # Ctrl-C / SIGTERM (the CLI's run_stoppable) only record themselves in here: training stops at the next batch,
    # and a finished architecture is kept before the command stops.
    with runtime.signals_deferred():
        for spec in specs:
            info(f"\n== {spec.label} ({spec.key}): {epochs} epochs, batch {batch_size}")
            if spec.key in kept:
                row, history, run_ = kept[spec.key]["row"], kept[spec.key]["history"], kept[spec.key]["run"]
                note = ", kept from the interrupted baseline"
            else:
                row, history, run_ = _train_one(spec, ds, split, epochs=epochs, batch_size=batch_size, seed=seed,
                                                verbose=verbose, engine=engine, precision=precision)
                note = ""
            ledger["archs"][spec.key] = {"row": row, "history": history, "run": run_}
            _write_kept(out / KEPT, ledger)
            progress["done"].append(spec.key)
            rows.append(row)
            histories[spec.label] = history
            runs.append(run_)
            info(f"[{spec.key}] test accuracy {row['Accuracy']:.4f}, macro F1 {row['F1 Score']:.4f} "
                          f"({run_['seconds']:.0f}s training{note})")
            runtime.raise_if_stopping()  # a signal during the test: stop now, this architecture is kept
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    _write_outputs(table, histories, runs, out, ds=ds, split=split, protocol=protocol, fingerprint=fingerprint,
                   epochs=epochs, batch_size=batch_size, seed=seed, precision=precision)
    return BaselineResult(table=table, histories=histories, out=out)


def _train_one(spec, ds: data.Dataset, split: data.Split, *, epochs: int, batch_size: int, seed: int, verbose: int,
               engine: str, precision: str) -> tuple[dict, dict, dict]:
    """Train one architecture at its seed config and test it: (its table row, its history, what the run was)."""
    # An Epoch event per epoch (the CLI prints a line for each unless verbose: then Keras's progress bar, which
    # ends each epoch with metrics, says it).
    callbacks = [epoch_callback(spec.key, epochs), runtime.stop_callback()]
    result = engines.train(spec.key, {"batch_size": batch_size}, split.x_train, split.y_train, split.x_val,
                           split.y_val, epochs=epochs, seed=seed, callbacks=callbacks, verbose=verbose,
                           engine=engine, precision=precision)
    y_pred = engines.predict_classes(result.model, ds.x_test)
    row = {"Model": spec.label, **metrics.macro_row(ds.y_test, y_pred)}
    history = {k: [float(v) for v in vs] for k, vs in result.history.items()}
    run_ = {"key": spec.key, "label": spec.label, "params": result.model.count_params(),
            "seconds": result.seconds, "engine": result.engine, "epochs_run": result.epochs_run}
    del result
    keras.backend.clear_session()
    return row, history, run_


def _write_outputs(table: pd.DataFrame, histories: dict, runs: list[dict], out: Path, *, ds: data.Dataset,
                   split: data.Split, protocol: str, fingerprint: str, epochs: int, batch_size: int, seed: int,
                   precision: str) -> None:
    """metrics.csv, metrics.md, history.csv and report.html into ``out``; then the ledger goes."""
    settings = {"Protocol": PROTOCOLS[protocol], "Data": f"{ds.source} (fingerprint {fingerprint})",
                "Images": f"train {len(split.y_train):,} / validation {len(split.y_val):,} / test {len(ds.y_test):,}",
                "Epochs": epochs, "Batch size": batch_size, "Seed": seed,
                "Engine / precision": f"{runs[0]['engine']} / {precision}", **_machine()}
    try:
        report.write_tables(table, out)
        _history_frame(histories, runs).to_csv(out / "history.csv", index=False)
        write_report(table, histories, runs, settings, out / "report.html")
    except OSError as e:  # a full disk or a share gone: a write says neither the errno's file nor the folder
        info(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))  # the results, still
        raise OSError(e.errno, e.strerror, str(e.filename or out)) from None
    (out / KEPT).unlink(missing_ok=True)  # done: the same command trains afresh


def _read_kept(path: Path, key: dict) -> dict:
    """The architectures an interrupted baseline kept in ``path`` under the same ``key`` (else none)."""
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return ledger.get("archs", {}) if isinstance(ledger, dict) and ledger.get("key") == key else {}


def _write_kept(path: Path, ledger: dict) -> None:
    """Rewrite the ledger whole (a new file renamed over the old: never half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ledger), encoding="utf-8")
    os.replace(tmp, path)


def resume_command(archs: list[str], *, epochs: int, batch_size: int, protocol: str, val_size: int | None,
                   out: Path, seed: int, source: str | None, subset: int | None, engine: str,
                   precision: str) -> str:
    """The ``baseline`` command that continues an interrupted one in its output folder."""
    return runtime.command_line(
        ["cifar-tune", "baseline", "--archs", ",".join(archs), "--epochs", str(epochs), "--batch-size",
         str(batch_size), "--protocol", protocol, "--seed", str(seed), "--out", str(out)],
        [("--val-size", val_size), ("--data", source), ("--subset", subset),
         ("--engine", None if engine == "auto" else engine),
         ("--precision", None if precision == "float32" else precision)])


def _history_frame(histories: dict[str, dict], runs: list[dict]) -> pd.DataFrame:
    frames = []
    for r in runs:
        h = pd.DataFrame(histories[r["label"]])
        h.insert(0, "epoch", range(1, len(h) + 1))
        h.insert(0, "arch", r["key"])
        frames.append(h)
    return pd.concat(frames, ignore_index=True)


def _machine() -> dict[str, str]:
    return {"Machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, computing on "
                       f"{engines.device_name()}",
            "Software": f"Keras {keras.__version__} ({keras.backend.backend()} backend), Python "
                        f"{platform.python_version()}"}


def write_report(table: pd.DataFrame, histories: dict[str, dict], runs: list[dict], settings: dict,
                 path: Path) -> Path:
    """The baseline's self-contained HTML report: settings, the table, metric bars and learning curves."""
    timing = pd.DataFrame([{"Model": r["label"], "Key": r["key"], "Parameters": f"{r['params']:,}",
                            "Epochs": r["epochs_run"], "Training seconds": f"{r['seconds']:.1f}"} for r in runs])
    intro = (report.facts_html(settings) + "<h2>Test metrics (macro averages, scikit-learn)</h2>"
             + report.table_html(table) + "<h2>Runs</h2>" + timing.to_html(index=False, border=0))
    figures = [("Test metrics per model", report.metric_bars_figure(table)),
               ("Learning curves (train vs validation)", report.learning_curves_figure(histories))]
    return report.write_html(figures, path, title="cifar-tune: the seed's baseline comparison", intro_html=intro)
