"""Progress goes through cifar_tune.progress: the library prints nothing; the CLI's console renders the events as
the commands' lines; the Python API shows tqdm bars (on standard error) unless its caller installed a reporter."""

from __future__ import annotations

import logging

import cifar_tune as ct
from cifar_tune import progress
from cifar_tune.cli.console import Console

TINY = {"epochs": 2, "val_size": 100, "pruner": "none"}


def test_the_library_with_no_reporter_prints_nothing_to_stdout(tiny_npz, capfd):
    assert not progress.installed()
    study = ct.optimize(arch="mlp_l2", n_trials=1, data=str(tiny_npz), storage="sqlite:///storage/p.db", **TINY)
    assert len(study.trials) == 1
    out, err = capfd.readouterr()
    assert out == ""  # file descriptor 1 included: nothing at all
    assert "cifar10-mlp_l2" in err  # the API's tqdm bar of the trials, on standard error
    assert not progress.installed()  # the call's bars are gone with the call


def test_a_recording_reporter_receives_the_trial_and_epoch_events(tiny_npz, capfd):
    events: list = []
    with progress.reporting(events.append):
        ct.optimize(arch="mlp_l2", n_trials=2, data=str(tiny_npz), storage="sqlite:///storage/p.db", **TINY)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Message" and "engine" in events[0].text.lower()  # the engine line comes first
    assert kinds[1] == "StudyStarted" and events[1].planned == 2 and events[1].created
    assert kinds[-1] == "StudyFinished" and len(events[-1].study.trials) == 2
    per_trial = [e for e in events if isinstance(e, (progress.Epoch, progress.TrialFinished))]
    assert [(type(e).__name__, getattr(e, "tag", None), getattr(e, "epoch", None)) for e in per_trial] == [
        ("Epoch", "trial 0", 0), ("Epoch", "trial 0", 1), ("TrialFinished", None, None),
        ("Epoch", "trial 1", 0), ("Epoch", "trial 1", 1), ("TrialFinished", None, None)]
    finished = [e for e in per_trial if isinstance(e, progress.TrialFinished)]
    assert [e.trial.number for e in finished] == [0, 1] and not any(e.taken_over for e in finished)
    epochs = [e for e in per_trial if isinstance(e, progress.Epoch)]
    assert all({"loss", "val_loss"} <= set(e.logs) and e.epochs == 2 for e in epochs)
    assert capfd.readouterr().out == ""  # the reporter got it all; no bar, no line


def test_the_console_prints_progress_on_stdout_and_warnings_on_stderr(capsys):
    with progress.reporting(Console()):
        progress.info("== cnn: study")
        progress.warn("cifar-tune: skipping cnn: no study")
        progress.report(progress.Epoch("cnn", 0, 2, {"loss": 1.5, "accuracy": 0.25}, 1.25))  # no epoch lines
    with progress.reporting(Console(epoch_lines=True)):
        progress.report(progress.Epoch("cnn", 0, 2, {"loss": 1.5, "accuracy": 0.25}, 1.25))
    out, err = capsys.readouterr()
    assert out == "== cnn: study\n[cnn] epoch 1/2 loss 1.5000 acc 0.2500 val_loss n/a val_acc n/a (1.2s)\n"
    assert err == "cifar-tune: skipping cnn: no study\n"


def test_without_a_reporter_events_go_to_the_cifar_tune_logger_and_nowhere_else(caplog, capsys):
    with caplog.at_level(logging.DEBUG, logger="cifar_tune"):
        progress.info("a line")
        progress.warn("a warning")
        progress.report(progress.Epoch("cnn", 1, 3, {"loss": 0.5}, 2.0))
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("cifar_tune", logging.INFO, "a line"), ("cifar_tune", logging.WARNING, "a warning"),
        ("cifar_tune", logging.DEBUG, "[cnn] epoch 2/3 loss 0.5000 (2.0s)")]
    assert capsys.readouterr() == ("", "")  # logging unconfigured: the library is silent


def test_the_tqdm_reporter_shows_warnings_on_stderr_while_it_is_installed(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # logging unconfigured, as in a notebook (not pytest)
    with progress.reporting(progress.TqdmReporter()):
        progress.info("progress stays in the bars")
        progress.warn("a warning the user must see")
    progress.warn("after the call: silent again")
    out, err = capsys.readouterr()
    assert out == "" and "a warning the user must see" in err
    assert "progress stays" not in err and "after the call" not in err
