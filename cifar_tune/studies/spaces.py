"""Search spaces as data: ``search_spaces/<arch>.toml`` -> validated ``Space`` -> Optuna suggestions.

A space file names its architecture and, under ``[params.<name>]``, every tuned hyperparameter with its
``baseline`` (the seed's value) and either ``low``/``high`` (``type = "float"`` or ``"int"``, optional ``log`` and
``step``) or ``choices`` (``type = "categorical"``). ``optional = true`` on a float makes the value switchable
off (``off`` value, default 0): Optuna then samples ``use_<name>`` first, so a baseline of 0 (no L2, say) stays
reachable while the "on" range is searched on a log scale. ``when = { optimizer = "adamw" }`` makes a parameter
conditional (TPE's ``group`` handles such spaces): it is searched only in configs where the named, earlier
parameter has that value (or one of a list), and keeps its baseline elsewhere, which may then lie outside the
range. Hyperparameters a space leaves out keep their baseline value.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cifar_tune.choices import OPTIMIZERS, SCHEDULES
from cifar_tune.data import safe_files
from cifar_tune.errors import SpaceError
from cifar_tune.models import configs
from cifar_tune.studies import resources

KINDS = ("float", "int", "categorical")
# What a model and its training accept for each hyperparameter: (type, low, high) or a tuple of choices. A space
# whose range, choices or baseline steps outside is refused when it loads, before anything is stored.
LIMITS = {"units": (int, 1, 16384), "units1": (int, 1, 16384), "units2": (int, 1, 16384),
          "dense_units": (int, 1, 16384), "width": (float, 0.05, 8.0), "dropout": (float, 0.0, 0.95),
          "l2": (float, 0.0, 1.0), "flip": (bool, False, True), "translate": (float, 0.0, 0.5),
          "learning_rate": (float, 1e-12, math.inf), "batch_size": (int, 1, 65536), "weight_decay": (float, 0.0, 1.0),
          "optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES}
_FIELDS = {"type", "low", "high", "log", "step", "choices", "baseline", "optional", "off", "doc", "when"}


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter."""

    name: str
    kind: str
    baseline: object
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    optional: bool = False
    off: float = 0.0
    when: tuple = ()  # ((name, allowed values), ...): searched only where the config has these; else baseline

    def applies(self, config: dict) -> bool:
        """Whether this parameter is searched for ``config`` (its ``when`` conditions hold)."""
        return all(config.get(name) in allowed for name, allowed in self.when)

    @property
    def switch(self) -> str:
        """Name of the on/off parameter Optuna samples for an optional parameter."""
        return f"use_{self.name}"


