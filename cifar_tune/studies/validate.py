"""One set of checks for every value a user gives, wherever it comes from: a command-line flag (``cli/commands.py``'s
argparse types), a preset file (``presets.py``), the settings a worker reads as JSON, or a call of the Python
API (``cifar_tune.api``: ``presets.make_settings``, ``seed_baseline.run``, ``comparison.compare_studies``).
Each check raises ``InvalidValue`` (a ``UserError``) whose message names the value and what it may be; ``rule``
is the same message without the name, for argparse, which names the flag itself.

``RANGES`` is what each numeric setting may be, as the settings model (``settings.py``) declares it. Upper bounds
are generous but finite, so that a typo (an extra digit or twenty) is refused at the door instead of overflowing,
allocating or running for ever: a compare of more than 100 seeds or a batch larger than any model accepts
(``spaces.LIMITS``) is a mistake.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from cifar_tune.choices import ARCH_KEYS
from cifar_tune.errors import InvalidValue
from cifar_tune.studies.settings import FIELD_NAMES, SETTINGS

# What each numeric setting may be: (low, high), both inclusive (declared with each setting, settings.py).
RANGES = {s.name: s.range for s in SETTINGS.values() if s.range is not None}
FLOATS = {s.name for s in SETTINGS.values() if s.type is float}  # every other range holds integers only
MIN_TRAIN_LEFT = 10  # a validation split must leave at least one training image per class (data.NUM_CLASSES)


def label(name: str) -> str:
    """How a setting is named in messages: its flag's spelling (``val_size`` -> ``val-size``)."""
    return name.replace("_", "-")


def show_range(name: str) -> str:
    low, high = RANGES[name]
    return f"{low:g}..{high:g}" if name in FLOATS else f"{low}..{high}"


def check_number(name: str, value, shown: str | None = None):
    """``value`` if it is a number (an integer, for every setting not in FLOATS) within ``RANGES[name]``."""
    low, high = RANGES[name]
    is_float = name in FLOATS
    kinds = (int, float) if is_float else (int,)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and (not is_float or math.isfinite(value))
    if not ok or not low <= value <= high:
        what = "a number" if is_float else "an integer"
        raise InvalidValue(shown or label(name), f"must be {what} in {show_range(name)}, got {value!r}")
    return value


def check_optional(name: str, value, shown: str | None = None):
    """None, or ``check_number``."""
    return None if value is None else check_number(name, value, shown)


def parse_number(name: str, text: str):
    """A command-line string as the number ``RANGES[name]`` holds, checked (huge or malformed: InvalidValue)."""
    is_float = name in FLOATS
    try:
        value = float(text) if is_float else int(text.strip())
    except (ValueError, OverflowError):
        what = "a number" if is_float else "an integer"
        raise InvalidValue(label(name), f"must be {what} in {show_range(name)}, got {text!r}") from None
    try:
        return check_number(name, value)
    except InvalidValue as e:  # show what was typed, not its parsed form
        raise InvalidValue(label(name), e.rule.rsplit(", got ", 1)[0] + f", got {text!r}") from None


