"""Waiting for a study's trials to reach given states, read straight from its SQLite file (as another process
sees them), for tests that signal a running command at the right moment; and what several processes sharing a
study must not do (draw one configuration twice)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState


def wait_for_states(db: Path, want: Callable[[list[str]], bool], timeout: float = 240) -> list[str]:
    """Poll ``db`` every second until ``want(states)`` holds for the trials' states in number order (e.g.
    ``["COMPLETE", "RUNNING"]``); return them. Fails the test after ``timeout`` seconds."""
    deadline, states = time.time() + timeout, []
    while time.time() < deadline:
        time.sleep(1)
        if Path(db).exists():
            try:
                with sqlite3.connect(db) as con:
                    states = [s for (s,) in con.execute("select state from trials order by number")]
            except sqlite3.OperationalError:  # the file exists, its tables not yet (or it is locked a moment)
                continue
            if want(states):
                return states
    pytest.fail(f"the trials never reached the awaited states (last seen: {states})")


def assert_no_duplicate_samples(trials) -> None:
    """No two trials with equal parameters, except a retry and the dead worker's trial it replaces."""
    retries = {t.number: t.user_attrs["retry_of"] for t in trials if t.user_attrs.get("retry_of") is not None}
    seen: dict[str, int] = {}
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        key = repr(sorted(t.params.items()))
        if key in seen:
            a, b = seen[key], t.number
            assert retries.get(b) == a or retries.get(a) == b, f"trials {a} and {b} drew the same sample {key}"
        seen[key] = t.number