@dataclass(frozen=True)
class Space:
    """A validated search space for one architecture."""

    arch: str
    params: dict[str, Param]
    path: str

    def suggest(self, trial) -> dict:
        """Sample a config from ``trial`` (an ``optuna.Trial``): the baseline overlaid with the sampled values."""
        config = configs.baseline(self.arch)
        for p in self.params.values():
            if not p.applies(config):
                continue
            if p.optional and not trial.suggest_categorical(p.switch, [False, True]):
                config[p.name] = p.off
            elif p.kind == "categorical":
                config[p.name] = trial.suggest_categorical(p.name, list(p.choices))
            elif p.kind == "int":
                config[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1),
                                                   log=p.log)
            else:
                config[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        return config

    def baseline_params(self) -> dict:
        """Optuna parameters (as ``enqueue_trial`` takes them) of the seed's baseline point."""
        out, config = {}, configs.complete(self.arch, self.baselines())
        for p in self.params.values():
            if not p.applies(config):
                continue
            if p.optional:
                on = p.baseline != p.off
                out[p.switch] = on
                if on:
                    out[p.name] = p.baseline
            else:
                out[p.name] = p.baseline
        return out

    def baselines(self) -> dict:
        """Each searched hyperparameter's baseline value."""
        return {n: p.baseline for n, p in self.params.items()}

    def config_from_params(self, params: dict) -> dict:
        """The config a finished trial trained (its ``params`` as Optuna stored them)."""
        config = configs.baseline(self.arch)
        for p in self.params.values():
            if p.optional and not params.get(p.switch, True):
                config[p.name] = p.off
            elif p.name in params:
                config[p.name] = params[p.name]
        return config

    def to_dict(self) -> dict:
        """Plain-data form (for study attributes and notes)."""
        return {"arch": self.arch, "path": self.path,
                "params": {n: {k: (dict(v) if k == "when" else v) for k, v in vars(p).items()
                               if v not in (None, (), False) or k == "baseline"}
                           for n, p in self.params.items()}}


def default_path(arch: str) -> Path:
    """The built-in space file of ``arch``."""
    return resources.path("search_spaces", f"{arch}.toml")


def load(arch: str, path: str | Path | None = None) -> Space:
    """Load and validate the space for ``arch`` from ``path`` (default: the built-in file)."""
    seed = configs.baseline(arch)  # plain data: loading a space never loads Keras
    path = Path(path) if path else default_path(arch)
    text = safe_files.read_text(path, "space file", error=SpaceError)  # no FIFO, device or huge file
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{path}: not valid TOML ({e})") from None

    def fail(key: str, msg: str):
        raise SpaceError(f"{path}: {key}: {msg}")

    extra = set(raw) - {"arch", "params", "doc"}
    if extra:
        fail(sorted(extra)[0], "unknown top-level key (expected arch, params)")
    if raw.get("arch", arch) != arch:
        fail("arch", f"this file is for {raw['arch']!r}, not {arch!r}")
    if not isinstance(raw.get("params"), dict) or not raw["params"]:
        fail("params", "missing or empty: give at least one [params.<name>] table")
    params = {}
    for name, spec in raw["params"].items():
        key = f"params.{name}"
        if name not in seed:
            fail(key, f"unknown parameter for {arch}; known: {', '.join(sorted(seed))}")
        if not isinstance(spec, dict):
            fail(key, "must be a table")
        params[name] = _param(name, spec, lambda msg, key=key: fail(key, msg))
        _within_limits(params[name], lambda msg, key=key: fail(key, msg))
        for other, _ in params[name].when:
            if other not in params or other == name:
                fail(f"{key}.when", f"{other!r} must be a parameter defined above {name!r}")
    return Space(arch, params, str(path))


def _within_limits(p: Param, fail) -> None:
    """Refuse values the model cannot take (LIMITS): a string learning rate, a negative batch size, ..."""
    limit = LIMITS.get(p.name)
    if limit is None:
        return
    values = [("", v) for v in (list(p.choices) if p.kind == "categorical" else [p.low, p.high])]
    values += [] if p.optional or p.when else [("", p.baseline)]
    values += [("off ", p.off)] if p.optional else []  # what the model gets when the switch is off
    if isinstance(limit[0], str):  # a choice among names
        bad = [v for _, v in values if v not in limit]
        if bad:
            fail(f"{bad[0]!r} is not one of {', '.join(limit)}")
        return
    kind, low, high = limit
    for what, v in values:
        if kind is bool and not isinstance(v, bool):
            fail(f"{what}must be true or false, got {v!r}")
        if kind is not bool and (isinstance(v, bool) or not isinstance(v, (int, float))
                                 or (kind is int and not float(v).is_integer())):
            fail(f"{what}must be {'an integer' if kind is int else 'a number'}, got {v!r}")
        if kind is not bool and not low <= v <= high:
            fail(f"{what}{v!r} is outside what the model accepts ({low} .. {high})")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _switch(spec: dict, kind: str, fail) -> tuple[bool, float]:
    """``optional`` (true or false; a string such as "false" would be truthy) and ``off`` (a finite number, and
    only with ``optional = true``); ``_within_limits`` then checks ``off`` against what the model accepts."""
    optional, off = spec.get("optional", False), spec.get("off", 0.0)
    if not isinstance(optional, bool):
        fail(f"optional must be true or false, got {optional!r}")
    if (optional or "off" in spec) and kind != "float":
        fail("optional and off apply to float parameters only")
    if "off" in spec and not optional:
        fail("off is the value used when an optional parameter is switched off: give it with optional = true")
    if not _is_number(off):
        fail(f"off must be a number, got {off!r}")
    return optional, off


def _param(name: str, spec: dict, fail) -> Param:
    unknown = set(spec) - _FIELDS
    if unknown:
        fail(f"unknown field {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_FIELDS))})")
    when = spec.get("when", {})
    if not isinstance(when, dict) or not all(isinstance(v, (str, int, float, bool, list)) for v in when.values()):
        fail("when must be a table of parameter = value (or list of values)")
    when = tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in when.items())
    kind = spec.get("type")
    if kind not in KINDS:
        fail(f"type must be one of {', '.join(KINDS)}, got {kind!r}")
    if "baseline" not in spec:
        fail("missing baseline (the seed's value)")
    baseline = spec["baseline"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            fail("categorical needs a non-empty list of choices")
        if baseline not in choices:
            fail(f"baseline {baseline!r} is not among the choices {choices}")
        if "optional" in spec or "off" in spec:
            fail("optional and off apply to float parameters only")
        return Param(name, kind, baseline, choices=tuple(choices), when=when)
    low, high = spec.get("low"), spec.get("high")
    if not (_is_number(low) and _is_number(high)) or low > high:
        fail(f"needs numeric low <= high, got low={low!r} high={high!r}")
    log, step = bool(spec.get("log", False)), spec.get("step")
    if not isinstance(spec.get("log", False), bool):
        fail("log must be true or false")
    if log and low <= 0:
        fail("log scale needs low > 0 (use optional = true to keep 0 reachable)")
    if step is not None and (not _is_number(step) or step <= 0 or log):
        fail("step must be a positive number and cannot be combined with log")
    if kind == "int" and not all(isinstance(v, int) for v in (low, high, step or 1)):
        fail("int parameters need integer low, high and step")
    optional, off = _switch(spec, kind, fail)
    if not _is_number(baseline):
        fail(f"baseline must be a number, got {baseline!r}")
    if kind == "int" and not isinstance(baseline, int):
        fail(f"baseline must be an integer, got {baseline!r}")
    if not (low <= baseline <= high) and not (optional and baseline == off) and not when:
        fail(f"baseline {baseline} is outside [{low}, {high}]")
    return Param(name, kind, baseline, low=low, high=high, log=log, step=step, optional=optional, off=off,
                 when=when)