def check_choice(name: str, value, choices: Iterable, shown: str | None = None):
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise InvalidValue(shown or label(name), f"must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_nonempty(name: str, value, shown: str | None = None) -> str:
    """``value`` if it is a string with something in it besides white space."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(shown or label(name), f"must not be empty, got {value!r}")
    return value


def check_setting(name: str, value, shown: str | None = None):
    """``value`` if it is what the setting ``name`` may be (``settings.SETTINGS``): one of its choices, a number in
    its range, a non-empty string, a non-empty list of distinct architectures (as a list); a value of a flag
    without value or of a folder is not checked here. Raises ``InvalidValue`` naming ``shown`` (default: the
    setting's flag)."""
    setting = SETTINGS[name]
    if setting.choices is not None:
        return check_choice(name, value, setting.choices, shown)
    if setting.range is not None:
        return check_number(name, value, shown)
    if setting.type is list:
        return check_unique_list(name, value, ARCH_KEYS, shown)
    if setting.type is str:
        return check_nonempty(name, value, shown)
    return value


def check_record(record) -> None:
    """The checks of one settings record (a frozen dataclass: ``OptimizeSettings``, ``BaselineSettings``,
    ``CompareSettings``), field by field as ``check_setting``; None passes where the field's type allows it
    (``int | None``). A list of architectures is stored as a tuple. The checks across fields (a split that fits
    its subset, ...) are the record's own. Raises ``InvalidValue`` naming the field."""
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None and "None" in str(f.type):
            continue
        checked = check_setting(FIELD_NAMES.get(f.name, f.name), value, label(f.name))
        if isinstance(checked, list):
            object.__setattr__(record, f.name, tuple(checked))  # frozen otherwise


def check_unique_list(name: str, values, allowed: Iterable[str], shown: str | None = None,
                      item: str = "architecture") -> list[str]:
    """``values`` as a list if it is a non-empty list of distinct members of ``allowed`` (each an ``item``)."""
    allowed = tuple(allowed)
    shown = shown or label(name)
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        raise InvalidValue(shown, f"must be a non-empty list of {', '.join(allowed)}, got {values!r}")
    seen = set()
    for v in values:
        if v not in allowed:
            raise InvalidValue(shown, f"unknown {item} {v!r}; choose from {', '.join(allowed)}")
        if v in seen:
            raise InvalidValue(shown, f"names {v!r} twice; give each once")
        seen.add(v)
    return list(values)


def split_list(text: str) -> list[str]:
    """A comma-separated command-line list, items stripped (empty items dropped)."""
    return [k.strip() for k in text.split(",") if k.strip()]


def check_val_size(val_size: int | None, subset: int | None, val_from: str = "val_size",
                   subset_from: str = "subset") -> None:
    """A validation split must fit the subset it is carved from, leaving one training image per class; the message
    says where each number came from (``val_from``, ``subset_from``: a flag, a preset key, an argument)."""
    if val_size is not None and subset is not None and val_size > subset - MIN_TRAIN_LEFT:
        raise InvalidValue(f"validation size {val_size:,} ({val_from})",
                           f"does not fit the subset of {subset:,} training images ({subset_from}): at most "
                           f"{subset - MIN_TRAIN_LEFT:,}")


def check_args(*, archs=None, **values) -> None:
    """The checks of one call's arguments, by name: numbers (``RANGES``) and None alike for optional ones, a list
    of distinct architectures, and non-empty strings (``storage``, ``data``, ``out_dir``) where given."""
    if archs is not None:
        check_unique_list("archs", archs, ARCH_KEYS)
    for name, value in values.items():
        if name in RANGES:
            check_optional(name, value)
        elif value is not None:
            check_nonempty(name, value)


MEDIAN_SETTINGS = ("median_startup_trials", "median_warmup_epochs")  # what acts only with the median pruner


def check_pruner(values: dict, given: Iterable[str] = (), origin=lambda key: "given") -> None:
    """Refuse pruner settings that cannot act within the study: a median pruner whose warm-up is not shorter than
    the epochs (the step it may first prune at, epoch index ``median_warmup_epochs``, is never reached), and a
    median setting given (``given``: the keys a flag, keyword or preset set) with another pruner. ``values`` holds
    ``pruner``, ``epochs`` and the median settings; ``origin(key)`` names where a value came from. Hyperband and
    successive halving have no setting of their own: their resources are the study's epochs
    (tuning.study.make_pruner). Raises ``InvalidValue``."""
    pruner, epochs, warmup = values["pruner"], values["epochs"], values["median_warmup_epochs"]
    if pruner == "median" and warmup >= epochs:
        raise InvalidValue(f"median_warmup_epochs = {warmup} ({origin('median_warmup_epochs')})",
                           f"is not shorter than epochs = {epochs} ({origin('epochs')}): the median pruner would "
                           f"never prune a trial; give a warm-up below {epochs}, more epochs, or another pruner")
    wasted = [key for key in MEDIAN_SETTINGS if key in given]
    if pruner != "median" and wasted:
        raise InvalidValue(f"{wasted[0]} = {values[wasted[0]]} ({origin(wasted[0])})",
                           f"acts only with the median pruner, and the pruner is {pruner} ({origin('pruner')}): "
                           "drop it or choose the median pruner")
