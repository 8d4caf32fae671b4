"""What a new user sees in the first hour at the terminal: a typo is refused (never abbreviated into another option),
every error speaks in one voice on stderr, every option says what it does, counts agree in number, outputs of
different storages do not overwrite each other, and the dashboard prints one line."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_tune import cli
from cifar_tune.cli import commands


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def parsers() -> dict[str, argparse.ArgumentParser]:
    """``cifar-tune`` and each subcommand's parser, by command."""
    top = cli.build_parser()
    found = {"cifar-tune": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


@pytest.mark.parametrize("argv, meant", [
    (["optimize", "--arch", "cnn", "--trials", "5"], "--n-trials"),  # not --trials-per-process
    (["optimize", "--arch", "cnn", "--trials=5"], "--n-trials"),
    (["optimize", "--arch", "cnn", "--epoch", "2"], "--epochs"),
    (["run", "--archs", "cnn", "--seed", "1", "--trial", "3"], "--n-trials"),
    (["compare", "--seed", "2"], "--seeds"),  # compare has --seeds only
    (["studies", "--stor", "sqlite:///x.db"], "--storage"),
    (["baseline", "--batch", "64"], "--batch-size"),
])
def test_an_abbreviated_or_misspelt_option_is_refused_with_the_closest_real_one(tiny_npz, argv, meant):
    code, out, err = run_cli([*argv, "--data", str(tiny_npz)] if argv[0] in ("optimize", "run") else argv)
    typed = next(a for a in argv if a.startswith("--") and a.split("=")[0] not in parsers()[argv[0]]._option_string_actions)
    assert code == 2 and out == ""
    assert err == f"cifar-tune: error: unknown option {typed.split('=')[0]} (did you mean {meant}?)\n"
    assert not Path("storage").exists()  # no study started


def test_no_parser_takes_abbreviations():
    for name, parser in parsers().items():
        assert parser.allow_abbrev is False, name


def test_every_usage_error_speaks_as_cifar_tune(tiny_npz):
    for argv in (["optimize", "--arch", "nope"], ["optimize", "--epochs", "0", "--arch", "cnn"], ["studies", "x"],
                 ["compare", "--seeds", "many"], ["nope"], [], ["optimize", "--arch", "cnn", "--zzz"]):
        code, out, err = run_cli(argv)
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, err)
        assert err.startswith("cifar-tune: error: "), (argv, err)


def test_a_typo_is_refused_in_well_under_a_second_of_its_own():
    """The refusal of a mistyped option in a fresh process: parsing precedes every heavy import."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cifar_tune", "optimize", "--arch", "cnn", "--trials", "5"],
                          capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - start
    assert proc.returncode == 2 and proc.stderr.startswith("cifar-tune: error: unknown option --trials")
    assert "keras" not in proc.stderr.lower()
    print(f"\n[typo refused in {took:.2f} s]")


def test_every_option_and_command_has_help_text():
    missing = []
    for name, parser in parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {c.dest}" for c in action._choices_actions if not c.help]
            elif action.option_strings and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings)}")
    assert missing == [], "options without help text: " + ", ".join(missing)
