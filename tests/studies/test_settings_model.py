"""The settings model (``studies/settings.py``) is the one declaration of every command's settings: the command
line's options, the Python API's keywords and the settings records must say the same; these tests fail when one
of them drifts (a flag, keyword or field added, dropped, renamed or given another default in one place only)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

import cifar_tune as ct
from cifar_tune.choices import DEFAULT_STORAGE
from cifar_tune.cli.commands import build_parser
from cifar_tune.comparison import retrain, seed_baseline
from cifar_tune.studies import presets, settings, validate
from cifar_tune.studies.settings import COMMANDS, SETTINGS


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(command: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subparsers()[command]._actions if a.dest != "help"}


def _flags(command: str) -> list[str]:
    return [s.name for s in settings.settings_of(command) if s.flag]


def test_every_command_has_its_entry_in_the_model():
    assert set(_subparsers()) == set(COMMANDS)
    assert {name for names in COMMANDS.values() for name in names} == set(SETTINGS)  # none declared unused


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_cli_options_are_the_models_in_its_order_with_its_defaults_and_checks(command):
    options = _options(command)
    assert list(options) == _flags(command)
    for name, action in options.items():
        s = SETTINGS[name]
        assert action.option_strings == [f"--{validate.label(name)}"]
        assert action.default == settings.flag_default(s, command), name
        assert action.help == s.help_in(command), name
        assert action.required == s.required, name
        if s.choices is not None:
            assert tuple(action.choices) == s.choices, name
        if s.range is not None:  # the flag's type checks the model's range: the bounds pass, one beyond fails
            low, high = s.range
            assert action.type(str(low)) == low and action.type(str(high)) == high
            with pytest.raises(argparse.ArgumentTypeError, match="must be"):
                action.type(str(high * 2 if high else 1) if s.type is float else str(int(high) + 1))


def _keywords(function) -> dict[str, object]:
    """A function's keyword parameters and their defaults (``inspect.Parameter.empty`` where required)."""
    return {p.name: p.default for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


@pytest.mark.parametrize("command, function", [("baseline", ct.baseline), ("compare", ct.compare)])
def test_the_api_functions_take_the_commands_settings_with_their_defaults(command, function):
    keywords = _keywords(function)
    assert set(keywords) == set(COMMANDS[command])
    for name, default in keywords.items():
        assert default == SETTINGS[name].default_in(command) or (default is None and name == "archs"), name


def test_run_takes_its_settings_and_every_study_keyword_of_optimize():
    keywords = _keywords(ct.run)
    # ct.run's preset default is the preset the CLI's absent --preset means (presets.DEFAULT_PRESET)
    assert keywords == {"archs": None, "preset": presets.DEFAULT_PRESET,
                        "seeds": SETTINGS["seeds"].default, "timeout": None, "out": None}
    rest = set(COMMANDS["run"]) - set(keywords)  # through **study_keywords into presets.make_plan
    assert rest == ({*presets.KEYS, *presets.EXTRA} - set(presets.NOT_IN_A_JOB)) - {"timeout"}


def test_optimize_and_make_settings_take_every_optimize_setting():
    """``ct.optimize(**keywords)`` and ``ct.make_settings`` take ``arch``, ``preset`` and presets.make_settings's
    keywords; each setting of the model is one of them and a setting it does not know is refused."""
    assert {"arch", "preset", *presets.KEYS, *presets.EXTRA} == set(COMMANDS["optimize"])
    assert list(_keywords(ct.make_settings)) == ["arch", "preset"]
    with pytest.raises(ct.UserError, match="unknown setting 'batch_size'"):
        ct.make_settings("cnn", batch_size=64)


@pytest.mark.parametrize("record, command", [(presets.OptimizeSettings, "optimize"),
                                             (seed_baseline.BaselineSettings, "baseline"),
                                             (retrain.CompareSettings, "compare")])
def test_each_settings_record_holds_the_commands_settings(record, command):
    fields = {settings.FIELD_NAMES.get(f.name, f.name): f for f in dataclasses.fields(record)}
    assert set(fields) == set(COMMANDS[command])
    for name, f in fields.items():
        kind = SETTINGS[name].type
        assert kind in (bool, list, settings.Path) or kind.__name__ in str(f.type), (name, f.type)
        if f.default is not dataclasses.MISSING and command != "optimize":  # optimize's come from the preset
            expected = SETTINGS[name].default_in(command)
            expected = DEFAULT_STORAGE if name == "storage" else expected  # None there: the default database
            assert f.default == (tuple(expected) if isinstance(expected, list) else expected), name


def test_the_preset_tables_are_the_models():
    assert presets.BUILT_IN == {k: SETTINGS[k].default for k in settings.preset_keys()}
    assert validate.RANGES == {k: s.range for k, s in SETTINGS.items() if s.range is not None}
